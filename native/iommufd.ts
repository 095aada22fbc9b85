// iommufd uAPI (<linux/iommufd.h>, /dev/iommu): IOAS, HWPT, vIOMMU and vDevice ioctls,
// their structs and flags, and one thin wrapper per ioctl. No policy here.

import { errnoNumber, SysError } from './errno.js';
import { _IO, defineConstants, defineIoctls } from './ioctl.js';
import { anonUnion, array, decode, encode, s32, struct, u8, u16, u32, u64 } from './layout.js';
import { addressOf, check, errno, ioctl, raw, type Target } from './libc.js';

const EMSGSIZE = errnoNumber('EMSGSIZE');

export const IOMMUFD_TYPE = ';';
export const IOMMUFD_CMD = {
  DESTROY: 0x80,
  IOAS_ALLOC: 0x81,
  IOAS_ALLOW_IOVAS: 0x82,
  IOAS_COPY: 0x83,
  IOAS_IOVA_RANGES: 0x84,
  IOAS_MAP: 0x85,
  IOAS_UNMAP: 0x86,
  OPTION: 0x87,
  VFIO_IOAS: 0x88,
  HWPT_ALLOC: 0x89,
  GET_HW_INFO: 0x8a,
  HWPT_SET_DIRTY_TRACKING: 0x8b,
  HWPT_GET_DIRTY_BITMAP: 0x8c,
  HWPT_INVALIDATE: 0x8d,
  FAULT_QUEUE_ALLOC: 0x8e,
  IOAS_MAP_FILE: 0x8f,
  VIOMMU_ALLOC: 0x90,
  VDEVICE_ALLOC: 0x91,
} as const;

export const IOMMUFD = defineIoctls('linux/iommufd.h', {
  IOMMU_DESTROY: _IO(IOMMUFD_TYPE, IOMMUFD_CMD.DESTROY),
  IOMMU_IOAS_ALLOC: _IO(IOMMUFD_TYPE, IOMMUFD_CMD.IOAS_ALLOC),
  IOMMU_IOAS_ALLOW_IOVAS: _IO(IOMMUFD_TYPE, IOMMUFD_CMD.IOAS_ALLOW_IOVAS),
  IOMMU_IOAS_COPY: _IO(IOMMUFD_TYPE, IOMMUFD_CMD.IOAS_COPY),
  IOMMU_IOAS_IOVA_RANGES: _IO(IOMMUFD_TYPE, IOMMUFD_CMD.IOAS_IOVA_RANGES),
  IOMMU_IOAS_MAP: _IO(IOMMUFD_TYPE, IOMMUFD_CMD.IOAS_MAP),
  IOMMU_IOAS_UNMAP: _IO(IOMMUFD_TYPE, IOMMUFD_CMD.IOAS_UNMAP),
  IOMMU_OPTION: _IO(IOMMUFD_TYPE, IOMMUFD_CMD.OPTION),
  IOMMU_HWPT_ALLOC: _IO(IOMMUFD_TYPE, IOMMUFD_CMD.HWPT_ALLOC),
  IOMMU_GET_HW_INFO: _IO(IOMMUFD_TYPE, IOMMUFD_CMD.GET_HW_INFO),
  IOMMU_HWPT_SET_DIRTY_TRACKING: _IO(IOMMUFD_TYPE, IOMMUFD_CMD.HWPT_SET_DIRTY_TRACKING),
  IOMMU_HWPT_GET_DIRTY_BITMAP: _IO(IOMMUFD_TYPE, IOMMUFD_CMD.HWPT_GET_DIRTY_BITMAP),
  IOMMU_HWPT_INVALIDATE: _IO(IOMMUFD_TYPE, IOMMUFD_CMD.HWPT_INVALIDATE),
  IOMMU_IOAS_MAP_FILE: _IO(IOMMUFD_TYPE, IOMMUFD_CMD.IOAS_MAP_FILE),
  IOMMU_VIOMMU_ALLOC: _IO(IOMMUFD_TYPE, IOMMUFD_CMD.VIOMMU_ALLOC),
  IOMMU_VDEVICE_ALLOC: _IO(IOMMUFD_TYPE, IOMMUFD_CMD.VDEVICE_ALLOC),
});

