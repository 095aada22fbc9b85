// The runtime's error kinds, each with a stable `code` a caller can branch on (as undici's
// UND_ERR_*), the HTTP status the API answers it with (as fastify's createError), and the
// fields that tell one failure of a kind from another. `instanceof` works for every kind and
// for the base VfrError; so does `code`, also after an error crossed from a device worker to
// the coordinator (src/control/comlink-node.ts rebuilds the class from it). Messages stay prose
// that names what was wrong and the fix; callers never parse them (a fix added on the way up
// is also the `hint` field: withHint).
import { SysError } from '../native/errno.js';
import type { IovaRange, IovaSpan } from './dma/iova-ranges.js';

export const ERR = {
  NOT_FOUND: 'VFR_ERR_NOT_FOUND',
  CONFLICT: 'VFR_ERR_CONFLICT',
  INVALID_SPEC: 'VFR_ERR_INVALID_SPEC',
  HOST_SETUP: 'VFR_ERR_HOST_SETUP',
  KERNEL: 'VFR_ERR_KERNEL',
  WORKER_EXITED: 'VFR_ERR_WORKER_EXITED',
  RING_CLOSED: 'VFR_ERR_RING_CLOSED',
  PARTIAL_INVALIDATION: 'VFR_ERR_PARTIAL_INVALIDATION',
  NESTING_SETUP: 'VFR_ERR_NESTING_SETUP',
  DEVICE_FAILED: 'VFR_ERR_DEVICE_FAILED',
  RING_REQUEST: 'VFR_ERR_RING_REQUEST',
  GSI_ROUTING: 'VFR_ERR_GSI_ROUTING',
  BOOT: 'VFR_ERR_BOOT',
  HTTP: 'VFR_ERR_HTTP',
  DEVICE_CONFIG: 'VFR_ERR_DEVICE_CONFIG',
  IOVA_HOLE: 'VFR_ERR_IOVA_HOLE',
  OUTSIDE_ACCESS: 'VFR_ERR_OUTSIDE_ACCESS',
} as const;
export type ErrorCode = (typeof ERR)[keyof typeof ERR];

// KernelError must stay a SysError (callers and tests test for one), so it cannot extend
// VfrError: a brand on both prototypes makes `instanceof VfrError` true for it as well.
const BRAND = Symbol.for('vfio-runtime.error');

/**
 * The base of every kind; `code` is one of ERR. `statusCode` is the kind's HTTP status (static,
 * and on each instance), as fastify's createError(code, message, statusCode) gives its errors:
 * the API answers with it. `hint` is the fix a layer above added (withHint), also in the message.
 */
export abstract class VfrError extends Error {
  abstract readonly code: ErrorCode;
  static readonly statusCode: number = 500;
  declare readonly hint?: string;
  get statusCode(): number {
    return (this.constructor as typeof VfrError).statusCode;
  }
  static override [Symbol.hasInstance](x: unknown): boolean {
    if (this !== VfrError) return Function.prototype[Symbol.hasInstance].call(this, x);
    return typeof x === 'object' && x !== null && BRAND in x;
  }
}
Object.defineProperty(VfrError.prototype, BRAND, { value: true });

/** What a lookup was about: a port, an iommufd context, a PCI function, a vIOMMU, an fd, a guest memory region. */
export type Resource = 'port' | 'context' | 'pci-function' | 'viommu' | 'fd' | 'device' | 'region';

/** The thing named does not exist (no device on that port, no such context or PCI function). */
export class NotFoundError extends VfrError {
  override readonly name = 'NotFoundError';
  static override readonly statusCode: number = 404;
  readonly code = ERR.NOT_FOUND;
  constructor(
    message: string,
    readonly resource: Resource,
    readonly id: string,
  ) {
    super(message);
  }
}

/** The thing named is taken already (a port with a device, a vIOMMU name, a device in use). */
export class ConflictError extends VfrError {
  override readonly name = 'ConflictError';
  static override readonly statusCode: number = 409;
  readonly code = ERR.CONFLICT;
  constructor(
    message: string,
    readonly resource: Resource,
    readonly id: string,
  ) {
    super(message);
  }
}

/** A spec (CLI option, library argument, JSON) is malformed; `field` names the part, if known. */
export class InvalidSpecError extends VfrError {
  override readonly name = 'InvalidSpecError';
  static override readonly statusCode: number = 400;
  readonly code = ERR.INVALID_SPEC;
  readonly field: string | undefined;
  constructor(message: string, field?: string) {
    super(message);
    this.field = field;
  }
}

