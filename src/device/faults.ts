// Fault injection in a device worker, off unless asked for (DeviceHandleOptions.faults, the
// VFR_FAULTS environment variable, or DeviceHandle.injectFault for one request): the worker's
// ring handler is wrapped only then, so a worker without faults pays nothing. Each injection is
// counted in the device's stats (vfio_runtime_faults_injected{kind}, src/metrics/schema.ts).
//
// kill: the request is served, then the worker ends before completing it (effect done,
//   completion lost: its successor completes it as WORKER_DIED).
// throw: the handler throws (the server completes the request as IO_ERROR; the worker lives).
// crash: the request is served, then an uncaught error ends the worker from its event loop.
// hang: a real blocking kernel call, read() on an empty eventfd, as a worker stuck in a device
//   ioctl: worker.terminate() cannot interrupt it. FAULT_CTL.HANG_FD names the eventfd; writing
//   to it (releaseHang) lets the call return.
// errno: the request's next pread/pwrite fails with `errno` at the native boundary
//   (native/fault-hooks.ts), without reaching the kernel.
// delay: the request completes `delayMs` late.
// corrupt: the request's op, BAR, offset and size words are replaced by random ones before the
//   handler sees them, as if its slot were corrupted between publish and take.
import { errnoNumber } from '../../native/errno.js';
import { failCall } from '../../native/fault-hooks.js';
import { C, raw } from '../../native/libc.js';
import { InvalidSpecError } from '../errors.js';
import { signalEventfd } from '../irq/eventfd.js';
import { C_FAULT_KILL, C_WORKER_STARTS, FAULT_KINDS } from '../metrics/schema.js';
import { STATUS } from '../ring/protocol.js';
import type { Handler, Request } from '../ring/server.js';
import { xorshift32 } from '../xorshift.js';

export type FaultKind = (typeof FAULT_KINDS)[number];

/** What to inject, at random (rate) or on request (DeviceHandle.injectFault). Plain data. */
export interface FaultSpec {
  /** Per-request probability of a fault, 0..1 (default 0: only injectFault's). */
  rate?: number;
  /** The kinds a random fault is drawn from (default: all but hang, which fails the device). */
  kinds?: FaultKind[];
  /** Seed of the draws (default 1); each worker incarnation mixes in its start count. */
  seed?: number;
  /** How late a delayed request completes, in ms (default 2). */
  delayMs?: number;
  /** The errno of an errno fault, by name or number (default EIO). */
  errno?: string | number;
}

/** Words of the fault control buffer the coordinator shares with each worker incarnation. */
export const FAULT_CTL = {
  /** One-shot: kind index + 1 to inject on the next request (0: none). */
  ARMED: 0,
  /** The eventfd a hung worker is blocked reading (-1: none). */
  HANG_FD: 1,
  WORDS: 4,
} as const;

export function createFaultCtl(): SharedArrayBuffer {
  const sab = new SharedArrayBuffer(FAULT_CTL.WORDS * 4);
  new Int32Array(sab)[FAULT_CTL.HANG_FD] = -1;
  return sab;
}

/** Arm a one-shot fault: the worker's next request gets it. */
export function armFault(ctl: SharedArrayBuffer, kind: FaultKind): void {
  Atomics.store(new Int32Array(ctl), FAULT_CTL.ARMED, kindIndex(kind) + 1);
}

/**
 * Let a worker blocked by a hang fault return from its read() (true if one was blocked). The fd
 * is taken (exchanged) before it is written, so it is never written after someone closed it.
 */
export function releaseHang(ctl: SharedArrayBuffer): boolean {
  const fd = Atomics.exchange(new Int32Array(ctl), FAULT_CTL.HANG_FD, -1);
  if (fd < 0) return false;
  try {
    signalEventfd(fd);
  } finally {
    raw.close(fd);
  }
  return true;
}

/** After a worker ended: close a hang eventfd it left (it ended before it could). */
export function closeHangFd(ctl: SharedArrayBuffer): void {
  const fd = Atomics.exchange(new Int32Array(ctl), FAULT_CTL.HANG_FD, -1);
  if (fd >= 0) raw.close(fd);
}

function kindIndex(kind: string): number {
  const i = (FAULT_KINDS as readonly string[]).indexOf(kind);
  if (i < 0)
    throw new InvalidSpecError(
      `unknown fault kind '${kind}' (kinds: ${FAULT_KINDS.join(', ')})`,
      'faults.kinds',
    );
  return i;
}

