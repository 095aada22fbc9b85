// The thread that answers a failed device's ring (src/coordinator/supervisor.ts starts it once
// its supervisor gives the device up): every request completes at once as DEVICE_FAILED, counted
// in the device's stats. A thread of its own, not the coordinator's: a producer on the
// coordinator's thread (a test, a library caller) blocks that thread until its request completes.
import { parentPort, workerData } from 'node:worker_threads';
import { C_ERR_DEVICE_FAILED } from '../src/metrics/schema.js';
import { STATUS } from '../src/ring/protocol.js';
import { RingServer } from '../src/ring/server.js';

const { ring, stats } = workerData as { ring: SharedArrayBuffer; stats: SharedArrayBuffer };
const counters = new Float64Array(stats);
const server = new RingServer(
  ring,
  () => {
    counters[C_ERR_DEVICE_FAILED]!++;
    return STATUS.DEVICE_FAILED;
  },
  { spinUs: 50, counters },
);
server.start();
// A pending Atomics.waitAsync does not keep a thread alive; this listener does, until 'stop'.
parentPort!.on('message', async (m) => {
  if (m !== 'stop') return;
  await server.stop();
  parentPort!.postMessage('stopped');
  parentPort!.close();
});
