// The API's routes (Cloud Hypervisor-like, under /api/v1/) and how errors become statuses: the
// runtime's error kinds (src/errors.ts) map to HTTP statuses, and every error answer is
//   {"error": {"status", "code", "message", ...fields}}
// where code is the VFR_ERR_* code (VFR_ERR_HTTP for what the server refuses itself) and the
// message names what was wrong and the fix.
import { SysError } from '../../native/errno.js';
import {
  ApiError,
  ConflictError,
  ERR,
  HostSetupError,
  InvalidSpecError,
  KernelError,
  NestingSetupError,
  NotFoundError,
  VfrError,
} from '../errors.js';
import type { ApiHandler, ApiRequest, ApiResponse } from './server.js';

/** What serves the routes: a runtime host (runtime-api.ts), or a test double. */
export interface ApiHost {
  addDevice(body: Record<string, unknown>, req: ApiRequest): Promise<ApiResponse>;
  removeDevice(body: Record<string, unknown>): Promise<ApiResponse>;
  removal(id: string): ApiResponse;
  info(): Promise<unknown>;
  counters(): unknown;
}

export const API_PREFIX = '/api/v1/';

// A request the API refuses with `status` (400, 404, 405, 501 of its own making): one of the
// runtime's error kinds (VFR_ERR_HTTP).
export { ApiError };

/** The status for an error kind: 400 bad spec, 404 unknown, 409 taken/busy/host state, 500 kernel. */
export function statusOf(e: unknown): number {
  if (e instanceof ApiError) return e.status;
  if (e instanceof InvalidSpecError) return 400;
  if (e instanceof NotFoundError) return 404;
  if (e instanceof ConflictError || e instanceof HostSetupError) return 409;
  return 500;
}

export function errorBody(e: unknown): { error: Record<string, unknown> } {
  const status = statusOf(e);
  const err = e instanceof Error ? e : new Error(String(e));
  const out: Record<string, unknown> = {
    status,
    code:
      e instanceof ApiError
        ? e.code
        : e instanceof VfrError || e instanceof KernelError
          ? (e as { code: string }).code
          : e instanceof SysError
            ? ERR.KERNEL
            : 'VFR_ERR_INTERNAL',
    message: err.message,
  };
  if (e instanceof SysError) {
    out.errno = e.errno;
    out.errnoName = e instanceof KernelError ? e.errnoName : e.code;
    out.call = e.call;
  }
  if (e instanceof NestingSetupError && e.errnoName) out.errnoName = e.errnoName;
  if (e instanceof InvalidSpecError && e.field) out.field = e.field;
  if (e instanceof NotFoundError || e instanceof ConflictError) {
    out.resource = e.resource;
    out.id = e.id;
  }
  return { error: out };
}

/** The JSON object in a request body, or an ApiError 400 that says where it broke. */
export function jsonBody(req: ApiRequest): Record<string, unknown> {
  if (req.body.trim() === '')
    throw new ApiError(400, `${req.path}: the body is empty; send a JSON object`);
  let v: unknown;
  try {
    v = JSON.parse(req.body);
  } catch (e) {
    throw new ApiError(
      400,
      `${req.path}: the body is not JSON (${(e as Error).message}); send a JSON object like {"port":"nvme1","iommu":"ctx0"}`,
    );
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw new ApiError(
      400,
      `${req.path}: the body must be a JSON object, not ${JSON.stringify(v).slice(0, 40)}`,
    );
  return v as Record<string, unknown>;
}

type Route = (host: ApiHost, req: ApiRequest) => Promise<ApiResponse>;

const ROUTES: Record<string, { method: string; fn: Route }> = {
  'vm.add-device': { method: 'PUT', fn: (h, r) => h.addDevice(jsonBody(r), r) },
  'vm.remove-device': { method: 'PUT', fn: (h, r) => h.removeDevice(jsonBody(r)) },
  'vm.removal': {
    method: 'GET',
    fn: async (h, r) => {
      const id = r.query.get('id');
      if (!id) throw new ApiError(400, 'vm.removal: give the device as ?id=<port>');
      return h.removal(id);
    },
  },
  'vm.info': { method: 'GET', fn: async (h) => ({ status: 200, body: await h.info() }) },
  'vm.counters': { method: 'GET', fn: async (h) => ({ status: 200, body: h.counters() }) },
};

/** The handler for an ApiServer: route, call the host, turn errors into statuses. */
export function apiHandler(host: ApiHost): ApiHandler {
  return async (req) => {
    try {
      const name = req.path.startsWith(API_PREFIX) ? req.path.slice(API_PREFIX.length) : '';
      const route = Object.hasOwn(ROUTES, name) ? ROUTES[name] : undefined;
      if (!route)
        throw new ApiError(
          404,
          `no route ${req.method} ${req.path.slice(0, 100)}; routes: ${Object.entries(ROUTES)
            .map(([n, r]) => `${r.method} ${API_PREFIX}${n}`)
            .join(', ')}`,
        );
      if (req.method !== route.method)
        throw new ApiError(405, `${req.path} takes ${route.method}, not ${req.method}`);
      if (route.method === 'GET' && req.fds.length)
        throw new ApiError(
          400,
          `${req.path} takes no fds; ${req.fds.length} were attached (closed)`,
        );
      return await route.fn(host, req);
    } catch (e) {
      return { status: statusOf(e), body: errorBody(e) };
    }
  };
}
