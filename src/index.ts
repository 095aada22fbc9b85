// The runtime's front door: everything a VMM, the HTTP API, the CLI and library users import
// (package.json "exports" points here; "./threads" at its light half, threads.ts, which this
// re-exports). src/vmm/ and src/api/ import the runtime only through these two files (biome's
// noRestrictedImports, biome.jsonc); what lies behind them may move. By area:
//   the Runtime, its devices and their DeviceHandles (coordinator/), the DeviceHooks a VMM gives
//   the API; specs and their normalizers (coordinator/spec.ts); the error kinds (errors.ts);
//   supervision and fault options; guest memory (MemfdRegion, memory sources), owned fds, fd
//   passing and eventfds; the GsiRouter; the ring client and its status constants for vCPU
//   threads; logging and the metrics endpoint (Runtime.registerMetrics puts the families on a
//   registry; registerApiMetrics and registerVmMetrics the API's and the VMM's); PCI functions
//   in sysfs and host checks; the vIOMMU types.

export { recvFds, sendFds, socketPair } from './control/fd-passing.js';
export type { AddCheckOptions } from './coordinator/add-check.js';
export type { BarAreaMapping } from './coordinator/bar-maps.js';
export type { BarSummary } from './coordinator/bar-summary.js';
export {
  DeviceHandle,
  type DeviceHandleOptions,
  type DeviceHandleState,
  type DeviceWorkerExitEvent,
  type InterruptEvent,
} from './coordinator/device-handle.js';
export type { DeviceHooks } from './coordinator/device-hooks.js';
export {
  type DeviceAttachOptions,
  type MappedPiece,
  Runtime,
  type RuntimeDescription,
  type RuntimeDevice,
  type RuntimeOptions,
} from './coordinator/runtime.js';
export {
  type DeviceSpec,
  fieldPath,
  type IommuSpec,
  type MemorySpec,
  normalizeDeviceSpec,
  normalizeRuntimeSpec,
  OBJECT_STYLE,
  type RuntimeSpec,
  type RuntimeSpecInput,
  type SpecKind,
  type SpecStyle,
} from './coordinator/spec.js';
export type {
  SupervisorEvent,
  SupervisorOptions,
  SupervisorState,
} from './coordinator/supervisor.js';
export type { DeviceDescription } from './device/assigned-device.js';
export { type FaultKind, type FaultSpec, parseFaultSpec } from './device/faults.js';
export type { InterruptOwner, SetIrqsRequest } from './device/worker-contract.js';
export {
  type GuestMemorySource,
  hvaSource,
  memfdRegionSource,
  memfdSource,
} from './dma/backend.js';
export type { GuestRegion, GuestRegionSpec } from './dma/guest-memory.js';
export type { PeerAreaResult, PeerVia } from './dma/peer-bars.js';
export { OwnedFd } from './fd.js';
export { createEventfd, drainEventfd, pollReadable, signalEventfd } from './irq/eventfd.js';
export {
  GsiRouter,
  type GsiRouterOptions,
  type KvmRoutingOps,
  type MsiMessage,
  type RouteChange,
  type RouteResult,
  x86DefaultRoutes,
} from './irq/gsi-router.js';
export {
  createLogger,
  errorFields,
  LOG_LEVELS,
  type LogLevel,
  type RuntimeLogger,
  silentLogger,
} from './log.js';
export { MemfdRegion } from './memory/memfd-region.js';
export { registerApiMetrics, registerVmMetrics, type VmMetricsSource } from './metrics/hosts.js';
export {
  isLoopback,
  type MetricsListen,
  type MetricsServer,
  type MetricsServerOptions,
  parseListen,
  startMetricsServer,
} from './metrics/server.js';
export type {
  DefaultMode,
  IommuKind,
  Stage1,
  Stage1Invalidation,
  ViommuInvalidation,
} from './nesting/iommu-types.js';
export type {
  DeviceIommuInfo,
  VDevice,
  VIommu,
  VIommuDescription,
  VIommuOptions,
} from './nesting/viommu.js';

export {
  type BarInfo,
  bindHint,
  cdevOf,
  describeFunction,
  listFunctions,
  normalizeBdf,
  type PciFunction,
} from './platform/pci-sysfs.js';
export { type Check, type Verdict, validateHost } from './platform/validate.js';
export type { RingServeTuning } from './ring/server.js';
export * from './threads.js';
