// VFIO uAPI (<linux/vfio.h>): container, group and device ioctls, their structs and flags,
// and one thin wrapper per ioctl (encode, call, decode, throw SysError). No policy here.
import { _IO, defineConstants, defineIoctls } from './ioctl.js';
import {
  anonUnion,
  decode,
  encode,
  encodeInto,
  flex,
  type Init,
  offsetOf,
  type StructType,
  s32,
  struct,
  u8,
  u16,
  u32,
  u64,
  type Value,
} from './layout.js';
import { check, ioctl, ioctlInt, raw, type Target } from './libc.js';

const VFIO_TYPE = ';';
const VFIO_BASE = 100;
const vfio = (n: number): number => _IO(VFIO_TYPE, VFIO_BASE + n);

export const VFIO = defineIoctls('linux/vfio.h', {
  VFIO_GET_API_VERSION: vfio(0),
  VFIO_CHECK_EXTENSION: vfio(1),
  VFIO_SET_IOMMU: vfio(2),
  VFIO_GROUP_GET_STATUS: vfio(3),
  VFIO_GROUP_SET_CONTAINER: vfio(4),
  VFIO_GROUP_UNSET_CONTAINER: vfio(5),
  VFIO_GROUP_GET_DEVICE_FD: vfio(6),
  VFIO_DEVICE_GET_INFO: vfio(7),
  VFIO_DEVICE_GET_REGION_INFO: vfio(8),
  VFIO_DEVICE_GET_IRQ_INFO: vfio(9),
  VFIO_DEVICE_SET_IRQS: vfio(10),
  VFIO_DEVICE_RESET: vfio(11),
  VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: vfio(12),
  VFIO_DEVICE_PCI_HOT_RESET: vfio(13),
  VFIO_DEVICE_FEATURE: vfio(17),
  VFIO_DEVICE_BIND_IOMMUFD: vfio(18),
  VFIO_DEVICE_ATTACH_IOMMUFD_PT: vfio(19),
  VFIO_DEVICE_DETACH_IOMMUFD_PT: vfio(20),
  VFIO_IOMMU_GET_INFO: vfio(12),
  VFIO_IOMMU_MAP_DMA: vfio(13),
  VFIO_IOMMU_UNMAP_DMA: vfio(14),
});

export const VFIO_C = defineConstants('linux/vfio.h', {
  VFIO_API_VERSION: 0,
  VFIO_TYPE1_IOMMU: 1,
  VFIO_TYPE1v2_IOMMU: 3,
  VFIO_GROUP_FLAGS_VIABLE: 1 << 0,
  VFIO_GROUP_FLAGS_CONTAINER_SET: 1 << 1,
  VFIO_DEVICE_FLAGS_RESET: 1 << 0,
  VFIO_DEVICE_FLAGS_PCI: 1 << 1,
  VFIO_DEVICE_FLAGS_CAPS: 1 << 7,
  VFIO_REGION_INFO_FLAG_READ: 1 << 0,
  VFIO_REGION_INFO_FLAG_WRITE: 1 << 1,
  VFIO_REGION_INFO_FLAG_MMAP: 1 << 2,
  VFIO_REGION_INFO_FLAG_CAPS: 1 << 3,
  VFIO_REGION_INFO_CAP_SPARSE_MMAP: 1,
  VFIO_REGION_INFO_CAP_TYPE: 2,
  VFIO_REGION_INFO_CAP_MSIX_MAPPABLE: 3,
  VFIO_IRQ_INFO_EVENTFD: 1 << 0,
  VFIO_IRQ_INFO_MASKABLE: 1 << 1,
  VFIO_IRQ_INFO_AUTOMASKED: 1 << 2,
  VFIO_IRQ_INFO_NORESIZE: 1 << 3,
  VFIO_IRQ_SET_DATA_NONE: 1 << 0,
  VFIO_IRQ_SET_DATA_BOOL: 1 << 1,
  VFIO_IRQ_SET_DATA_EVENTFD: 1 << 2,
  VFIO_IRQ_SET_ACTION_MASK: 1 << 3,
  VFIO_IRQ_SET_ACTION_UNMASK: 1 << 4,
  VFIO_IRQ_SET_ACTION_TRIGGER: 1 << 5,
  VFIO_PCI_BAR0_REGION_INDEX: 0,
  VFIO_PCI_ROM_REGION_INDEX: 6,
  VFIO_PCI_CONFIG_REGION_INDEX: 7,
  VFIO_PCI_VGA_REGION_INDEX: 8,
  VFIO_PCI_NUM_REGIONS: 9,
  VFIO_PCI_INTX_IRQ_INDEX: 0,
  VFIO_PCI_MSI_IRQ_INDEX: 1,
  VFIO_PCI_MSIX_IRQ_INDEX: 2,
  VFIO_PCI_ERR_IRQ_INDEX: 3,
  VFIO_PCI_REQ_IRQ_INDEX: 4,
  VFIO_PCI_NUM_IRQS: 5,
  VFIO_PCI_HOT_RESET_FLAG_DEV_ID: 1 << 0,
  VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED: 1 << 1,
  VFIO_DEVICE_BIND_FLAG_TOKEN: 1 << 0,
  VFIO_DEVICE_FEATURE_MASK: 0xffff,
  VFIO_DEVICE_FEATURE_GET: 1 << 16,
  VFIO_DEVICE_FEATURE_SET: 1 << 17,
  VFIO_DEVICE_FEATURE_PROBE: 1 << 18,
  VFIO_DEVICE_FEATURE_DMA_BUF: 11,
  VFIO_DMA_MAP_FLAG_READ: 1 << 0,
  VFIO_DMA_MAP_FLAG_WRITE: 1 << 1,
  VFIO_DMA_UNMAP_FLAG_ALL: 1 << 1,
  VFIO_IOMMU_INFO_PGSIZES: 1 << 0,
  VFIO_IOMMU_INFO_CAPS: 1 << 1,
  VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE: 1,
  VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL: 3,
});
const K = VFIO_C;

