// A mock device of the kernel's iommufd selftest driver (IOMMUFD_TEST), as nested translation
// drives a device: the lab's only IOMMU with nesting. It is bound to the context's iommufd and
// attached to its IOAS; "attach" is IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE. It registers with the
// context so closing the context destroys it after the vIOMMUs built on it.

import * as iommufd from '../../native/iommufd.js';
import * as iommufdTest from '../../native/iommufd-test.js';
import type { IommufdContext, NestableDevice } from '../../src/dma/iommufd-context.js';

export interface MockDevice extends NestableDevice {
  readonly stdevId: number;
  /** The page table the mock device is attached to now. */
  readonly ptId: number;
  /** Destroy the mock device (its idev and, if unshared, its HWPT go with it). */
  destroy(): void;
}

export function mockDevice(ctx: IommufdContext): MockDevice {
  const fd = ctx.iommufd;
  const ioas = ctx.ioasId;
  if (ioas === undefined) throw new Error(`${ctx} has no IOAS`);
  const m = iommufdTest.mockDomain(fd, ioas);
  let ptId = m.hwptId;
  let gone = false;
  const destroy = (): void => {
    if (!gone) {
      gone = true;
      untrack();
      iommufd.destroy(fd, m.stdevId);
    }
  };
  const untrack = ctx.track({ releaseDevice: () => {}, close: destroy });
  return {
    devId: m.idevId,
    stdevId: m.stdevId,
    label: `mock device ${m.stdevId} (idev ${m.idevId})`,
    get ptId() {
      return ptId;
    },
    attach: (pt) => {
      iommufdTest.mockDomainReplace(fd, m.stdevId, pt);
      ptId = pt;
    },
    home: () => {
      ptId = iommufdTest.mockDomainReplace(fd, m.stdevId, ioas);
    },
    destroy,
  };
}
