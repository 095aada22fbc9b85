// The iommufd selftest driver's uAPI (drivers/iommu/iommufd/iommufd_test.h, built with
// CONFIG_IOMMUFD_TEST): IOMMU_TEST_CMD and the mock IOMMU's HWPT, vIOMMU, invalidation and
// hw-info formats. The kernel's own test driver is the only IOMMU that offers nesting in the
// lab; these are the bindings the nested-translation tests and the selftest IOMMU type use.

import { errnoNumber, SysError } from './errno.js';
import { _IO, defineConstants, defineIoctls } from './ioctl.js';
import { IOMMUFD_CMD, IOMMUFD_TYPE } from './iommufd.js';
import { anonUnion, decode, encode, inlineStruct, struct, u32, u64 } from './layout.js';
import { ioctl, type Target } from './libc.js';

export const IOMMUFD_TEST = defineIoctls('iommufd_test.h', {
  // IOMMUFD_CMD_BASE (the first command, IOMMU_DESTROY) + 32.
  IOMMU_TEST_CMD: _IO(IOMMUFD_TYPE, IOMMUFD_CMD.DESTROY + 32),
});

export const IOMMUFD_TEST_C = defineConstants('iommufd_test.h', {
  IOMMU_TEST_OP_MOCK_DOMAIN: 2,
  IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE: 10,
  IOMMU_TEST_OP_MD_CHECK_IOTLB: 14,
  IOMMU_TEST_OP_DEV_CHECK_CACHE: 16,
  IOMMU_HW_INFO_TYPE_SELFTEST: 0xfeedbeef,
  IOMMU_HW_INFO_SELFTEST_REGVAL: 0xdeadbeef,
  IOMMU_HWPT_DATA_SELFTEST: 0xdead,
  IOMMU_TEST_IOTLB_DEFAULT: 0xbadbeef,
  IOMMU_TEST_DEV_CACHE_DEFAULT: 0xbaddad,
  IOMMU_HWPT_INVALIDATE_DATA_SELFTEST: 0xdeadbeef,
  IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID: 0xdadbeef,
  IOMMU_TEST_INVALIDATE_FLAG_ALL: 1 << 0,
  IOMMU_VIOMMU_TYPE_SELFTEST: 0xdeadbeef,
  IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST: 0xdeadbeef,
  MOCK_NESTED_DOMAIN_IOTLB_NUM: 4,
  MOCK_DEV_CACHE_NUM: 4,
});
const T = IOMMUFD_TEST_C;

export const iommu_test_cmd = struct('struct iommu_test_cmd', {
  size: u32,
  op: u32,
  id: u32,
  __reserved: u32,
  u: anonUnion({
    mock_domain: inlineStruct({ out_stdev_id: u32, out_hwpt_id: u32, out_idev_id: u32 }),
    mock_domain_replace: inlineStruct({ pt_id: u32 }),
    check_iotlb: inlineStruct({ id: u32, iotlb: u32 }),
    check_dev_cache: inlineStruct({ id: u32, cache: u32 }),
    // The union's largest member (dirty) fixes its size: six u64-aligned words.
    dirty: inlineStruct({
      flags: u32,
      iova: u64,
      length: u64,
      page_size: u64,
      uptr: u64,
      out_nr_dirty: u64,
    }),
  }),
  last: u32,
});
export const iommu_test_hw_info = struct('struct iommu_test_hw_info', {
  flags: u32,
  test_reg: u32,
});
export const iommu_hwpt_selftest = struct('struct iommu_hwpt_selftest', {
  iotlb: u32,
  pagetable_type: u32,
});
export const iommu_hwpt_invalidate_selftest = struct('struct iommu_hwpt_invalidate_selftest', {
  flags: u32,
  iotlb_id: u32,
});
export const iommu_viommu_invalidate_selftest = struct('struct iommu_viommu_invalidate_selftest', {
  flags: u32,
  vdev_id: u32,
  cache_id: u32,
});

const EINVAL = errnoNumber('EINVAL');

export interface MockDevice {
  readonly stdevId: number;
  readonly hwptId: number;
  readonly idevId: number;
}

/** IOMMU_TEST_OP_MOCK_DOMAIN: create a mock device bound to this iommufd and attached to `ptId`. */
export function mockDomain(t: Target, ptId: number): MockDevice {
  const out = decode(
    iommu_test_cmd,
    encodeAndRun(t, 'MOCK_DOMAIN', T.IOMMU_TEST_OP_MOCK_DOMAIN, ptId, {}),
  );
  const m = out.u.mock_domain;
  return { stdevId: m.out_stdev_id, hwptId: m.out_hwpt_id, idevId: m.out_idev_id };
}

/** IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE: attach the mock device to `ptId` in place of what it has. */
export function mockDomainReplace(t: Target, stdevId: number, ptId: number): number {
  return decode(
    iommu_test_cmd,
    encodeAndRun(t, 'MOCK_DOMAIN_REPLACE', T.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, stdevId, {
      mock_domain_replace: { pt_id: ptId },
    }),
  ).u.mock_domain_replace.pt_id;
}

/** IOMMU_TEST_OP_MD_CHECK_IOTLB: does entry `index` of a mock nested HWPT's IOTLB hold `expected`? */
export function mdCheckIotlb(t: Target, hwptId: number, index: number, expected: number): boolean {
  return answersEinval(() =>
    encodeAndRun(t, 'MD_CHECK_IOTLB', T.IOMMU_TEST_OP_MD_CHECK_IOTLB, hwptId, {
      check_iotlb: { id: index, iotlb: expected },
    }),
  );
}

/** IOMMU_TEST_OP_DEV_CHECK_CACHE: does entry `index` of a mock device's cache hold `expected`? */
export function devCheckCache(t: Target, idevId: number, index: number, expected: number): boolean {
  return answersEinval(() =>
    encodeAndRun(t, 'DEV_CHECK_CACHE', T.IOMMU_TEST_OP_DEV_CHECK_CACHE, idevId, {
      check_dev_cache: { id: index, cache: expected },
    }),
  );
}

function encodeAndRun(
  t: Target,
  what: string,
  op: number,
  id: number,
  u: Record<string, unknown>,
): Buffer {
  const buf = encode(iommu_test_cmd, { size: iommu_test_cmd.size, op, id, u } as never);
  ioctl(t, `IOMMU_TEST_CMD(${what})`, IOMMUFD_TEST.IOMMU_TEST_CMD, buf);
  return buf;
}

/** The check ops answer "no" with EINVAL; anything else is a real failure. */
function answersEinval(run: () => unknown): boolean {
  try {
    run();
    return true;
  } catch (e) {
    if (e instanceof SysError && e.errno === EINVAL) return false;
    throw e;
  }
}
