// The stress harness's simulated device (WorkerDeps for startDeviceWorker): its config space and
// BAR0 are a memfd the coordinator made (the device "fd"), reached by pread/pwrite like a VFIO
// region, so errno faults at the native boundary hit it and a restarted worker finds the state
// its predecessor left. BAR0 registers: SEQ(p) marks bit v of producer p's bitmap when v is
// written (a bit already set is a duplicate, counted); IRQ(p) raises producer p's simulated
// interrupt (a word in the device's shared state, notified); the rest is plain memory.
import { raw } from '../../native/libc.js';
import { AccessGuard, CONFIG_WINDOW } from '../../src/device/access-guard.js';
import type { DeviceDescription } from '../../src/device/assigned-device.js';
import { RESTORE, restoreViews } from '../../src/device/shared-state.js';
import type { DeviceWorkerData } from '../../src/device/worker-contract.js';
import type { WorkerDeps, WorkerDevice } from '../../src/device/worker-main.js';
import { OP, STATUS } from '../../src/ring/protocol.js';
import type { Request } from '../../src/ring/server.js';

export const MAX_PRODUCERS = 32;
/** The memfd's layout: config space, BAR0, then one bitmap per producer. */
export const CFG_BASE = 0,
  CFG_SIZE = 256,
  BAR_BASE = 4096,
  BAR_SIZE = 0x10000,
  BITMAP_BASE = BAR_BASE + BAR_SIZE;
/** BAR0 offsets. */
export const SEQ = (p: number): number => 4 * p,
  IRQ = (p: number): number => 0x400 + 4 * p,
  DATA = (p: number): number => 0x1000 + 8 * p,
  CFG_SCRATCH = (p: number): number => 0x40 + 4 * p;
/** Words of the device's shared state after the restore flags: duplicates, then per-producer interrupts. */
export const SIM_DUPS = 0,
  SIM_IRQ = (p: number): number => 1 + p;

export const simWords = (state: SharedArrayBuffer): Int32Array =>
  new Int32Array(state, RESTORE.FLAGS_BYTES, 1 + MAX_PRODUCERS);

export const bitmapBytes = (perProducer: number): number => Math.ceil(perProducer / 8);
export const memfdBytes = (perProducer: number): number =>
  BITMAP_BASE + MAX_PRODUCERS * bitmapBytes(perProducer);

/** Bitmap size per producer, passed through the device path ("sim:<bytes>"). */
const bitmapOf = (path: string): number => Number(/^sim:(\d+)/.exec(path)?.[1] ?? 0);

function open(data: DeviceWorkerData): WorkerDevice {
  const flags = restoreViews(data.memory.state).flags;
  const restored = Atomics.load(flags, RESTORE.INITIALIZED) === 1;
  Atomics.store(flags, RESTORE.INITIALIZED, 1);
  const fd = data.fd,
    bitmap = bitmapOf(data.path),
    sim = simWords(data.memory.state);
  const byte = new Uint8Array(1);
  // As AssignedDevice: every fd access names its window; the bitmaps are a window of their own.
  const guard = new AccessGuard(new Float64Array(data.memory.stats));
  guard.allow(0, BAR_BASE, BAR_SIZE);
  guard.allow(CONFIG_WINDOW, CFG_BASE, CFG_SIZE);
  guard.allow(1, BITMAP_BASE, MAX_PRODUCERS * bitmap);
  const io = (w: number, write: boolean, buf: Uint8Array, size: number, at: number): number => {
    if (!guard.inside(w, at, size)) return STATUS.OUT_OF_RANGE;
    const n = write ? raw.pwrite(fd, buf, size, at) : raw.pread(fd, buf, size, at);
    return n === size ? STATUS.OK : STATUS.IO_ERROR;
  };
  const mark = (p: number, v: number): number => {
    if (v < 0 || v >= bitmap * 8) return STATUS.OUT_OF_RANGE;
    const at = BITMAP_BASE + p * bitmap + (v >>> 3);
    if (io(1, false, byte, 1, at) !== STATUS.OK) return STATUS.IO_ERROR;
    if (byte[0]! & (1 << (v & 7))) Atomics.add(sim, SIM_DUPS, 1);
    byte[0] = byte[0]! | (1 << (v & 7));
    return io(1, true, byte, 1, at);
  };
  const handle = (req: Request): number => {
    const { op, size, offset } = req;
    if (op === OP.NOP) return STATUS.OK;
    if (size !== 1 && size !== 2 && size !== 4 && size !== 8) return STATUS.BAD_WIDTH;
    if (offset % size !== 0) return STATUS.MISALIGNED;
    const write = op === OP.CFG_WRITE || op === OP.BAR_WRITE;
    if (op === OP.CFG_READ || op === OP.CFG_WRITE) {
      if (offset + size > CFG_SIZE || size === 8) return STATUS.OUT_OF_RANGE;
      return io(CONFIG_WINDOW, write, req.data, size, CFG_BASE + offset);
    }
    if (op !== OP.BAR_READ && op !== OP.BAR_WRITE) return STATUS.BAD_OP;
    if (req.index !== 0) return STATUS.BAD_BAR;
    if (offset + size > BAR_SIZE) return STATUS.OUT_OF_RANGE;
    if (write && size === 4 && offset < IRQ(MAX_PRODUCERS)) {
      const p = (offset & 0x3ff) >>> 2;
      if (p >= MAX_PRODUCERS) return STATUS.OUT_OF_RANGE;
      if (offset < 0x400) return mark(p, req.words![0]!);
      Atomics.add(sim, SIM_IRQ(p), 1);
      Atomics.notify(sim, SIM_IRQ(p));
      return STATUS.OK;
    }
    return io(0, write, req.data, size, BAR_BASE + offset);
  };
  return { handle, restored, describe: () => describe(data, restored) };
}

function describe(data: DeviceWorkerData, restored: boolean): DeviceDescription {
  return {
    name: data.name,
    path: `${data.path}${restored ? ' (restored)' : ''}`,
    configSize: CFG_SIZE,
    bars: [
      {
        index: 0,
        size: `0x${BAR_SIZE.toString(16)}`,
        io: false,
        is64: false,
        prefetch: false,
        msixTable: false,
        msixPba: false,
        regionOffset: `0x${BAR_BASE.toString(16)}`,
        mappable: [],
        trapped: [[0, BAR_SIZE]],
      },
    ],
    romSize: '0x0',
    capabilities: [],
    extendedCapabilities: [],
    irqs: [],
    emulatedConfig: [],
  };
}

export const simDeps: WorkerDeps = { open, reset: () => {} };
