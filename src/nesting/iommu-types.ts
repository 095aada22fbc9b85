// What each physical IOMMU type needs for nested translation: its stage-1 data, its
// invalidation entries, how it reports hardware info, and what "bypass" and "abort" are on it.
// The data types carry their IOMMU in an `iommu` field, so a VIommu<'arm-smmuv3'> refuses
// Intel VT-d data at compile time (see test/types/nesting.ts).
import {
  iommu_hw_info_arm_smmuv3,
  iommu_hw_info_vtd,
  iommu_hwpt_arm_smmuv3,
  iommu_hwpt_vtd_s1,
  iommu_hwpt_vtd_s1_invalidate,
  iommu_viommu_arm_smmuv3_invalidate,
  IOMMUFD_C as K,
} from '../../native/iommufd.js';
import {
  iommu_hwpt_invalidate_selftest,
  iommu_hwpt_selftest,
  iommu_test_hw_info,
  iommu_viommu_invalidate_selftest,
  IOMMUFD_TEST_C as T,
} from '../../native/iommufd-test.js';
import { decode, encode, encodeInto, type StructType } from '../../native/layout.js';

// ---- stage-1 data (IOMMU_HWPT_ALLOC with a nesting parent) ----

/** Intel VT-d first-stage page table (IOMMU_HWPT_DATA_VTD_S1). */
export interface VtdStage1 {
  readonly iommu: 'intel-vtd';
  /** Guest physical address of the first-stage page table. */
  readonly pgtblAddr: bigint;
  /** 48 (4-level) or 57 (5-level). */
  readonly addrWidth: number;
  readonly supervisorRequests?: boolean;
  readonly extendedAccess?: boolean;
  readonly writeProtect?: boolean;
}
/** ARM SMMUv3 nested STE, first two double words (IOMMU_HWPT_DATA_ARM_SMMUV3). */
export interface Smmuv3Stage1 {
  readonly iommu: 'arm-smmuv3';
  readonly ste: readonly [bigint, bigint];
}
/** The kernel selftest's mock nested domain (IOMMU_HWPT_DATA_SELFTEST): one value every IOTLB entry starts with. */
export interface SelftestStage1 {
  readonly iommu: 'selftest';
  readonly iotlb: number;
}

// ---- invalidations ----

/** VT-d first-stage IOTLB invalidation, sent to a stage-1 HWPT. */
export interface VtdIotlbInvalidation {
  readonly iommu: 'intel-vtd';
  readonly addr: bigint;
  readonly npages: bigint;
  readonly leaf?: boolean;
}
/** One SMMUv3 command (CMD_TLBI_NH_*, CMD_ATC_INV, CMD_CFGI_CD*), sent to the vIOMMU. */
export interface Smmuv3Command {
  readonly iommu: 'arm-smmuv3';
  readonly cmd: readonly [bigint, bigint];
}
/** Mock stage-1 IOTLB invalidation: entry `iotlbId` (0-3) or all of them. */
export interface SelftestIotlbInvalidation {
  readonly iommu: 'selftest';
  readonly iotlbId: number | 'all';
}
/** Mock device-cache invalidation through the vIOMMU: cache entry `cacheId` (0-3) of the vDevice `virtId`. */
export interface SelftestCacheInvalidation {
  readonly iommu: 'selftest';
  readonly virtId: number;
  readonly cacheId: number | 'all';
}

// ---- hardware info (IOMMU_GET_HW_INFO) ----

export interface VtdHwInfo {
  readonly iommu: 'intel-vtd';
  readonly capReg: bigint;
  readonly ecapReg: bigint;
  /** ECAP.NEST: the unit can compose a first-stage table with a second-stage one. */
  readonly nesting: boolean;
  /** ECAP.FSTS: first-stage translation. */
  readonly firstStage: boolean;
  /** Read-only mappings disallowed (erratum 772415, SPR17). */
  readonly erratum772415: boolean;
}
export interface Smmuv3HwInfo {
  readonly iommu: 'arm-smmuv3';
  readonly idr: readonly number[];
  readonly iidr: number;
  readonly aidr: number;
  /** The kernel says S1P must be assumed when a nested HWPT can be created: this is IDR0.S1P && IDR0.S2P. */
  readonly nesting: boolean;
  readonly repeatTlbiCfgi: boolean;
}
export interface SelftestHwInfo {
  readonly iommu: 'selftest';
  readonly testReg: number;
  readonly flags: number;
  readonly nesting: true;
}

