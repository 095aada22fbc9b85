// The entry of a vCPU's thread (vm-run.ts starts one per vCPU from this file): the vCPU's body,
// startVcpu (vcpu.ts), with the thread's data and the port to the main thread.
import { parentPort, workerData } from 'node:worker_threads';
import { startVcpu, type VcpuWorkerData } from './vcpu.js';

export type { VcpuWorkerData };

startVcpu(workerData as VcpuWorkerData, parentPort!);
