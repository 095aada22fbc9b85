// A device worker thread serving the stress harness's simulated device (sim-device.ts): the
// real worker body, startDeviceWorker, with a memfd in place of a VFIO device.
import { parentPort, workerData } from 'node:worker_threads';
import { runDeviceWorker } from '../../src/device/worker-main.js';
import { simDeps } from './sim-device.js';

runDeviceWorker(workerData, parentPort!, simDeps);
