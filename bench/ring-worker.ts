// Worker side of bench/ring: serves a ring whose BAR0 is a memfd (the same validation and pread
// a device worker does), echoes postMessage, or answers a bare Atomics ping-pong (the baselines).
import { parentPort, workerData } from 'node:worker_threads';
import { raw } from '../native/libc.js';
import { OP, STATUS } from '../src/ring/protocol.js';
import { RingServer, type Request } from '../src/ring/server.js';

const data = workerData as { role: 'ring'; ring: SharedArrayBuffer; fd: number; barSize: number } | { role: 'echo' } | { role: 'pingpong'; words: Int32Array };

if (data.role === 'echo') {
  parentPort!.on('message', (m) => parentPort!.postMessage(m));
} else if (data.role === 'pingpong') {
  // Word 0 (set by the main thread) is echoed into word 16, a cache line away; -1 ends it. Between
  // its rounds (word 1 is 0) it sleeps after PARK_POLLS idle polls, so it does not take a core
  // from the ring while the two are measured in alternation.
  const words = data.words, PARK_POLLS = 20_000;
  parentPort!.postMessage('ready');
  for (let seen = 0; ;) {
    let v: number, polls = 0;
    while ((v = Atomics.load(words, 0)) === seen) if (++polls > PARK_POLLS && Atomics.load(words, 1) === 0) { Atomics.wait(words, 0, seen); polls = 0; }
    if (v < 0) break;
    Atomics.store(words, 16, (seen = v));
  }
} else {
  const { fd, barSize } = data;
  const handler = (req: Request): number => {
    if (req.op !== OP.BAR_READ && req.op !== OP.BAR_WRITE) return STATUS.BAD_OP;
    if (req.index !== 0) return STATUS.BAD_BAR;
    const { offset, size } = req;
    if (size !== 1 && size !== 2 && size !== 4 && size !== 8) return STATUS.BAD_WIDTH;
    if (offset % size !== 0) return STATUS.MISALIGNED;
    if (offset + size > barSize) return STATUS.OUT_OF_RANGE;
    const n = req.op === OP.BAR_READ ? raw.pread(fd, req.data, size, offset) : raw.pwrite(fd, req.data, size, offset);
    return n === size ? STATUS.OK : STATUS.IO_ERROR;
  };
  const server = new RingServer(data.ring, handler);
  server.start();
  parentPort!.on('message', async (m) => { if (m === 'stop') { await server.stop(); parentPort!.postMessage(server.served); } });
  parentPort!.postMessage('ready');
}