/** Everything one IOMMU type contributes, by name. `never` means the type has no such thing. */
export interface IommuTypes {
  'intel-vtd': {
    stage1: VtdStage1;
    stage1Invalidation: VtdIotlbInvalidation;
    viommuInvalidation: never;
    hwInfo: VtdHwInfo;
  };
  'arm-smmuv3': {
    stage1: Smmuv3Stage1;
    stage1Invalidation: never;
    viommuInvalidation: Smmuv3Command;
    hwInfo: Smmuv3HwInfo;
  };
  selftest: {
    stage1: SelftestStage1;
    stage1Invalidation: SelftestIotlbInvalidation;
    viommuInvalidation: SelftestCacheInvalidation;
    hwInfo: SelftestHwInfo;
  };
}
export type IommuKind = keyof IommuTypes;
export type Stage1<K extends IommuKind> = IommuTypes[K]['stage1'];
export type Stage1Invalidation<K extends IommuKind> = IommuTypes[K]['stage1Invalidation'];
export type ViommuInvalidation<K extends IommuKind> = IommuTypes[K]['viommuInvalidation'];
export type HwInfoOf<K extends IommuKind> = IommuTypes[K]['hwInfo'];
export type IommuHwInfo =
  | HwInfoOf<IommuKind>
  | {
      readonly iommu: 'none' | 'amd' | 'tegra241-cmdqv' | `unknown(${number})`;
      readonly nesting: false | 'unknown';
    };

/**
 * How a default mode is reached: a stage-1 HWPT made from this data, the nesting parent itself
 * (stage-2 only: guest addresses pass through), or no page table at all (DMA blocked).
 */
export type DefaultMode<K extends IommuKind> =
  | { readonly via: 'stage1'; readonly data: Stage1<K> }
  | { readonly via: 'parent' }
  | { readonly via: 'blocked' };

export interface Invalidation<E> {
  readonly dataType: number;
  readonly entry: StructType<unknown>;
  readonly put: (buf: Buffer, off: number, e: E) => void;
}

export interface IommuType<K extends IommuKind> {
  readonly kind: K;
  readonly label: string;
  readonly hwInfoType: number;
  readonly hwptDataType: number;
  readonly encodeStage1: (d: Stage1<K>) => Buffer;
  /** IOMMU_VIOMMU_ALLOC type; undefined when the kernel offers no vIOMMU for this IOMMU (VT-d). */
  readonly viommuType: number | undefined;
  readonly stage1Invalidation: Invalidation<Stage1Invalidation<K>> | undefined;
  readonly viommuInvalidation: Invalidation<ViommuInvalidation<K>> | undefined;
  readonly bypass: DefaultMode<K>;
  readonly abort: DefaultMode<K>;
  readonly decodeHwInfo: (data: Buffer) => HwInfoOf<K>;
}

const padded = (data: Buffer, size: number): Buffer =>
  data.length >= size ? data : Buffer.concat([data, Buffer.alloc(size - data.length)]);
const bit = (v: bigint, n: number): boolean => ((v >> BigInt(n)) & 1n) === 1n;

const ALL = -1;
const indexOrAll = (what: string, v: number | 'all', max: number): number => {
  if (v === 'all') return ALL;
  if (!Number.isInteger(v) || v < 0 || v > max)
    throw new RangeError(`${what} must be 0-${max} or 'all', got ${String(v)}`);
  return v;
};