export const vfio_info_cap_header = struct('struct vfio_info_cap_header', {
  id: u16,
  version: u16,
  next: u32,
});
export const vfio_group_status = struct('struct vfio_group_status', { argsz: u32, flags: u32 });
export const vfio_device_info = struct('struct vfio_device_info', {
  argsz: u32,
  flags: u32,
  num_regions: u32,
  num_irqs: u32,
  cap_offset: u32,
  pad: u32,
});
export const vfio_region_info = struct('struct vfio_region_info', {
  argsz: u32,
  flags: u32,
  index: u32,
  cap_offset: u32,
  size: u64,
  offset: u64,
});
export const vfio_region_sparse_mmap_area = struct('struct vfio_region_sparse_mmap_area', {
  offset: u64,
  size: u64,
});
export const vfio_region_info_cap_sparse_mmap = struct('struct vfio_region_info_cap_sparse_mmap', {
  header: vfio_info_cap_header,
  nr_areas: u32,
  reserved: u32,
  areas: flex(vfio_region_sparse_mmap_area),
});
export const vfio_region_info_cap_type = struct('struct vfio_region_info_cap_type', {
  header: vfio_info_cap_header,
  type: u32,
  subtype: u32,
});
export const vfio_irq_info = struct('struct vfio_irq_info', {
  argsz: u32,
  flags: u32,
  index: u32,
  count: u32,
});
export const vfio_irq_set = struct('struct vfio_irq_set', {
  argsz: u32,
  flags: u32,
  index: u32,
  start: u32,
  count: u32,
  data: flex(u8),
});
export const vfio_pci_dependent_device = struct('struct vfio_pci_dependent_device', {
  id: anonUnion({ group_id: u32, devid: u32 }),
  segment: u16,
  bus: u8,
  devfn: u8,
});
export const vfio_pci_hot_reset_info = struct('struct vfio_pci_hot_reset_info', {
  argsz: u32,
  flags: u32,
  count: u32,
  devices: flex(vfio_pci_dependent_device),
});
export const vfio_pci_hot_reset = struct('struct vfio_pci_hot_reset', {
  argsz: u32,
  flags: u32,
  count: u32,
  group_fds: flex(s32),
});
export const vfio_device_bind_iommufd = struct('struct vfio_device_bind_iommufd', {
  argsz: u32,
  flags: u32,
  iommufd: s32,
  out_devid: u32,
  token_uuid_ptr: u64,
});
export const vfio_device_attach_iommufd_pt = struct('struct vfio_device_attach_iommufd_pt', {
  argsz: u32,
  flags: u32,
  pt_id: u32,
  pasid: u32,
});
export const vfio_device_detach_iommufd_pt = struct('struct vfio_device_detach_iommufd_pt', {
  argsz: u32,
  flags: u32,
  pasid: u32,
});
export const vfio_device_feature = struct('struct vfio_device_feature', {
  argsz: u32,
  flags: u32,
  data: flex(u8),
});
export const vfio_region_dma_range = struct('struct vfio_region_dma_range', {
  offset: u64,
  length: u64,
});
export const vfio_device_feature_dma_buf = struct('struct vfio_device_feature_dma_buf', {
  region_index: u32,
  open_flags: u32,
  flags: u32,
  nr_ranges: u32,
  dma_ranges: flex(vfio_region_dma_range),
});
export const vfio_iommu_type1_info = struct('struct vfio_iommu_type1_info', {
  argsz: u32,
  flags: u32,
  iova_pgsizes: u64,
  cap_offset: u32,
  pad: u32,
});
export const vfio_iova_range = struct('struct vfio_iova_range', { start: u64, end: u64 });
export const vfio_iommu_type1_info_cap_iova_range = struct(
  'struct vfio_iommu_type1_info_cap_iova_range',
  {
    header: vfio_info_cap_header,
    nr_iovas: u32,
    reserved: u32,
    iova_ranges: flex(vfio_iova_range),
  },
);
export const vfio_iommu_type1_info_dma_avail = struct('struct vfio_iommu_type1_info_dma_avail', {
  header: vfio_info_cap_header,
  avail: u32,
});
export const vfio_iommu_type1_dma_map = struct('struct vfio_iommu_type1_dma_map', {
  argsz: u32,
  flags: u32,
  vaddr: u64,
  iova: u64,
  size: u64,
});
export const vfio_iommu_type1_dma_unmap = struct('struct vfio_iommu_type1_dma_unmap', {
  argsz: u32,
  flags: u32,
  iova: u64,
  size: u64,
  data: flex(u8),
});