export const IOMMUFD_C = defineConstants('linux/iommufd.h', {
  IOMMU_IOAS_MAP_FIXED_IOVA: 1 << 0,
  IOMMU_IOAS_MAP_WRITEABLE: 1 << 1,
  IOMMU_IOAS_MAP_READABLE: 1 << 2,
  IOMMU_OPTION_RLIMIT_MODE: 0,
  IOMMU_OPTION_HUGE_PAGES: 1,
  IOMMU_OPTION_OP_SET: 0,
  IOMMU_OPTION_OP_GET: 1,
  IOMMU_HWPT_ALLOC_NEST_PARENT: 1 << 0,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING: 1 << 1,
  IOMMU_HWPT_FAULT_ID_VALID: 1 << 2,
  IOMMU_HWPT_ALLOC_PASID: 1 << 3,
  IOMMU_HWPT_DATA_NONE: 0,
  IOMMU_HWPT_DATA_VTD_S1: 1,
  IOMMU_HWPT_DATA_ARM_SMMUV3: 2,
  IOMMU_HWPT_DATA_AMD_GUEST: 3,
  IOMMU_HW_INFO_TYPE_NONE: 0,
  IOMMU_HW_INFO_TYPE_INTEL_VTD: 1,
  IOMMU_HW_INFO_TYPE_ARM_SMMUV3: 2,
  IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV: 3,
  IOMMU_HW_INFO_TYPE_AMD: 4,
  IOMMU_HW_INFO_FLAG_INPUT_TYPE: 1 << 0,
  IOMMU_HW_CAP_DIRTY_TRACKING: 1 << 0,
  IOMMU_HW_CAP_PCI_PASID_EXEC: 1 << 1,
  IOMMU_HW_CAP_PCI_PASID_PRIV: 1 << 2,
  IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED: 1 << 3,
  IOMMU_HWPT_DIRTY_TRACKING_ENABLE: 1,
  IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR: 1,
  IOMMU_HWPT_INVALIDATE_DATA_VTD_S1: 0,
  IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3: 1,
  IOMMU_VTD_INV_FLAGS_LEAF: 1 << 0,
  IOMMU_VIOMMU_TYPE_DEFAULT: 0,
  IOMMU_VIOMMU_TYPE_ARM_SMMUV3: 1,
  IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV: 2,
  IOMMU_VTD_S1_SRE: 1 << 0,
  IOMMU_VTD_S1_EAFE: 1 << 1,
  IOMMU_VTD_S1_WPE: 1 << 2,
});
const K = IOMMUFD_C;