/** SMMUv3 STE word 0: V (bit 0) and Config (bits 3:1): 0b000 abort, 0b100 bypass. */
const STE_V = 1n,
  STE_CFG_ABORT = 0n << 1n,
  STE_CFG_BYPASS = 4n << 1n;

export const INTEL_VTD: IommuType<'intel-vtd'> = {
  kind: 'intel-vtd',
  label: 'Intel VT-d',
  hwInfoType: K.IOMMU_HW_INFO_TYPE_INTEL_VTD,
  hwptDataType: K.IOMMU_HWPT_DATA_VTD_S1,
  encodeStage1: (d) =>
    encode(iommu_hwpt_vtd_s1, {
      flags: BigInt(
        (d.supervisorRequests ? K.IOMMU_VTD_S1_SRE : 0) |
          (d.extendedAccess ? K.IOMMU_VTD_S1_EAFE : 0) |
          (d.writeProtect ? K.IOMMU_VTD_S1_WPE : 0),
      ),
      pgtbl_addr: d.pgtblAddr,
      addr_width: d.addrWidth,
    }),
  // The VT-d driver has no vIOMMU object: nested HWPTs hang off the nesting parent, and
  // invalidations go to the stage-1 HWPT they concern (as QEMU's intel-iommu does).
  viommuType: undefined,
  stage1Invalidation: {
    dataType: K.IOMMU_HWPT_INVALIDATE_DATA_VTD_S1,
    entry: iommu_hwpt_vtd_s1_invalidate,
    put: (buf, off, e) =>
      encodeInto(
        iommu_hwpt_vtd_s1_invalidate,
        buf,
        { addr: e.addr, npages: e.npages, flags: e.leaf ? K.IOMMU_VTD_INV_FLAGS_LEAF : 0 },
        off,
      ),
  },
  viommuInvalidation: undefined,
  bypass: { via: 'parent' },
  abort: { via: 'blocked' },
  decodeHwInfo: (data) => {
    const r = decode(iommu_hw_info_vtd, padded(data, iommu_hw_info_vtd.size));
    return {
      iommu: 'intel-vtd',
      capReg: r.cap_reg,
      ecapReg: r.ecap_reg,
      nesting: bit(r.ecap_reg, 26),
      firstStage: bit(r.ecap_reg, 47),
      erratum772415: (r.flags & 1) !== 0,
    };
  },
};

export const ARM_SMMUV3: IommuType<'arm-smmuv3'> = {
  kind: 'arm-smmuv3',
  label: 'ARM SMMUv3',
  hwInfoType: K.IOMMU_HW_INFO_TYPE_ARM_SMMUV3,
  hwptDataType: K.IOMMU_HWPT_DATA_ARM_SMMUV3,
  encodeStage1: (d) => encode(iommu_hwpt_arm_smmuv3, { ste: [...d.ste] }),
  viommuType: K.IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
  stage1Invalidation: undefined,
  viommuInvalidation: {
    dataType: K.IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
    entry: iommu_viommu_arm_smmuv3_invalidate,
    put: (buf, off, e) =>
      encodeInto(iommu_viommu_arm_smmuv3_invalidate, buf, { cmd: [...e.cmd] }, off),
  },
  // A nested STE with Config=bypass translates like the nesting parent; Config=abort faults.
  bypass: { via: 'stage1', data: { iommu: 'arm-smmuv3', ste: [STE_V | STE_CFG_BYPASS, 0n] } },
  abort: { via: 'stage1', data: { iommu: 'arm-smmuv3', ste: [STE_V | STE_CFG_ABORT, 0n] } },
  decodeHwInfo: (data) => {
    const r = decode(iommu_hw_info_arm_smmuv3, padded(data, iommu_hw_info_arm_smmuv3.size));
    const idr0 = r.idr[0]!;
    return {
      iommu: 'arm-smmuv3',
      idr: r.idr,
      iidr: r.iidr,
      aidr: r.aidr,
      nesting: (idr0 & 0b11) === 0b11,
      repeatTlbiCfgi: (r.flags & 1) !== 0,
    };
  },
};