export type RegionInfo = Value<typeof vfio_region_info>;
export type IrqInfo = Value<typeof vfio_irq_info>;
export interface InfoCap {
  id: number;
  version: number;
  offset: number;
}

/** Walk a VFIO info capability chain inside `buf` (offsets are from the start of the info struct). */
export function capChain(buf: Buffer, first: number): InfoCap[] {
  const caps: InfoCap[] = [];
  const seen = new Set<number>();
  for (let off = first; off !== 0; ) {
    if (seen.has(off) || off + vfio_info_cap_header.size > buf.length)
      throw new Error(`VFIO capability chain is malformed at offset ${off}`);
    seen.add(off);
    const h = decode(vfio_info_cap_header, buf, off);
    caps.push({ id: h.id, version: h.version, offset: off });
    off = h.next;
  }
  return caps;
}

/** Call an argsz-sized info ioctl, growing the buffer when the kernel asks for more (capabilities). */
function infoIoctl<V extends { argsz: number }>(
  t: Target,
  name: string,
  req: number,
  type: StructType<V>,
  value: Init<V>,
): Buffer {
  let buf = encode(type, { ...value, argsz: type.size } as Init<V>);
  ioctl(t, name, req, buf);
  const want = buf.readUInt32LE(0);
  if (want > buf.length) {
    buf = encode(type, { ...value, argsz: want } as Init<V>, want - type.size);
    ioctl(t, name, req, buf);
  }
  return buf;
}

// ---- container ----
export const getApiVersion = (t: Target): number =>
  ioctlInt(t, 'VFIO_GET_API_VERSION', VFIO.VFIO_GET_API_VERSION, 0);
export const checkExtension = (t: Target, ext: number): number =>
  ioctlInt(t, 'VFIO_CHECK_EXTENSION', VFIO.VFIO_CHECK_EXTENSION, ext);
export const setIommu = (t: Target, type: number): void => {
  ioctlInt(t, 'VFIO_SET_IOMMU', VFIO.VFIO_SET_IOMMU, type);
};