export const iommu_destroy = struct('struct iommu_destroy', { size: u32, id: u32 });
export const iommu_ioas_alloc = struct('struct iommu_ioas_alloc', {
  size: u32,
  flags: u32,
  out_ioas_id: u32,
});
export const iommu_iova_range = struct('struct iommu_iova_range', { start: u64, last: u64 });
export const iommu_ioas_iova_ranges = struct('struct iommu_ioas_iova_ranges', {
  size: u32,
  ioas_id: u32,
  num_iovas: u32,
  __reserved: u32,
  allowed_iovas: u64,
  out_iova_alignment: u64,
});
export const iommu_ioas_allow_iovas = struct('struct iommu_ioas_allow_iovas', {
  size: u32,
  ioas_id: u32,
  num_iovas: u32,
  __reserved: u32,
  allowed_iovas: u64,
});
export const iommu_ioas_map = struct('struct iommu_ioas_map', {
  size: u32,
  flags: u32,
  ioas_id: u32,
  __reserved: u32,
  user_va: u64,
  length: u64,
  iova: u64,
});
export const iommu_ioas_map_file = struct('struct iommu_ioas_map_file', {
  size: u32,
  flags: u32,
  ioas_id: u32,
  fd: s32,
  start: u64,
  length: u64,
  iova: u64,
});
export const iommu_ioas_copy = struct('struct iommu_ioas_copy', {
  size: u32,
  flags: u32,
  dst_ioas_id: u32,
  src_ioas_id: u32,
  length: u64,
  dst_iova: u64,
  src_iova: u64,
});
export const iommu_ioas_unmap = struct('struct iommu_ioas_unmap', {
  size: u32,
  ioas_id: u32,
  iova: u64,
  length: u64,
});
export const iommu_option = struct('struct iommu_option', {
  size: u32,
  option_id: u32,
  op: u16,
  __reserved: u16,
  object_id: u32,
  val64: u64,
});
export const iommu_hwpt_alloc = struct('struct iommu_hwpt_alloc', {
  size: u32,
  flags: u32,
  dev_id: u32,
  pt_id: u32,
  out_hwpt_id: u32,
  __reserved: u32,
  data_type: u32,
  data_len: u32,
  data_uptr: u64,
  fault_id: u32,
  __reserved2: u32,
});
export const iommu_hwpt_vtd_s1 = struct('struct iommu_hwpt_vtd_s1', {
  flags: u64,
  pgtbl_addr: u64,
  addr_width: u32,
  __reserved: u32,
});
export const iommu_hwpt_arm_smmuv3 = struct('struct iommu_hwpt_arm_smmuv3', { ste: array(u64, 2) });
export const iommu_hw_info_vtd = struct('struct iommu_hw_info_vtd', {
  flags: u32,
  __reserved: u32,
  cap_reg: u64,
  ecap_reg: u64,
});
export const iommu_hw_info_arm_smmuv3 = struct('struct iommu_hw_info_arm_smmuv3', {
  flags: u32,
  __reserved: u32,
  idr: array(u32, 6),
  iidr: u32,
  aidr: u32,
});
export const iommu_hw_info = struct('struct iommu_hw_info', {
  size: u32,
  flags: u32,
  dev_id: u32,
  data_len: u32,
  data_uptr: u64,
  data_type: anonUnion({ in_data_type: u32, out_data_type: u32 }),
  out_max_pasid_log2: u8,
  __reserved: array(u8, 3),
  out_capabilities: u64,
});
export const iommu_hwpt_set_dirty_tracking = struct('struct iommu_hwpt_set_dirty_tracking', {
  size: u32,
  flags: u32,
  hwpt_id: u32,
  __reserved: u32,
});
export const iommu_hwpt_get_dirty_bitmap = struct('struct iommu_hwpt_get_dirty_bitmap', {
  size: u32,
  hwpt_id: u32,
  flags: u32,
  __reserved: u32,
  iova: u64,
  length: u64,
  page_size: u64,
  data: u64,
});
export const iommu_hwpt_vtd_s1_invalidate = struct('struct iommu_hwpt_vtd_s1_invalidate', {
  addr: u64,
  npages: u64,
  flags: u32,
  __reserved: u32,
});
export const iommu_viommu_arm_smmuv3_invalidate = struct(
  'struct iommu_viommu_arm_smmuv3_invalidate',
  { cmd: array(u64, 2) },
);
export const iommu_hwpt_invalidate = struct('struct iommu_hwpt_invalidate', {
  size: u32,
  hwpt_id: u32,
  data_uptr: u64,
  data_type: u32,
  entry_len: u32,
  entry_num: u32,
  __reserved: u32,
});
export const iommu_viommu_alloc = struct('struct iommu_viommu_alloc', {
  size: u32,
  flags: u32,
  type: u32,
  dev_id: u32,
  hwpt_id: u32,
  out_viommu_id: u32,
  data_len: u32,
  __reserved: u32,
  data_uptr: u64,
});
export const iommu_vdevice_alloc = struct('struct iommu_vdevice_alloc', {
  size: u32,
  viommu_id: u32,
  dev_id: u32,
  out_vdevice_id: u32,
  virt_id: u64,
});

export interface IovaRange {
  start: bigint;
  last: bigint;
}