/**
 * The host is not set up for what was asked: a function not bound to vfio-pci, a node or kernel
 * feature missing.
 */
export class HostSetupError extends VfrError {
  override readonly name = 'HostSetupError';
  static override readonly statusCode: number = 409;
  readonly code = ERR.HOST_SETUP;
  readonly bdf: string | undefined;
  constructor(message: string, bdf?: string) {
    super(message);
    this.bdf = bdf;
  }
}

/** Where a kernel error happened, beyond the call and node SysError already names. */
export interface KernelErrorContext {
  readonly bdf?: string | undefined;
  readonly port?: string | undefined;
  readonly hint?: string;
}

/** The errno name of a SysError or KernelError (SysError.code is it; KernelError.code is VFR_ERR_KERNEL). */
export function errnoNameOf(e: unknown): string | undefined {
  if (e instanceof KernelError) return e.errnoName;
  return e instanceof SysError ? e.code : undefined;
}

/**
 * A kernel call failed, attributed to the device it was for: `errno`/`errnoName` (EBUSY ...),
 * `call`, `target` (the node), and `bdf`/`port` when known. Still a SysError.
 */
export class KernelError extends SysError {
  override readonly name: string = 'KernelError';
  override readonly code: ErrorCode = ERR.KERNEL;
  static readonly statusCode: number = 500;
  readonly errnoName: string;
  readonly bdf: string | undefined;
  readonly port: string | undefined;
  get statusCode(): number {
    return (this.constructor as typeof KernelError).statusCode;
  }
  constructor(sys: SysError, ctx: KernelErrorContext = {}) {
    super(sys.call, sys.target, sys.errno, joinHints(sys.hint, ctx.hint));
    this.errnoName = errnoNameOf(sys) ?? sys.code;
    this.bdf = ctx.bdf ?? (sys instanceof KernelError ? sys.bdf : undefined);
    this.port = ctx.port ?? (sys instanceof KernelError ? sys.port : undefined);
    // The device first, so a log line says which one; the call, node and errno stay intact.
    const who = [this.bdf, this.port !== undefined ? `port ${this.port}` : undefined].filter(
      Boolean,
    );
    if (who.length) this.message = `${who.join(', ')}: ${this.message}`;
    this.cause = sys;
  }
}
Object.defineProperty(KernelError.prototype, BRAND, { value: true });

/** IOMMU_HWPT_INVALIDATE stopped part way: the first `consumed` of `entries` took effect. */
export class PartialInvalidationError extends KernelError {
  override readonly name: string = 'PartialInvalidationError';
  override readonly code: ErrorCode = ERR.PARTIAL_INVALIDATION;
  constructor(
    sys: SysError,
    readonly consumed: number,
    readonly entries: number,
    hint: string,
  ) {
    super(sys, { hint });
  }
}

/** What a failed nesting setup had made and destroyed again. */
export interface UndoneObject {
  readonly what: string;
  readonly id: number;
}

/**
 * A VIommu or VDevice could not be made at `step`; `undone` lists what had been made and was
 * destroyed again. The kernel's errno is kept when a kernel call failed.
 */
export class NestingSetupError extends VfrError {
  override readonly name = 'NestingSetupError';
  static override readonly statusCode: number = 500;
  readonly code = ERR.NESTING_SETUP;
  readonly errno: number | undefined;
  readonly errnoName: string | undefined;
  readonly call: string | undefined;
  override readonly hint: string | undefined;
  constructor(
    message: string,
    readonly step: string,
    readonly undone: readonly UndoneObject[],
    cause?: unknown,
    hint?: string,
  ) {
    super(message, { cause });
    this.hint = hint;
    ({ errno: this.errno, errnoName: this.errnoName, call: this.call } = kernelCall(cause));
  }
}

/** A device worker exited or crashed; control calls to it fail with this instead of hanging. */
export class WorkerExitedError extends VfrError {
  override readonly name = 'WorkerExitedError';
  static override readonly statusCode: number = 503;
  readonly code = ERR.WORKER_EXITED;
  constructor(
    message: string,
    readonly worker: string,
    readonly exitCode?: number,
  ) {
    super(message);
  }
}

/** The device ring was closed (the device shut down); a producer's request did not complete. */
export class RingClosedError extends VfrError {
  override readonly name = 'RingClosedError';
  static override readonly statusCode: number = 503;
  readonly code = ERR.RING_CLOSED;
}

/** Why a supervised device was given up: restarts exhausted, a worker stuck in a kernel call, a failed restart. */
export type DeviceFailureReason = 'restarts' | 'stuck' | 'spawn' | 'unknown';

