// Opening the kernel objects a device needs, with errors that name the fix: the VFIO cdev
// (/dev/vfio/devices/vfioN), the legacy group (/dev/vfio/<group>) and /dev/iommu.
import { existsSync } from 'node:fs';
import { C } from '../../native/libc.js';
import { SysError } from '../../native/errno.js';
import * as vfio from '../../native/vfio.js';
import { OwnedFd } from '../fd.js';
import { bindHint, cdevOf, driverOf, iommuGroupOf, sysfsDir } from '../host/pci-sysfs.js';

export const DEV_IOMMU = '/dev/iommu';
export const DEV_VFIO_CONTAINER = '/dev/vfio/vfio';

/** Throws unless `bdf` exists and is bound to vfio-pci. */
export function requireVfioPci(bdf: string): void {
  sysfsDir(bdf);
  const driver = driverOf(bdf);
  if (driver !== 'vfio-pci') throw new Error(`${bdf} is not bound to vfio-pci (driver: ${driver ?? 'none'}); ${bindHint(bdf)}`);
}

function openOrExplain(path: string, missing: string): OwnedFd {
  if (!existsSync(path)) throw new Error(`${path} does not exist: ${missing}`);
  try {
    return OwnedFd.open(path, C.O_RDWR);
  } catch (e) {
    if (e instanceof SysError && (e.code === 'EACCES' || e.code === 'EPERM')) {
      throw new SysError('open', path, e.errno, 'run as root, or have a privileged helper pass the fd in (fd=<n>)');
    }
    if (e instanceof SysError && e.code === 'EBUSY') throw new SysError('open', path, e.errno, 'another process (a VMM, or a second runtime) holds this device');
    throw e;
  }
}

/** Open the function's VFIO cdev node. */
export function openCdev(bdf: string): OwnedFd {
  requireVfioPci(bdf);
  const cdev = cdevOf(bdf);
  if (!cdev) throw new Error(`${bdf} has no VFIO cdev node (no vfio-dev/ in sysfs): the kernel lacks CONFIG_VFIO_DEVICE_CDEV; use the legacy path (omit iommu=)`);
  return openOrExplain(cdev, 'the VFIO cdev node is missing (is devtmpfs mounted on /dev?)');
}

/** Open the function's legacy VFIO group, and check it is viable (every member bound to vfio-pci). */
export function openGroup(bdf: string): { group: OwnedFd; groupId: number } {
  requireVfioPci(bdf);
  const groupId = iommuGroupOf(bdf);
  if (groupId === undefined) throw new Error(`${bdf} has no IOMMU group: enable the IOMMU (intel_iommu=on or amd_iommu=on on the kernel command line)`);
  const group = openOrExplain(`/dev/vfio/${groupId}`, 'the kernel lacks CONFIG_VFIO_GROUP, or the group is not bound to vfio-pci');
  const flags = vfio.groupGetStatus(group);
  if (!(flags & vfio.VFIO_C.VFIO_GROUP_FLAGS_VIABLE)) {
    group.close();
    throw new Error(`IOMMU group ${groupId} of ${bdf} is not viable: bind every device in /sys/kernel/iommu_groups/${groupId}/devices to vfio-pci`);
  }
  return { group, groupId };
}

export function openIommufd(path = DEV_IOMMU): OwnedFd {
  return openOrExplain(path, 'the kernel lacks iommufd (CONFIG_IOMMUFD=y, or `modprobe iommufd`)');
}

export function openContainer(): OwnedFd {
  return openOrExplain(DEV_VFIO_CONTAINER, 'the kernel lacks CONFIG_VFIO_CONTAINER (or `modprobe vfio`)');
}
