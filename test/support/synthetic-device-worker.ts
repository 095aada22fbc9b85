// A device worker (DeviceHandleOptions.workerUrl) serving the synthetic device of
// synthetic-device.ts: the real worker body, startDeviceWorker, with a device that needs no VFIO.
import { parentPort, workerData } from 'node:worker_threads';
import { runDeviceWorker } from '../../src/device/worker-main.js';
import { syntheticDeps } from './synthetic-device.js';

runDeviceWorker(workerData, parentPort!, syntheticDeps);
