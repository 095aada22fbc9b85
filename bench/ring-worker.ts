// Worker side of bench/ring: serves a ring whose BAR0 is a memfd (the same validation and pread
// a device worker does), or echoes postMessage for the baseline.
import { parentPort, workerData } from 'node:worker_threads';
import { raw } from '../native/libc.js';
import { OP, STATUS } from '../src/ring/protocol.js';
import { RingServer, type Request } from '../src/ring/server.js';

const data = workerData as { role: 'ring'; ring: SharedArrayBuffer; fd: number; barSize: number } | { role: 'echo' };

if (data.role === 'echo') {
  parentPort!.on('message', (m) => parentPort!.postMessage(m));
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
