// Worker side of bench/config: serves CFG_READ from a ConfigSpace whose physical config region
// is a memfd, through the same configIo an AssignedDevice uses, and counts this thread's GCs.
import { PerformanceObserver } from 'node:perf_hooks';
import { parentPort, workerData } from 'node:worker_threads';
import { configIo } from '../src/device/assigned-device.js';
import { ConfigSpace } from '../src/device/config-space.js';
import { OP, STATUS } from '../src/ring/protocol.js';
import { RingServer } from '../src/ring/server.js';

const { ring, fd, phys } = workerData as { ring: SharedArrayBuffer; fd: number; phys: Uint8Array };
const cfg = new ConfigSpace(configIo(fd, 0, 'memfd:config'), phys, []);
let gcs = 0;
new PerformanceObserver((list) => {
  gcs += list.getEntries().length;
}).observe({ entryTypes: ['gc'] });
const server = new RingServer(ring, (req) => {
  if (req.op !== OP.CFG_READ) return STATUS.BAD_OP;
  req.words![0] = cfg.read(req.offset, req.size as 1 | 2 | 4);
  return STATUS.OK;
});
server.start();
parentPort!.on('message', (m) => {
  if (m === 'reset') {
    gcs = 0;
    parentPort!.postMessage('ok');
  }
  // Let pending GC entries reach the observer before answering.
  if (m === 'gcs') setTimeout(() => parentPort!.postMessage(gcs), 50);
});
parentPort!.postMessage('ready');
