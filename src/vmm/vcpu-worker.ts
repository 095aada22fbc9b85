// The entry of a vCPU's thread (the VM starts one per vCPU from this file, vm.ts): the vCPU's body,
// startVcpu (vcpu.ts), with the thread's data and the port to the main thread.
import { parentPort, workerData } from 'node:worker_threads';
import { startVcpu, type VcpuWorkerData } from './vcpu.js';

export type { VcpuWorkerData };

startVcpu(workerData as VcpuWorkerData, parentPort!);