/**
 * The device has failed: its worker kept failing (more restarts than the supervisor allows in
 * its window), is stuck in a kernel call, or could not be restarted. Its requests complete at
 * once with STATUS.DEVICE_FAILED (this error from the ring's typed accessors) and its control
 * calls reject with it. The fix: remove the device and add it again (a new worker, a fresh
 * device state), after looking at why its worker failed (`reason`, the supervisor's report).
 */
export class DeviceFailedError extends VfrError {
  override readonly name = 'DeviceFailedError';
  static override readonly statusCode: number = 503;
  readonly code = ERR.DEVICE_FAILED;
  constructor(
    message: string,
    readonly device: string,
    readonly reason: DeviceFailureReason,
  ) {
    super(message);
  }
}

/**
 * A ring request completed with an error status (BAD_BAR, OUT_OF_RANGE, IO_ERROR, WORKER_DIED,
 * ...): `status` is the ring's STATUS code, `statusName` its name, `request` what was asked.
 * 502: the device behind its worker refused what was asked of it.
 */
export class RingError extends VfrError {
  override readonly name = 'RingError';
  static override readonly statusCode: number = 502;
  readonly code = ERR.RING_REQUEST;
  constructor(
    message: string,
    readonly status: number,
    readonly statusName: string,
    readonly request: string,
  ) {
    super(message);
  }
}

/**
 * The VM's GSI router could not do what was asked: KVM refused the routing table or an irqfd
 * (`errno`, `errnoName`, `call` kept), or no GSI is left.
 */
export class GsiRouterError extends VfrError {
  override readonly name = 'GsiRouterError';
  static override readonly statusCode: number = 500;
  readonly code = ERR.GSI_ROUTING;
  readonly errno: number | undefined;
  readonly errnoName: string | undefined;
  readonly call: string | undefined;
  constructor(message: string, cause?: unknown) {
    super(message, { cause });
    ({ errno: this.errno, errnoName: this.errnoName, call: this.call } = kernelCall(cause));
  }
}

/** The guest cannot be booted as given: the kernel is not a bzImage, a boot file is unreadable or too big. */
export class BootError extends VfrError {
  override readonly name = 'BootError';
  static override readonly statusCode: number = 400;
  readonly code = ERR.BOOT;
}

/**
 * A request the HTTP API refuses itself (not JSON, a missing or wrong fd, no such route, a wrong
 * method, a host that cannot hot-plug): its `status` is the answer's (400, 404, 405, 501).
 */
export class ApiError extends VfrError {
  override readonly name = 'ApiError';
  static override readonly statusCode: number = 400;
  readonly code = ERR.HTTP;
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
  override get statusCode(): number {
    return this.status;
  }
}

/**
 * The device's config space cannot be virtualized: not an endpoint (a bridge), a size other
 * than 256 or 4096 bytes, a BAR that is not a power of two, a capability list that loops. 422:
 * the request was understood, but this device cannot be assigned.
 */
export class ConfigError extends VfrError {
  override readonly name = 'ConfigError';
  static override readonly statusCode: number = 422;
  readonly code = ERR.DEVICE_CONFIG;
}

/**
 * A guest range lies entirely in a reserved IOVA hole (`hole`) of a backend that allows
 * `allowed`: nothing of it can be mapped; place the memory elsewhere. 409: the placement
 * conflicts with what the IOMMU reserves.
 */
export class IovaHoleError extends VfrError {
  override readonly name = 'IovaHoleError';
  static override readonly statusCode: number = 409;
  readonly code = ERR.IOVA_HOLE;
  constructor(
    message: string,
    readonly span: IovaSpan,
    readonly hole: IovaRange,
    readonly allowed: readonly IovaRange[],
  ) {
    super(message);
  }
}

/**
 * A device-fd access outside the window it names (src/device/access-guard.ts): request
 * validation missed it, the guard refused it. `offset` and `size` are the access's. 500: a bug.
 */
export class OutsideAccessError extends VfrError {
  override readonly name = 'OutsideAccessError';
  static override readonly statusCode: number = 500;
  readonly code = ERR.OUTSIDE_ACCESS;
  constructor(
    message: string,
    readonly offset: number,
    readonly size: number,
  ) {
    super(message);
  }
}

