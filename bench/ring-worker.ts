// Worker side of bench/ring: serves a ring whose BAR0 is a memfd (the same validation and pread
// a device worker does), or echoes postMessage. While the main thread measures a baseline (inline
// pread, bare ping-pong), a HOLD request keeps this thread in a bare Atomics ping-pong loop,
// awake on its core, so no figure's rounds begin with a thread waking up.
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { raw } from '../native/libc.js';
import { OP, STATUS } from '../src/ring/protocol.js';
import { type Request, RingServer } from '../src/ring/server.js';

/** A bench-only ring op: answer a ping-pong on `words` until word HOLDING is cleared. */
export const OP_HOLD = 0x7f;
/** `words` layout: the main thread's ping, the hold flag, and the echo a cache line away. */
export const PING = 0,
  HOLDING = 1,
  ECHO = 16;

const data = workerData as
  | {
      role: 'ring';
      ring: SharedArrayBuffer;
      fd: number;
      barSize: number;
      words: Int32Array;
      /** A device's stats buffer for the server's counters (bench metrics); else private. */
      counters?: SharedArrayBuffer;
    }
  | { role: 'echo' };

if (isMainThread) {
  // imported by bench/ring.ts for the constants above
} else if (data.role === 'echo') {
  parentPort!.on('message', (m) => parentPort!.postMessage(m));
} else {
  const { fd, barSize, words } = data;
  const hold = (): number => {
    let seen = Atomics.load(words, PING);
    Atomics.store(words, ECHO, seen);
    while (Atomics.load(words, HOLDING) !== 0) {
      const v = Atomics.load(words, PING);
      if (v !== seen) Atomics.store(words, ECHO, (seen = v));
    }
    return STATUS.OK;
  };
  const handler = (req: Request): number => {
    if (req.op === OP_HOLD) return hold();
    if (req.op !== OP.BAR_READ && req.op !== OP.BAR_WRITE) return STATUS.BAD_OP;
    if (req.index !== 0) return STATUS.BAD_BAR;
    const { offset, size } = req;
    if (size !== 1 && size !== 2 && size !== 4 && size !== 8) return STATUS.BAD_WIDTH;
    if (offset % size !== 0) return STATUS.MISALIGNED;
    if (offset + size > barSize) return STATUS.OUT_OF_RANGE;
    const n =
      req.op === OP.BAR_READ
        ? raw.pread(fd, req.data, size, offset)
        : raw.pwrite(fd, req.data, size, offset);
    return n === size ? STATUS.OK : STATUS.IO_ERROR;
  };
  const server = new RingServer(
    data.ring,
    handler,
    data.counters ? { counters: new Float64Array(data.counters) } : {},
  );
  server.start();
  parentPort!.on('message', async (m) => {
    if (m === 'stop') {
      await server.stop();
      parentPort!.postMessage(server.served);
    }
  });
  parentPort!.postMessage('ready');
}
