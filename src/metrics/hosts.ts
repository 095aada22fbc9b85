// Prometheus metrics of the hosts built on the runtime: the HTTP API's counters (connections,
// requests by route and status, rejections, fds) and the reference VMM's per-vCPU counters
// (exits by KVM exit reason, config, UART and unhandled accesses, device refusals, BAR accesses
// by device, the sampled exit timing). Declared in schema.ts (API_STATS, VCPU_STATS), read by
// read-counters.ts at scrape time from the Float64Arrays their threads write; registered as the
// runtime's are (exporter.ts). The API server and the Vm call these (ApiServer.registerMetrics,
// Vm.registerMetrics); nothing here runs on a request's or an exit's path.
import type { Registry } from 'prom-client';
import { familiesOf, registerSnapshot, rowsSnapshot } from './exporter.js';
import { readApiCounters, readVcpuCounters } from './read-counters.js';
import { API_STATS, VCPU_STATS } from './schema.js';

/** The API's families (exported names), name → type, help. */
export const apiFamilies = () => familiesOf(API_STATS);
/** The VMM's families (exported names), name → type, help. */
export const vmFamilies = () => familiesOf(VCPU_STATS);

/** Export the API's counters (`stats`: its API_STATS table). */
export function registerApiMetrics(registry: Registry, stats: Float64Array): void {
  registerSnapshot(registry, apiFamilies(), () => rowsSnapshot(readApiCounters(stats)));
}

/** What the VMM's metrics read: the vCPU rows and the port in each PCI slot index now. */
export interface VmMetricsSource {
  readonly stats: Float64Array;
  readonly cpus: number;
  devices(): readonly string[];
}

/** Export the VMM's per-vCPU counters (label vcpu on each). */
export function registerVmMetrics(registry: Registry, source: VmMetricsSource): void {
  registerSnapshot(registry, vmFamilies(), () =>
    rowsSnapshot(readVcpuCounters(source.stats, source.cpus, source.devices())),
  );
}