export function destroy(t: Target, id: number): void {
  ioctl(
    t,
    'IOMMU_DESTROY',
    IOMMUFD.IOMMU_DESTROY,
    encode(iommu_destroy, { size: iommu_destroy.size, id }),
  );
}

export function ioasAlloc(t: Target): number {
  const buf = encode(iommu_ioas_alloc, { size: iommu_ioas_alloc.size });
  ioctl(t, 'IOMMU_IOAS_ALLOC', IOMMUFD.IOMMU_IOAS_ALLOC, buf);
  return decode(iommu_ioas_alloc, buf).out_ioas_id;
}

/** The IOVA ranges the IOAS can map (holes are reserved), and the required alignment. */
export function ioasIovaRanges(
  t: Target,
  ioasId: number,
): { ranges: IovaRange[]; alignment: bigint } {
  let capacity = 8;
  for (;;) {
    const arr = Buffer.alloc(capacity * iommu_iova_range.size);
    const buf = encode(iommu_ioas_iova_ranges, {
      size: iommu_ioas_iova_ranges.size,
      ioas_id: ioasId,
      num_iovas: capacity,
      allowed_iovas: addressOf(arr),
    });
    const ret = raw.ioctlPtr(t.fd, IOMMUFD.IOMMU_IOAS_IOVA_RANGES, buf);
    const out = decode(iommu_ioas_iova_ranges, buf);
    if (
      ret < 0 &&
      errno() === EMSGSIZE /* the kernel wrote how many it has */ &&
      out.num_iovas > capacity
    ) {
      capacity = out.num_iovas;
      continue;
    }
    check(ret, 'IOMMU_IOAS_IOVA_RANGES', t.path);
    const ranges = Array.from({ length: out.num_iovas }, (_, i) =>
      decode(iommu_iova_range, arr, i * iommu_iova_range.size),
    );
    return { ranges, alignment: out.out_iova_alignment };
  }
}

export function ioasAllowIovas(t: Target, ioasId: number, ranges: readonly IovaRange[]): void {
  const arr = Buffer.alloc(Math.max(1, ranges.length) * iommu_iova_range.size);
  ranges.forEach((r, i) => arr.set(encode(iommu_iova_range, r), i * iommu_iova_range.size));
  ioctl(
    t,
    'IOMMU_IOAS_ALLOW_IOVAS',
    IOMMUFD.IOMMU_IOAS_ALLOW_IOVAS,
    encode(iommu_ioas_allow_iovas, {
      size: iommu_ioas_allow_iovas.size,
      ioas_id: ioasId,
      num_iovas: ranges.length,
      allowed_iovas: ranges.length ? addressOf(arr) : 0n,
    }),
  );
}

const RW = K.IOMMU_IOAS_MAP_READABLE | K.IOMMU_IOAS_MAP_WRITEABLE;

/** Map user memory; with `iova` given it is fixed, otherwise the kernel picks one. Returns the IOVA. */
export function ioasMap(
  t: Target,
  ioasId: number,
  userVa: bigint,
  length: bigint,
  iova?: bigint,
  flags = RW,
): bigint {
  const fixed = iova !== undefined ? K.IOMMU_IOAS_MAP_FIXED_IOVA : 0;
  const buf = encode(iommu_ioas_map, {
    size: iommu_ioas_map.size,
    flags: flags | fixed,
    ioas_id: ioasId,
    user_va: userVa,
    length,
    iova: iova ?? 0n,
  });
  ioctl(t, 'IOMMU_IOAS_MAP', IOMMUFD.IOMMU_IOAS_MAP, buf);
  return decode(iommu_ioas_map, buf).iova;
}