/**
 * Parse VFR_FAULTS: `rate=0.001,kinds=kill+throw+delay,seed=7,delay=2,errno=EIO` (any subset;
 * empty or unset: undefined, no faults).
 */
export function parseFaultSpec(text: string | undefined): FaultSpec | undefined {
  if (!text?.trim()) return undefined;
  const spec: FaultSpec = {};
  for (const part of text.split(',')) {
    const [k, v = ''] = part.split('=').map((s) => s.trim());
    const num = (): number => {
      const n = Number(v);
      if (v === '' || !Number.isFinite(n) || n < 0)
        throw new InvalidSpecError(`VFR_FAULTS: ${k}=${v} is not a number ≥ 0`, `faults.${k}`);
      return n;
    };
    if (k === 'rate') spec.rate = Math.min(1, num());
    else if (k === 'seed') spec.seed = num();
    else if (k === 'delay') spec.delayMs = num();
    else if (k === 'errno') spec.errno = /^\d+$/.test(v) ? Number(v) : v;
    else if (k === 'kinds') {
      spec.kinds = v.split('+').filter(Boolean) as FaultKind[];
      for (const kind of spec.kinds) kindIndex(kind);
    } else
      throw new InvalidSpecError(
        `VFR_FAULTS: unknown key '${k}' (keys: rate, kinds, seed, delay, errno)`,
        'faults',
      );
  }
  return spec;
}

/** The worker's handler with faults injected per `spec` and the armed word of `ctl`. */
export function faultyHandler(
  handler: Handler,
  spec: FaultSpec,
  ctlBuffer: SharedArrayBuffer,
  stats: Float64Array,
): Handler {
  const ctl = new Int32Array(ctlBuffer);
  const random = xorshift32((spec.seed ?? 1) * 7919 + stats[C_WORKER_STARTS]!);
  const rate = spec.rate ?? 0;
  const kinds = (spec.kinds ?? FAULT_KINDS.filter((k) => k !== 'hang')).map(kindIndex);
  const delayMs = spec.delayMs ?? 2;
  const errno = typeof spec.errno === 'number' ? spec.errno : errnoNumber(spec.errno ?? 'EIO');
  let failNext = false;
  const fail = (): boolean => {
    if (!failNext) return false;
    failNext = false;
    return true;
  };
  failCall('pread', errno, fail);
  failCall('pwrite', errno, fail);
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  const kinds8 = new Uint8Array(8);

  return (req: Request): number => {
    let kind = Atomics.exchange(ctl, FAULT_CTL.ARMED, 0) - 1;
    if (kind < 0 && rate > 0 && random() < rate) kind = kinds[Math.floor(random() * kinds.length)]!;
    if (kind < 0) return handler(req);
    stats[C_FAULT_KILL + kind]!++;
    switch (FAULT_KINDS[kind]) {
      case 'kill':
        handler(req);
        process.exit(1); // in a worker: ends this thread only
        return Atomics.wait(sleeper, 0, 0) && STATUS.IO_ERROR; // not reached
      case 'throw':
        throw new Error('injected fault: the handler threw');
      case 'crash': {
        const s = handler(req);
        setImmediate(() => {
          throw new Error('injected fault: an uncaught error in the worker');
        });
        return s;
      }
      case 'hang':
        hang(ctl, kinds8);
        return STATUS.IO_ERROR;
      case 'errno': {
        failNext = true;
        const s = handler(req);
        failNext = false;
        return s;
      }
      case 'delay':
        Atomics.wait(sleeper, 0, 0, delayMs);
        return handler(req);
      default: // corrupt
        req.op = (random() * 0x100000000) | 0;
        req.index = (random() * 8) | 0;
        req.offset = Math.floor(random() * 0x100000000);
        req.size = (random() * 32) | 0;
        return handler(req);
    }
  };
}

/** Block in read() on a new, empty, blocking eventfd until someone writes to it. */
function hang(ctl: Int32Array, buf: Uint8Array): void {
  const fd = raw.eventfd(0, C.EFD_CLOEXEC);
  if (fd < 0) return;
  Atomics.store(ctl, FAULT_CTL.HANG_FD, fd);
  raw.read(fd, buf, 8);
  const mine = Atomics.exchange(ctl, FAULT_CTL.HANG_FD, -1);
  if (mine >= 0) raw.close(mine);
}
