// A fake PCI function behind a ring, for the VMM's PCI bus tests: config space with vendor
// 0x1234, device 0x5678, a command register, BAR0 (4 KiB memory) and BAR2 (32 bytes of I/O)
// that size like real BARs; BAR reads answer their offset, and refuse (IO_ERROR, as VFIO's EIO)
// while memory decoding is off.
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { OP, STATUS } from '../../src/ring/protocol.js';
import { type Request, RingServer } from '../../src/ring/server.js';

function fakeFunction(): (req: Request) => number {
  const cfg = new DataView(new ArrayBuffer(256));
  cfg.setUint32(0, 0x56781234, true);
  cfg.setUint32(0x10, 0, true); // BAR0: 32-bit memory
  cfg.setUint32(0x18, 1, true); // BAR2: I/O
  const sizes: Record<number, number> = { 16: 0x1000, 24: 0x20 };
  return (req) => {
    const d = new DataView(req.data.buffer, req.data.byteOffset, 8);
    if (req.op === OP.CFG_READ) {
      for (let i = 0; i < req.size; i++) req.data[i] = cfg.getUint8(req.offset + i);
      return STATUS.OK;
    }
    if (req.op === OP.CFG_WRITE) {
      const size = sizes[req.offset];
      if (size !== undefined && req.size === 4) {
        const low = cfg.getUint32(req.offset, true) & (req.offset === 0x18 ? 0x3 : 0xf);
        cfg.setUint32(req.offset, ((d.getUint32(0, true) & ~(size - 1)) | low) >>> 0, true);
      } else if (req.offset < 0x10 || req.offset >= 0x28) {
        for (let i = 0; i < req.size; i++) cfg.setUint8(req.offset + i, req.data[i]!);
      }
      return STATUS.OK;
    }
    if (req.op === OP.BAR_READ || req.op === OP.BAR_WRITE) {
      if (req.index === 0 && !(cfg.getUint16(4, true) & 2)) return STATUS.IO_ERROR;
      if (req.op === OP.BAR_READ) d.setUint32(0, req.offset, true);
      return STATUS.OK;
    }
    return STATUS.BAD_OP;
  };
}

if (!isMainThread && (workerData as { role?: string })?.role === 'fake-pci') {
  const server = new RingServer((workerData as { ring: SharedArrayBuffer }).ring, fakeFunction());
  server.start();
  parentPort!.on('message', async (m) => {
    if (m === 'stop') {
      await server.stop();
      parentPort!.postMessage('stopped');
    }
  });
}