/** Map a range of a file (memfd); fixed IOVA when given, kernel-chosen otherwise. Returns the IOVA. */
export function ioasMapFile(
  t: Target,
  ioasId: number,
  fd: number,
  start: bigint,
  length: bigint,
  iova?: bigint,
  flags = RW,
): bigint {
  const fixed = iova !== undefined ? K.IOMMU_IOAS_MAP_FIXED_IOVA : 0;
  const buf = encode(iommu_ioas_map_file, {
    size: iommu_ioas_map_file.size,
    flags: flags | fixed,
    ioas_id: ioasId,
    fd,
    start,
    length,
    iova: iova ?? 0n,
  });
  ioctl(t, 'IOMMU_IOAS_MAP_FILE', IOMMUFD.IOMMU_IOAS_MAP_FILE, buf);
  return decode(iommu_ioas_map_file, buf).iova;
}

export function ioasCopy(
  t: Target,
  dstIoas: number,
  srcIoas: number,
  srcIova: bigint,
  length: bigint,
  dstIova?: bigint,
  flags = RW,
): bigint {
  const fixed = dstIova !== undefined ? K.IOMMU_IOAS_MAP_FIXED_IOVA : 0;
  const buf = encode(iommu_ioas_copy, {
    size: iommu_ioas_copy.size,
    flags: flags | fixed,
    dst_ioas_id: dstIoas,
    src_ioas_id: srcIoas,
    length,
    dst_iova: dstIova ?? 0n,
    src_iova: srcIova,
  });
  ioctl(t, 'IOMMU_IOAS_COPY', IOMMUFD.IOMMU_IOAS_COPY, buf);
  return decode(iommu_ioas_copy, buf).dst_iova;
}

/** Unmap [iova, iova+length); iova 0 with length 2^64-1 unmaps everything. Returns bytes unmapped. */
export function ioasUnmap(t: Target, ioasId: number, iova: bigint, length: bigint): bigint {
  const buf = encode(iommu_ioas_unmap, {
    size: iommu_ioas_unmap.size,
    ioas_id: ioasId,
    iova,
    length,
  });
  ioctl(t, 'IOMMU_IOAS_UNMAP', IOMMUFD.IOMMU_IOAS_UNMAP, buf);
  return decode(iommu_ioas_unmap, buf).length;
}

export function option(
  t: Target,
  optionId: number,
  op: number,
  objectId: number,
  val64 = 0n,
): bigint {
  const buf = encode(iommu_option, {
    size: iommu_option.size,
    option_id: optionId,
    op,
    object_id: objectId,
    val64,
  });
  ioctl(t, 'IOMMU_OPTION', IOMMUFD.IOMMU_OPTION, buf);
  return decode(iommu_option, buf).val64;
}

/** Allocate a HWPT on a device, parented by an IOAS/HWPT/vIOMMU, with optional driver data. */
export function hwptAlloc(
  t: Target,
  a: {
    devId: number;
    ptId: number;
    flags?: number;
    dataType?: number;
    data?: Buffer;
    faultId?: number;
  },
): number {
  const buf = encode(iommu_hwpt_alloc, {
    size: iommu_hwpt_alloc.size,
    flags: a.flags ?? 0,
    dev_id: a.devId,
    pt_id: a.ptId,
    data_type: a.dataType ?? K.IOMMU_HWPT_DATA_NONE,
    data_len: a.data?.length ?? 0,
    data_uptr: a.data ? addressOf(a.data) : 0n,
    fault_id: a.faultId ?? 0,
  });
  ioctl(t, 'IOMMU_HWPT_ALLOC', IOMMUFD.IOMMU_HWPT_ALLOC, buf);
  return decode(iommu_hwpt_alloc, buf).out_hwpt_id;
}

export interface HwInfo {
  type: number;
  data: Buffer;
  capabilities: bigint;
  maxPasidLog2: number;
}
export function getHwInfo(t: Target, devId: number, dataLen = 256): HwInfo {
  const data = Buffer.alloc(dataLen);
  const buf = encode(iommu_hw_info, {
    size: iommu_hw_info.size,
    dev_id: devId,
    data_len: dataLen,
    data_uptr: addressOf(data),
  });
  ioctl(t, 'IOMMU_GET_HW_INFO', IOMMUFD.IOMMU_GET_HW_INFO, buf);
  const out = decode(iommu_hw_info, buf);
  return {
    type: out.data_type.out_data_type,
    data: data.subarray(0, out.data_len),
    capabilities: out.out_capabilities,
    maxPasidLog2: out.out_max_pasid_log2,
  };
}

