// The API's routes (Cloud Hypervisor-like, under /api/v1/): each calls its ApiHost; an error
// answers with the status its kind carries and the body error-body.ts makes of it,
//   {"error": {"status", "code", "message", "hint"?, ...fields}}
// where code is the VFR_ERR_* code (VFR_ERR_HTTP for what the API refuses itself) and the
// message names what was wrong and the fix.
import { ApiError, type ApiRoute } from '../index.js';
import { errorBody } from './error-body.js';
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
// runtime's error kinds (VFR_ERR_HTTP). errorBody, as runtime-api.ts and hosts import it here.
export { ApiError, errorBody };

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

/** Every route but `none` (API_ROUTES, src/metrics/schema.ts, lists them for the metrics). */
const ROUTES: Record<Exclude<ApiRoute, 'none'>, { method: string; fn: Route }> = {
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

const isRoute = (name: string): name is keyof typeof ROUTES => Object.hasOwn(ROUTES, name);

/** The handler for an ApiServer: route, call the host, turn errors into statuses. */
export function apiHandler(host: ApiHost): ApiHandler {
  return async (req) => {
    const name = req.path.startsWith(API_PREFIX) ? req.path.slice(API_PREFIX.length) : '';
    const known = isRoute(name) ? name : undefined;
    return { ...(await answer(host, req, known)), route: known ?? 'none' };
  };
}

/** The answer of route `name` (undefined: no such route, 404) or of the error it threw. */
async function answer(
  host: ApiHost,
  req: ApiRequest,
  name: keyof typeof ROUTES | undefined,
): Promise<ApiResponse> {
  try {
    const route = name ? ROUTES[name] : undefined;
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
      throw new ApiError(400, `${req.path} takes no fds; ${req.fds.length} were attached (closed)`);
    return await route.fn(host, req);
  } catch (e) {
    const body = errorBody(e);
    return { status: body.error.status, body };
  }
}