export interface IommuType1Info {
  flags: number;
  iovaPgsizes: bigint;
  iovaRanges: { start: bigint; end: bigint }[];
  dmaAvail?: number;
}
export function iommuGetInfo(t: Target): IommuType1Info {
  const buf = infoIoctl(
    t,
    'VFIO_IOMMU_GET_INFO',
    VFIO.VFIO_IOMMU_GET_INFO,
    vfio_iommu_type1_info,
    {},
  );
  const info = decode(vfio_iommu_type1_info, buf);
  const out: IommuType1Info = { flags: info.flags, iovaPgsizes: info.iova_pgsizes, iovaRanges: [] };
  if (info.flags & K.VFIO_IOMMU_INFO_CAPS) {
    for (const cap of capChain(buf, info.cap_offset)) {
      if (cap.id === K.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE) {
        const c = decode(vfio_iommu_type1_info_cap_iova_range, buf, cap.offset);
        const base = cap.offset + offsetOf(vfio_iommu_type1_info_cap_iova_range, 'iova_ranges');
        for (let i = 0; i < c.nr_iovas; i++)
          out.iovaRanges.push(decode(vfio_iova_range, buf, base + i * vfio_iova_range.size));
      } else if (cap.id === K.VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL) {
        out.dmaAvail = decode(vfio_iommu_type1_info_dma_avail, buf, cap.offset).avail;
      }
    }
  }
  return out;
}

export function mapDma(
  t: Target,
  vaddr: bigint,
  iova: bigint,
  size: bigint,
  flags = K.VFIO_DMA_MAP_FLAG_READ | K.VFIO_DMA_MAP_FLAG_WRITE,
): void {
  ioctl(
    t,
    'VFIO_IOMMU_MAP_DMA',
    VFIO.VFIO_IOMMU_MAP_DMA,
    encode(vfio_iommu_type1_dma_map, {
      argsz: vfio_iommu_type1_dma_map.size,
      flags,
      vaddr,
      iova,
      size,
    }),
  );
}

/** Returns the number of bytes the kernel unmapped. */
export function unmapDma(t: Target, iova: bigint, size: bigint, flags = 0): bigint {
  const buf = encode(vfio_iommu_type1_dma_unmap, {
    argsz: vfio_iommu_type1_dma_unmap.size,
    flags,
    iova,
    size,
  });
  ioctl(t, 'VFIO_IOMMU_UNMAP_DMA', VFIO.VFIO_IOMMU_UNMAP_DMA, buf);
  return decode(vfio_iommu_type1_dma_unmap, buf).size;
}

// ---- group ----
export function groupGetStatus(t: Target): number {
  const buf = encode(vfio_group_status, { argsz: vfio_group_status.size });
  ioctl(t, 'VFIO_GROUP_GET_STATUS', VFIO.VFIO_GROUP_GET_STATUS, buf);
  return decode(vfio_group_status, buf).flags;
}

export function groupSetContainer(t: Target, containerFd: number): void {
  const arg = Buffer.alloc(4);
  arg.writeInt32LE(containerFd);
  ioctl(t, 'VFIO_GROUP_SET_CONTAINER', VFIO.VFIO_GROUP_SET_CONTAINER, arg);
}

export const groupUnsetContainer = (t: Target): void => {
  ioctl(t, 'VFIO_GROUP_UNSET_CONTAINER', VFIO.VFIO_GROUP_UNSET_CONTAINER, null);
};

/** Returns a new device fd for the device named `bdf` in this group. */
export function groupGetDeviceFd(t: Target, bdf: string): number {
  return check(
    raw.ioctlStr(t.fd, VFIO.VFIO_GROUP_GET_DEVICE_FD, bdf),
    'VFIO_GROUP_GET_DEVICE_FD',
    `${t.path} (${bdf})`,
  );
}

// ---- device ----
export function deviceGetInfo(t: Target): Value<typeof vfio_device_info> {
  return decode(
    vfio_device_info,
    infoIoctl(t, 'VFIO_DEVICE_GET_INFO', VFIO.VFIO_DEVICE_GET_INFO, vfio_device_info, {}),
  );
}

export interface RegionInfoWithCaps extends RegionInfo {
  caps: InfoCap[];
  sparseMmap?: { offset: bigint; size: bigint }[];
  msixMappable?: boolean;
  type?: { type: number; subtype: number };
}