/** IOTLB markers the selftest type's default HWPTs start with, so a test can tell them apart. */
export const SELFTEST_BYPASS_IOTLB = 0xb1a55,
  SELFTEST_ABORT_IOTLB = 0xab027;

export const SELFTEST: IommuType<'selftest'> = {
  kind: 'selftest',
  label: 'iommufd selftest mock',
  hwInfoType: T.IOMMU_HW_INFO_TYPE_SELFTEST,
  hwptDataType: T.IOMMU_HWPT_DATA_SELFTEST,
  encodeStage1: (d) => encode(iommu_hwpt_selftest, { iotlb: d.iotlb }),
  viommuType: T.IOMMU_VIOMMU_TYPE_SELFTEST,
  stage1Invalidation: {
    dataType: T.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
    entry: iommu_hwpt_invalidate_selftest,
    put: (buf, off, e) => {
      const id = indexOrAll('iotlbId', e.iotlbId, T.MOCK_NESTED_DOMAIN_IOTLB_NUM - 1);
      encodeInto(
        iommu_hwpt_invalidate_selftest,
        buf,
        { flags: id === ALL ? T.IOMMU_TEST_INVALIDATE_FLAG_ALL : 0, iotlb_id: id === ALL ? 0 : id },
        off,
      );
    },
  },
  viommuInvalidation: {
    dataType: T.IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
    entry: iommu_viommu_invalidate_selftest,
    put: (buf, off, e) => {
      const id = indexOrAll('cacheId', e.cacheId, T.MOCK_DEV_CACHE_NUM - 1);
      encodeInto(
        iommu_viommu_invalidate_selftest,
        buf,
        {
          flags: id === ALL ? T.IOMMU_TEST_INVALIDATE_FLAG_ALL : 0,
          vdev_id: e.virtId,
          cache_id: id === ALL ? 0 : id,
        },
        off,
      );
    },
  },
  // The mock does not translate; it stands in for a vIOMMU-based IOMMU (like SMMUv3) whose
  // default modes are stage-1 HWPTs made from data, marked so tests can tell which is which.
  bypass: { via: 'stage1', data: { iommu: 'selftest', iotlb: SELFTEST_BYPASS_IOTLB } },
  abort: { via: 'stage1', data: { iommu: 'selftest', iotlb: SELFTEST_ABORT_IOTLB } },
  decodeHwInfo: (data) => {
    const r = decode(iommu_test_hw_info, padded(data, iommu_test_hw_info.size));
    return { iommu: 'selftest', testReg: r.test_reg, flags: r.flags, nesting: true };
  },
};

export const IOMMU_TYPES: { readonly [Kind in IommuKind]: IommuType<Kind> } = {
  'intel-vtd': INTEL_VTD,
  'arm-smmuv3': ARM_SMMUV3,
  selftest: SELFTEST,
};

/** Decode IOMMU_GET_HW_INFO's answer by the type the kernel reported. */
export function decodeHwInfo(type: number, data: Buffer): IommuHwInfo {
  for (const t of Object.values(IOMMU_TYPES) as IommuType<IommuKind>[])
    if (t.hwInfoType === type) return t.decodeHwInfo(data);
  switch (type) {
    case K.IOMMU_HW_INFO_TYPE_NONE:
      return { iommu: 'none', nesting: false };
    case K.IOMMU_HW_INFO_TYPE_AMD:
      return { iommu: 'amd', nesting: 'unknown' };
    case K.IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV:
      return { iommu: 'tegra241-cmdqv', nesting: 'unknown' };
    default:
      return { iommu: `unknown(${type >>> 0})`, nesting: 'unknown' };
  }
}

/** Encode a batch of invalidation entries back to back, as IOMMU_HWPT_INVALIDATE reads them. */
export function encodeInvalidations<E>(inv: Invalidation<E>, entries: readonly E[]): Buffer {
  const size = inv.entry.size;
  const buf = Buffer.alloc(size * entries.length);
  entries.forEach((e, i) => inv.put(buf, i * size, e));
  return buf;
}
