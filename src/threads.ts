// The front door's light half, for code that runs on a thread of its own (a VMM's vCPU threads,
// the API's socket thread): the device ring's client and status constants, the error kinds and
// SysError (the raw binding error a KernelError is), the layouts of the API's and the vCPUs'
// counters (declared in src/metrics/schema.ts), without the runtime's module graph.
// src/index.ts re-exports all of it. Loading this in a new thread takes ~20 ms here, all of
// src/index.js (prom-client, comlink, piscina, the DMA layer) ~200 ms.
export { SysError } from '../native/errno.js';
export * from './errors.js';
export {
  API_ROUTES,
  API_STAT,
  API_STATUSES,
  type ApiRoute,
  apiRequestSlot,
  apiStatusIndex,
  VCPU_STAT,
  VM_PCI_SLOTS,
} from './metrics/schema.js';
export { RingClient, type RingClientOptions } from './ring/client.js';
export { OP, type Op, STATUS, statusName, statusText } from './ring/protocol.js';