export function deviceGetRegionInfo(t: Target, index: number): RegionInfoWithCaps {
  const buf = infoIoctl(
    t,
    'VFIO_DEVICE_GET_REGION_INFO',
    VFIO.VFIO_DEVICE_GET_REGION_INFO,
    vfio_region_info,
    { index },
  );
  const info = decode(vfio_region_info, buf);
  const caps =
    info.flags & K.VFIO_REGION_INFO_FLAG_CAPS && info.cap_offset
      ? capChain(buf, info.cap_offset)
      : [];
  const out: RegionInfoWithCaps = { ...info, caps };
  for (const cap of caps) {
    if (cap.id === K.VFIO_REGION_INFO_CAP_SPARSE_MMAP) {
      const c = decode(vfio_region_info_cap_sparse_mmap, buf, cap.offset);
      const base = cap.offset + offsetOf(vfio_region_info_cap_sparse_mmap, 'areas');
      out.sparseMmap = Array.from({ length: c.nr_areas }, (_, i) =>
        decode(vfio_region_sparse_mmap_area, buf, base + i * vfio_region_sparse_mmap_area.size),
      );
    } else if (cap.id === K.VFIO_REGION_INFO_CAP_MSIX_MAPPABLE) {
      out.msixMappable = true;
    } else if (cap.id === K.VFIO_REGION_INFO_CAP_TYPE) {
      const c = decode(vfio_region_info_cap_type, buf, cap.offset);
      out.type = { type: c.type, subtype: c.subtype };
    }
  }
  return out;
}

export function deviceGetIrqInfo(t: Target, index: number): IrqInfo {
  const buf = encode(vfio_irq_info, { argsz: vfio_irq_info.size, index });
  ioctl(t, 'VFIO_DEVICE_GET_IRQ_INFO', VFIO.VFIO_DEVICE_GET_IRQ_INFO, buf);
  return decode(vfio_irq_info, buf);
}

/**
 * VFIO_DEVICE_SET_IRQS. `data`: an array of eventfds (-1 unassigns one) with DATA_EVENTFD,
 * an array of booleans with DATA_BOOL, or nothing with DATA_NONE.
 */
export function deviceSetIrqs(
  t: Target,
  index: number,
  start: number,
  count: number,
  flags: number,
  data?: readonly number[] | readonly boolean[],
): void {
  const per = flags & K.VFIO_IRQ_SET_DATA_EVENTFD ? 4 : flags & K.VFIO_IRQ_SET_DATA_BOOL ? 1 : 0;
  const extra = per * (data?.length ?? 0);
  const buf = encode(
    vfio_irq_set,
    { argsz: vfio_irq_set.size + extra, flags, index, start, count },
    extra,
  );
  const base = offsetOf(vfio_irq_set, 'data');
  data?.forEach((v, i) =>
    per === 4 ? buf.writeInt32LE(Number(v), base + 4 * i) : buf.writeUInt8(v ? 1 : 0, base + i),
  );
  ioctl(t, 'VFIO_DEVICE_SET_IRQS', VFIO.VFIO_DEVICE_SET_IRQS, buf);
}

export const deviceReset = (t: Target): void => {
  ioctl(t, 'VFIO_DEVICE_RESET', VFIO.VFIO_DEVICE_RESET, null);
};

export interface DependentDevice {
  id: number;
  segment: number;
  bus: number;
  devfn: number;
}
export function deviceGetHotResetInfo(t: Target): { flags: number; devices: DependentDevice[] } {
  let buf = encode(vfio_pci_hot_reset_info, { argsz: vfio_pci_hot_reset_info.size });
  const first = raw.ioctlPtr(t.fd, VFIO.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, buf);
  const count = decode(vfio_pci_hot_reset_info, buf).count;
  if (first < 0 && count === 0) check(first, 'VFIO_DEVICE_GET_PCI_HOT_RESET_INFO', t.path);
  const extra = count * vfio_pci_dependent_device.size;
  buf = encode(
    vfio_pci_hot_reset_info,
    { argsz: vfio_pci_hot_reset_info.size + extra, count },
    extra,
  );
  ioctl(t, 'VFIO_DEVICE_GET_PCI_HOT_RESET_INFO', VFIO.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, buf);
  const info = decode(vfio_pci_hot_reset_info, buf);
  const base = offsetOf(vfio_pci_hot_reset_info, 'devices');
  const devices = Array.from({ length: info.count }, (_, i) => {
    const d = decode(vfio_pci_dependent_device, buf, base + i * vfio_pci_dependent_device.size);
    return { id: d.id.group_id, segment: d.segment, bus: d.bus, devfn: d.devfn };
  });
  return { flags: info.flags, devices };
}

