// The runtime's error kinds, each with a stable `code` a caller can branch on (as undici's
// UND_ERR_*), and the fields that tell one failure of a kind from another. `instanceof` works
// for every kind and for the base VfrError; so does `code`, also after an error crossed from a
// device worker to the coordinator (src/control/comlink-node.ts rebuilds the class from it).
// Messages stay prose that names what was wrong and the fix; callers never parse them.
import { SysError } from '../native/errno.js';

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
} as const;
export type ErrorCode = (typeof ERR)[keyof typeof ERR];

// KernelError must stay a SysError (callers and tests test for one), so it cannot extend
// VfrError: a brand on both prototypes makes `instanceof VfrError` true for it as well.
const BRAND = Symbol.for('vfio-runtime.error');

/** The base of every kind; `code` is one of ERR. */
export abstract class VfrError extends Error {
  abstract readonly code: ErrorCode;
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

/** The hint a SysError carries in its message ("CALL on TARGET: ECODE (hint)"), or ''. */
export function hintOf(e: SysError): string {
  const base = `${e.call} on ${e.target}: ${errnoNameOf(e)}`;
  const at = e.message.indexOf(base);
  const rest = at < 0 ? '' : e.message.slice(at + base.length);
  return rest.startsWith(' (') && rest.endsWith(')') ? rest.slice(2, -1) : '';
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
  readonly errnoName: string;
  readonly bdf: string | undefined;
  readonly port: string | undefined;
  constructor(sys: SysError, ctx: KernelErrorContext = {}) {
    const old = hintOf(sys);
    const hint = old && ctx.hint ? `${old}; ${ctx.hint}` : old || ctx.hint;
    super(sys.call, sys.target, sys.errno, hint);
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
  readonly code = ERR.NESTING_SETUP;
  readonly errno: number | undefined;
  readonly errnoName: string | undefined;
  readonly call: string | undefined;
  constructor(
    message: string,
    readonly step: string,
    readonly undone: readonly UndoneObject[],
    cause?: unknown,
  ) {
    super(message, { cause });
    this.errno = cause instanceof SysError ? cause.errno : undefined;
    this.errnoName = errnoNameOf(cause);
    this.call = cause instanceof SysError ? cause.call : undefined;
  }
}

/** A device worker exited or crashed; control calls to it fail with this instead of hanging. */
export class WorkerExitedError extends VfrError {
  override readonly name = 'WorkerExitedError';
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
  readonly code = ERR.DEVICE_FAILED;
  constructor(
    message: string,
    readonly device: string,
    readonly reason: DeviceFailureReason,
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
  ['SysError', SysError],
]);

/**
 * The same failure with `hint` added. A SysError stays a SysError (its errno name stays its
 * code: the DMA layer's callers branch on it) and a KernelError stays a KernelError; anything
 * else becomes an Error whose cause is the original.
 */
export function withHint(e: unknown, hint: string): Error {
  if (e instanceof KernelError) return new KernelError(e, { hint });
  if (e instanceof SysError) {
    const old = hintOf(e);
    const out = new SysError(e.call, e.target, e.errno, old ? `${old}; ${hint}` : hint);
    out.cause = e;
    return out;
  }
  const err = e instanceof Error ? e : new Error(String(e));
  return new Error(`${err.message} (${hint})`, { cause: err });
}

/**
 * At the runtime's front door: a SysError from below becomes a KernelError naming the device
 * (`bdf`, `port`); anything else (a KernelError already among them) passes through.
 */
export function attributeKernelError(e: unknown, ctx: KernelErrorContext): unknown {
  if (e instanceof KernelError) return e; // attributed already; rewrapping would lose its kind
  return e instanceof SysError ? new KernelError(e, ctx) : e;
}
