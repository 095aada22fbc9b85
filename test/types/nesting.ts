// Compile-time checks of nested translation's type safety: `npm run build` fails if any line
// marked @ts-expect-error compiles, i.e. if one IOMMU type's data is accepted by another's
// vIOMMU. Nothing here runs.
import type { VDevice, VIommu } from '../../src/nesting/viommu.js';

export function typeChecks(
  smmu: VIommu<'arm-smmuv3'>,
  smmuDev: VDevice<'arm-smmuv3'>,
  vtdDev: VDevice<'intel-vtd'>,
  mock: VIommu<'selftest'>,
  mockDev: VDevice<'selftest'>,
): void {
  // Each type takes its own stage-1 data.
  smmuDev.install({ iommu: 'arm-smmuv3', ste: [0x9n, 0n] });
  vtdDev.install({ iommu: 'intel-vtd', pgtblAddr: 0x1000n, addrWidth: 48 });
  mockDev.install({ iommu: 'selftest', iotlb: 1 });
  // @ts-expect-error VT-d stage-1 data on an SMMUv3 vDevice
  smmuDev.install({ iommu: 'intel-vtd', pgtblAddr: 0x1000n, addrWidth: 48 });
  // @ts-expect-error SMMUv3 STE on a VT-d vDevice
  vtdDev.install({ iommu: 'arm-smmuv3', ste: [0x9n, 0n] });
  // @ts-expect-error selftest data on an SMMUv3 vDevice
  smmuDev.install({ iommu: 'selftest', iotlb: 1 });
  // @ts-expect-error SMMUv3 data without its STE
  smmuDev.install({ iommu: 'arm-smmuv3' });

  // Invalidations: SMMUv3 commands go to the vIOMMU, VT-d IOTLB entries to the stage-1 HWPT.
  smmu.invalidate([{ iommu: 'arm-smmuv3', cmd: [0x12n, 0n] }]);
  vtdDev.invalidateStage1([{ iommu: 'intel-vtd', addr: 0n, npages: 1n }]);
  mock.invalidate([{ iommu: 'selftest', virtId: 0x99, cacheId: 'all' }]);
  mockDev.invalidateStage1([{ iommu: 'selftest', iotlbId: 0 }]);
  // @ts-expect-error VT-d invalidation sent to an SMMUv3 vIOMMU
  smmu.invalidate([{ iommu: 'intel-vtd', addr: 0n, npages: 1n }]);
  // @ts-expect-error SMMUv3 has no per-HWPT invalidation
  smmuDev.invalidateStage1([{ iommu: 'arm-smmuv3', cmd: [0x12n, 0n] }]);
  // @ts-expect-error a mock device-cache invalidation is not a mock IOTLB one
  mockDev.invalidateStage1([{ iommu: 'selftest', virtId: 0x99, cacheId: 0 }]);
}