type AnyClass = abstract new (...a: never[]) => Error;
/** Each code's class, for rebuilding an error that crossed a thread boundary. */
export const ERROR_CLASSES: ReadonlyMap<string, AnyClass> = new Map<string, AnyClass>([
  [ERR.NOT_FOUND, NotFoundError],
  [ERR.CONFLICT, ConflictError],
  [ERR.INVALID_SPEC, InvalidSpecError],
  [ERR.HOST_SETUP, HostSetupError],
  [ERR.KERNEL, KernelError],
  [ERR.WORKER_EXITED, WorkerExitedError],
  [ERR.RING_CLOSED, RingClosedError],
  [ERR.PARTIAL_INVALIDATION, PartialInvalidationError],
  [ERR.NESTING_SETUP, NestingSetupError],
  [ERR.DEVICE_FAILED, DeviceFailedError],
  [ERR.RING_REQUEST, RingError],
  [ERR.GSI_ROUTING, GsiRouterError],
  [ERR.BOOT, BootError],
  [ERR.HTTP, ApiError],
  [ERR.DEVICE_CONFIG, ConfigError],
  [ERR.IOVA_HOLE, IovaHoleError],
  [ERR.OUTSIDE_ACCESS, OutsideAccessError],
  ['SysError', SysError],
]);

/** Two hints as one: "first; second". */
function joinHints(a: string | undefined, b: string | undefined): string | undefined {
  return a && b ? `${a}; ${b}` : a || b || undefined;
}

/** The kernel call behind `cause`, when a SysError (or KernelError) is it. */
function kernelCall(cause: unknown): {
  errno: number | undefined;
  errnoName: string | undefined;
  call: string | undefined;
} {
  const sys = cause instanceof SysError ? cause : undefined;
  return { errno: sys?.errno, errnoName: errnoNameOf(cause), call: sys?.call };
}

/**
 * A copy of `e` of the same class with the same fields, a new message, `extra` fields, and `e`
 * as its cause: a layer above adds to what went wrong without changing what kind it was.
 */
function sameKind<E extends Error>(e: E, message: string, extra: object): E {
  const out = Object.create(Object.getPrototypeOf(e) as object) as E;
  Object.assign(out, e, extra);
  const hidden = { writable: true, configurable: true, enumerable: false };
  const frames = e.stack?.indexOf('\n    at') ?? -1;
  Object.defineProperties(out, {
    message: { ...hidden, value: message },
    stack: {
      ...hidden,
      value: `${e.name}: ${message}${frames >= 0 ? e.stack!.slice(frames) : ''}`,
    },
    cause: { ...hidden, value: e },
  });
  return out;
}

/** An error with the fix added to it (withHint). */
export type HintedError = Error & { readonly hint?: string | undefined };

/**
 * The same failure with `hint` added, in its `hint` field and its message ("... (old; hint)").
 * It keeps its kind: a SysError stays a SysError (its errno name stays its code: the DMA
 * layer's callers branch on it), an error of the taxonomy stays of its class with its fields;
 * anything else becomes an Error whose cause is the original.
 */
export function withHint(e: unknown, hint: string): HintedError {
  if (e instanceof KernelError || e instanceof VfrError) {
    const old = e.hint;
    const tail = old ? ` (${old})` : '';
    const message =
      old && e.message.endsWith(tail)
        ? `${e.message.slice(0, -tail.length)} (${old}; ${hint})`
        : `${e.message} (${hint})`;
    return sameKind(e, message, { hint: joinHints(old, hint) });
  }
  if (e instanceof SysError) {
    const out = new SysError(e.call, e.target, e.errno, joinHints(e.hint, hint));
    out.cause = e;
    return out;
  }
  const err = e instanceof Error ? e : new Error(String(e));
  const out = new Error(`${err.message} (${hint})`, { cause: err });
  return Object.assign(out, { hint: joinHints((err as HintedError).hint, hint) });
}

/**
 * The same failure, its message led by `where` (the option or request it came from), of the
 * same kind and with the same fields: a caller that says where keeps what kind it was.
 */
export function withPrefix(e: unknown, where: string): Error {
  if (e instanceof Error) return sameKind(e, `${where}: ${e.message}`, {});
  return new Error(`${where}: ${String(e)}`);
}

/** The HTTP status of any error: its kind's, or 500 for an error outside the taxonomy. */
export function statusOf(e: unknown): number {
  return e instanceof VfrError ? e.statusCode : 500;
}

/**
 * At the runtime's front door: a SysError from below becomes a KernelError naming the device
 * (`bdf`, `port`); anything else (a KernelError already among them) passes through.
 */
export function attributeKernelError(e: unknown, ctx: KernelErrorContext): unknown {
  if (e instanceof KernelError) return e; // attributed already; rewrapping would lose its kind
  return e instanceof SysError ? new KernelError(e, ctx) : e;
}