/** Hot reset: group fds (legacy), or an empty list with the device bound to iommufd (cdev). */
export function devicePciHotReset(t: Target, groupFds: readonly number[]): void {
  const extra = 4 * groupFds.length;
  const buf = encode(
    vfio_pci_hot_reset,
    { argsz: vfio_pci_hot_reset.size + extra, count: groupFds.length },
    extra,
  );
  groupFds.forEach((fd, i) => buf.writeInt32LE(fd, vfio_pci_hot_reset.size + 4 * i));
  ioctl(t, 'VFIO_DEVICE_PCI_HOT_RESET', VFIO.VFIO_DEVICE_PCI_HOT_RESET, buf);
}

/** Bind a cdev device to an iommufd; returns the device id iommufd gave it. */
export function deviceBindIommufd(t: Target, iommufd: number): number {
  const buf = encode(vfio_device_bind_iommufd, { argsz: vfio_device_bind_iommufd.size, iommufd });
  ioctl(t, 'VFIO_DEVICE_BIND_IOMMUFD', VFIO.VFIO_DEVICE_BIND_IOMMUFD, buf);
  return decode(vfio_device_bind_iommufd, buf).out_devid;
}

/** Attach to an IOAS or HWPT; returns the pt id the kernel reports (it may substitute a HWPT). */
export function deviceAttachIommufdPt(t: Target, ptId: number): number {
  const buf = encode(vfio_device_attach_iommufd_pt, {
    argsz: vfio_device_attach_iommufd_pt.size,
    pt_id: ptId,
  });
  ioctl(t, 'VFIO_DEVICE_ATTACH_IOMMUFD_PT', VFIO.VFIO_DEVICE_ATTACH_IOMMUFD_PT, buf);
  return decode(vfio_device_attach_iommufd_pt, buf).pt_id;
}

export function deviceDetachIommufdPt(t: Target): void {
  ioctl(
    t,
    'VFIO_DEVICE_DETACH_IOMMUFD_PT',
    VFIO.VFIO_DEVICE_DETACH_IOMMUFD_PT,
    encode(vfio_device_detach_iommufd_pt, { argsz: vfio_device_detach_iommufd_pt.size }),
  );
}

// ---- device features ----
/** Whether the device supports `feature` for `ops` (GET and/or SET): 0, or throws (ENOTTY: unknown). */
export function deviceFeatureProbe(t: Target, feature: number, ops: number): void {
  const buf = encode(vfio_device_feature, {
    argsz: vfio_device_feature.size,
    flags: feature | ops | K.VFIO_DEVICE_FEATURE_PROBE,
  });
  ioctl(t, 'VFIO_DEVICE_FEATURE', VFIO.VFIO_DEVICE_FEATURE, buf);
}

/**
 * VFIO_DEVICE_FEATURE_DMA_BUF: export `ranges` (byte offset and length, page-aligned) of BAR
 * `bar` as one dma-buf; returns its fd (the caller owns it). `openFlags` as for open(2).
 */
export function deviceFeatureDmaBuf(
  t: Target,
  bar: number,
  ranges: readonly { offset: bigint; length: bigint }[],
  openFlags: number,
): number {
  const head = vfio_device_feature.size,
    body = vfio_device_feature_dma_buf.size,
    each = vfio_region_dma_range.size;
  const payload = body + ranges.length * each;
  const buf = encode(
    vfio_device_feature,
    {
      argsz: head + payload,
      flags: K.VFIO_DEVICE_FEATURE_DMA_BUF | K.VFIO_DEVICE_FEATURE_GET,
    },
    payload,
  );
  encodeInto(
    vfio_device_feature_dma_buf,
    buf,
    { region_index: bar, open_flags: openFlags, flags: 0, nr_ranges: ranges.length },
    head,
  );
  ranges.forEach((r, i) => {
    encodeInto(vfio_region_dma_range, buf, r, head + body + i * each);
  });
  return ioctl(t, 'VFIO_DEVICE_FEATURE(DMA_BUF)', VFIO.VFIO_DEVICE_FEATURE, buf);
}
