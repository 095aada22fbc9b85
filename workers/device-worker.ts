// The device worker's thread entry: one thread per assigned device, running
// startDeviceWorker (src/device/worker-main.ts) on the data and port the coordinator's
// DeviceHandle started it with. The contract is in src/device/worker-contract.ts.
import { parentPort, workerData } from 'node:worker_threads';
import { runDeviceWorker } from '../src/device/worker-main.js';

if (!parentPort)
  throw new Error('device-worker must run as a worker thread (DeviceHandle starts it)');
runDeviceWorker(workerData, parentPort);