export function hwptSetDirtyTracking(t: Target, hwptId: number, enable: boolean): void {
  ioctl(
    t,
    'IOMMU_HWPT_SET_DIRTY_TRACKING',
    IOMMUFD.IOMMU_HWPT_SET_DIRTY_TRACKING,
    encode(iommu_hwpt_set_dirty_tracking, {
      size: iommu_hwpt_set_dirty_tracking.size,
      hwpt_id: hwptId,
      flags: enable ? K.IOMMU_HWPT_DIRTY_TRACKING_ENABLE : 0,
    }),
  );
}

/** Fill `bitmap` (one bit per page_size page from iova) with the dirty state. */
export function hwptGetDirtyBitmap(
  t: Target,
  hwptId: number,
  iova: bigint,
  length: bigint,
  pageSize: bigint,
  bitmap: Buffer,
  flags = 0,
): void {
  ioctl(
    t,
    'IOMMU_HWPT_GET_DIRTY_BITMAP',
    IOMMUFD.IOMMU_HWPT_GET_DIRTY_BITMAP,
    encode(iommu_hwpt_get_dirty_bitmap, {
      size: iommu_hwpt_get_dirty_bitmap.size,
      hwpt_id: hwptId,
      flags,
      iova,
      length,
      page_size: pageSize,
      data: addressOf(bitmap),
    }),
  );
}

/**
 * Forward a batch of invalidation entries (`entries` holds entryNum × entryLen bytes) to a HWPT
 * or vIOMMU. Returns how many entries the kernel consumed; on failure the SysError carries it too.
 */
export function hwptInvalidate(
  t: Target,
  hwptId: number,
  dataType: number,
  entryLen: number,
  entries: Buffer,
): number {
  const entryNum = entryLen ? Math.floor(entries.length / entryLen) : 0;
  const buf = encode(iommu_hwpt_invalidate, {
    size: iommu_hwpt_invalidate.size,
    hwpt_id: hwptId,
    data_uptr: entryNum ? addressOf(entries) : 0n,
    data_type: dataType,
    entry_len: entryLen,
    entry_num: entryNum,
  });
  const ret = raw.ioctlPtr(t.fd, IOMMUFD.IOMMU_HWPT_INVALIDATE, buf);
  const done = decode(iommu_hwpt_invalidate, buf).entry_num;
  if (ret < 0)
    throw Object.assign(
      new SysError(
        'IOMMU_HWPT_INVALIDATE',
        t.path,
        errno(),
        `${done} of ${entryNum} entries consumed`,
      ),
      { consumed: done },
    );
  return done;
}

export function viommuAlloc(
  t: Target,
  a: { devId: number; hwptId: number; type: number; data?: Buffer },
): number {
  const buf = encode(iommu_viommu_alloc, {
    size: iommu_viommu_alloc.size,
    type: a.type,
    dev_id: a.devId,
    hwpt_id: a.hwptId,
    data_len: a.data?.length ?? 0,
    data_uptr: a.data ? addressOf(a.data) : 0n,
  });
  ioctl(t, 'IOMMU_VIOMMU_ALLOC', IOMMUFD.IOMMU_VIOMMU_ALLOC, buf);
  return decode(iommu_viommu_alloc, buf).out_viommu_id;
}

export function vdeviceAlloc(t: Target, viommuId: number, devId: number, virtId: bigint): number {
  const buf = encode(iommu_vdevice_alloc, {
    size: iommu_vdevice_alloc.size,
    viommu_id: viommuId,
    dev_id: devId,
    virt_id: virtId,
  });
  ioctl(t, 'IOMMU_VDEVICE_ALLOC', IOMMUFD.IOMMU_VDEVICE_ALLOC, buf);
  return decode(iommu_vdevice_alloc, buf).out_vdevice_id;
}
