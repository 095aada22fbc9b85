// A synthetic device for worker lifecycle tests: BAR0 is 256 bytes kept in the device's shared
// state (so a restarted worker resumes it), 4-byte accesses only. Word 0x80 is a doorbell (a
// write adds 1: a replayed write shows), a write to 0xfc hangs the handler (after flagging
// HANG_SEEN in word 0xf8) until the worker is terminated; word 0xf4 > 0 makes setup fail.

import { RESTORE, restoreViews } from '../../src/device/shared-state.js';
import type { DeviceWorkerData } from '../../src/device/worker-contract.js';
import type { WorkerDeps, WorkerDevice } from '../../src/device/worker-main.js';
import { OP, STATUS } from '../../src/ring/protocol.js';
import type { Request } from '../../src/ring/server.js';

export const DOORBELL = 0x80,
  HANG = 0xfc,
  HANG_SEEN = 0xf8,
  /** While this word is > 0, setting the device up fails (and takes one off it). */
  FAIL_SETUP = 0xf4;

/** BAR0 as words, over the state buffer (the test reads HANG_SEEN through it too). */
export const barWords = (state: SharedArrayBuffer): Int32Array =>
  new Int32Array(state, RESTORE.FLAGS_BYTES, 64);

function open(data: DeviceWorkerData): WorkerDevice {
  const flags = restoreViews(data.memory.state).flags,
    bar = barWords(data.memory.state);
  if (Atomics.load(bar, FAIL_SETUP / 4) > 0) {
    Atomics.sub(bar, FAIL_SETUP / 4, 1);
    throw new Error('synthetic device: setup failed (FAIL_SETUP)');
  }
  const restored = Atomics.load(flags, RESTORE.INITIALIZED) === 1;
  Atomics.store(flags, RESTORE.INITIALIZED, 1);
  const handle = (req: Request): number => {
    if (req.op === OP.NOP) return STATUS.OK;
    if (req.op !== OP.BAR_READ && req.op !== OP.BAR_WRITE) return STATUS.BAD_OP;
    if (req.index !== 0) return STATUS.BAD_BAR;
    if (req.size !== 4) return STATUS.BAD_WIDTH;
    if (req.offset % 4 !== 0 || req.offset >= 256) return STATUS.OUT_OF_RANGE;
    const w = req.offset / 4;
    if (req.op === OP.BAR_READ) {
      req.words![0] = Atomics.load(bar, w);
      return STATUS.OK;
    }
    if (req.offset === HANG) {
      Atomics.store(bar, HANG_SEEN / 4, 1);
      Atomics.wait(bar, HANG / 4, Atomics.load(bar, HANG / 4)); // until terminated
      return STATUS.OK;
    }
    if (req.offset === DOORBELL) Atomics.add(bar, w, 1);
    else Atomics.store(bar, w, req.words![0]!);
    return STATUS.OK;
  };
  return {
    handle,
    restored,
    describe: () => ({
      name: data.name,
      path: restored ? 'synthetic (restored)' : 'synthetic',
      configSize: 256,
      bars: [
        {
          index: 0,
          size: '0x100',
          io: false,
          is64: false,
          prefetch: false,
          msixTable: false,
          msixPba: false,
          regionOffset: '0x0',
          mappable: [],
          trapped: [[0, 0x100]],
        },
      ],
      romSize: '0x0',
      capabilities: [],
      extendedCapabilities: [],
      irqs: [],
      emulatedConfig: [],
    }),
  };
}

export const syntheticDeps: WorkerDeps = { open, reset: () => {} };
