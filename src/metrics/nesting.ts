// Prometheus metrics of nested translation: HWPTs, vDevices by mode, stage-1 installs and
// invalidations per vIOMMU. Read from each vIOMMU's plain counters at scrape time (nothing is
// counted through prom-client on the guest's path).
import { Counter, Gauge, type Registry } from 'prom-client';
import type { VIommuDescription } from '../nesting/viommu.js';

export interface DescribesVIommu {
  readonly closed: boolean;
  describe(): VIommuDescription;
}

const LABELS = ['viommu', 'iommu', 'context'] as const;

export function registerNestingMetrics(
  registry: Registry,
  viommus: () => Iterable<DescribesVIommu>,
): void {
  const live = (): VIommuDescription[] =>
    [...viommus()].filter((v) => !v.closed).map((v) => v.describe());
  const labels = (d: VIommuDescription) => ({ viommu: d.name, iommu: d.iommu, context: d.context });
  const counter = (name: string, help: string, value: (d: VIommuDescription) => number): void => {
    new Counter({
      name,
      help,
      labelNames: LABELS,
      registers: [registry],
      collect() {
        this.reset();
        for (const d of live()) this.inc(labels(d), value(d));
      },
    });
  };
  new Gauge({
    name: 'vfio_runtime_viommu_hwpts',
    help: 'HWPTs a vIOMMU holds now (nesting parent, bypass/abort defaults, installed stage-1s)',
    labelNames: LABELS,
    registers: [registry],
    collect() {
      this.reset();
      for (const d of live()) this.set(labels(d), d.stats.hwptsLive);
    },
  });
  new Gauge({
    name: 'vfio_runtime_viommu_vdevices',
    help: 'vDevices under a vIOMMU, by translation mode',
    labelNames: [...LABELS, 'mode'],
    registers: [registry],
    collect() {
      this.reset();
      for (const d of live())
        for (const mode of ['bypass', 'abort', 'stage1'] as const)
          this.set({ ...labels(d), mode }, d.devices.filter((x) => x.mode === mode).length);
    },
  });
  counter(
    'vfio_runtime_viommu_hwpts_allocated_total',
    'HWPTs a vIOMMU allocated',
    (d) => d.stats.hwptsAllocated,
  );
  counter(
    'vfio_runtime_viommu_stage1_installs_total',
    'Stage-1 HWPTs installed for the guest',
    (d) => d.stats.stage1Installs,
  );
  counter(
    'vfio_runtime_viommu_stage1_uninstalls_total',
    'Stage-1 HWPTs uninstalled (device back to bypass or abort)',
    (d) => d.stats.stage1Uninstalls,
  );
  counter(
    'vfio_runtime_viommu_invalidation_batches_total',
    'IOMMU_HWPT_INVALIDATE calls',
    (d) => d.stats.invalidationBatches,
  );
  counter(
    'vfio_runtime_viommu_invalidation_entries_total',
    'Invalidation entries submitted',
    (d) => d.stats.invalidationEntries,
  );
  counter(
    'vfio_runtime_viommu_invalidation_consumed_total',
    'Invalidation entries the kernel consumed',
    (d) => d.stats.invalidationConsumed,
  );
  counter(
    'vfio_runtime_viommu_invalidation_failures_total',
    'Invalidation batches the kernel refused (in whole or part)',
    (d) => d.stats.invalidationFailures,
  );
}
