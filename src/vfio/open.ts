// Opening the kernel objects a device needs, with errors that name the fix: the VFIO cdev
// (/dev/vfio/devices/vfioN), the legacy group (/dev/vfio/<group>) and /dev/iommu.
import { existsSync } from 'node:fs';
import { SysError } from '../../native/errno.js';
import { C } from '../../native/libc.js';
import * as vfio from '../../native/vfio.js';
import { HostSetupError } from '../errors.js';
import { OwnedFd } from '../fd.js';
import { bindHint, cdevOf, driverOf, iommuGroupOf, sysfsDir } from '../platform/pci-sysfs.js';

export const DEV_IOMMU = '/dev/iommu';
export const DEV_VFIO_CONTAINER = '/dev/vfio/vfio';

/** Throws unless `bdf` exists and is bound to vfio-pci. */
export function requireVfioPci(bdf: string): void {
  sysfsDir(bdf);
  const driver = driverOf(bdf);
  if (driver !== 'vfio-pci')
    throw new HostSetupError(
      `${bdf} is not bound to vfio-pci (driver: ${driver ?? 'none'}); ${bindHint(bdf)}`,
      bdf,
    );
}

/** What a node is, for naming the fix of a failed open: who may pass it in, and as what. */
interface NodeKind {
  readonly missing: string;
  /** The option a pre-opened fd of this node goes in; none for the container, which has no such option. */
  readonly passAs?: string;
  readonly group?: boolean;
  readonly bdf?: string | undefined;
}

/** The fix for each errno an open of a VFIO or iommufd node fails with (the runtime adds the device's address). */
function openHint(path: string, code: string, kind: NodeKind): string | undefined {
  switch (code) {
    case 'EACCES':
    case 'EPERM':
      return (
        `this user may not open ${path}: give it access (a udev rule or chown, as libvirt does), run as root, or ` +
        (kind.passAs
          ? `have a privileged helper open it and pass the fd in (${kind.passAs})`
          : 'use iommufd (iommu=<id>), whose fds a privileged helper can pass in')
      );
    case 'EBUSY':
      return kind.group
        ? `${path} is in use: another process has the group open (a VMM or a second runtime on the legacy path), or a device of the group is bound to an iommufd through its cdev; \`fuser -v ${path} /dev/vfio/devices/*\` names the holder: stop it, or have it pass this process its fds (${kind.passAs})`
        : `another process holds ${path} (\`fuser -v ${path}\` names it): stop it${kind.passAs ? `, or have it pass this process its fds (${kind.passAs})` : ''}`;
    case 'ENODEV':
    case 'ENXIO':
      return `the device behind ${path} is gone (unplugged, or unbound from vfio-pci since it was listed): see \`vfio-runtime devices\`, and bind it to vfio-pci again`;
    case 'ENOENT':
      return `${path} vanished while opening it: ${kind.missing}`;
    default:
      return undefined;
  }
}

function openOrExplain(path: string, kind: NodeKind): OwnedFd {
  if (!existsSync(path))
    throw new HostSetupError(`${path} does not exist: ${kind.missing}`, kind.bdf);
  try {
    return OwnedFd.open(path, C.O_RDWR);
  } catch (e) {
    const hint = e instanceof SysError ? openHint(path, e.code, kind) : undefined;
    throw hint && e instanceof SysError ? new SysError('open', path, e.errno, hint) : e;
  }
}

/** Open the function's VFIO cdev node. */
export function openCdev(bdf: string): OwnedFd {
  requireVfioPci(bdf);
  const cdev = cdevOf(bdf);
  if (!cdev)
    throw new HostSetupError(
      `${bdf} has no VFIO cdev node (no vfio-dev/ in sysfs): the kernel lacks CONFIG_VFIO_DEVICE_CDEV; use the legacy path (omit iommu=)`,
      bdf,
    );
  return openOrExplain(cdev, {
    missing: 'the VFIO cdev node is missing (is devtmpfs mounted on /dev?)',
    passAs: 'fd=<n> with iommu=<id>',
    bdf,
  });
}

/** Open the function's legacy VFIO group, and check it is viable (every member bound to vfio-pci). */
export function openGroup(bdf: string): { group: OwnedFd; groupId: number } {
  requireVfioPci(bdf);
  const groupId = iommuGroupOf(bdf);
  if (groupId === undefined)
    throw new HostSetupError(
      `${bdf} has no IOMMU group: enable the IOMMU (intel_iommu=on or amd_iommu=on on the kernel command line)`,
      bdf,
    );
  const group = openOrExplain(`/dev/vfio/${groupId}`, {
    missing: 'the kernel lacks CONFIG_VFIO_GROUP, or the group is not bound to vfio-pci',
    passAs: 'group_fd=<n>',
    group: true,
    bdf,
  });
  const flags = vfio.groupGetStatus(group);
  if (!(flags & vfio.VFIO_C.VFIO_GROUP_FLAGS_VIABLE)) {
    group.close();
    throw new HostSetupError(
      `IOMMU group ${groupId} of ${bdf} is not viable: bind every device in /sys/kernel/iommu_groups/${groupId}/devices to vfio-pci`,
      bdf,
    );
  }
  return { group, groupId };
}

export function openIommufd(path = DEV_IOMMU): OwnedFd {
  return openOrExplain(path, {
    missing: 'the kernel lacks iommufd (CONFIG_IOMMUFD=y, or `modprobe iommufd`)',
    passAs: 'iommufd_fd=<n> on --iommu',
  });
}

export function openContainer(): OwnedFd {
  return openOrExplain(DEV_VFIO_CONTAINER, {
    missing: 'the kernel lacks CONFIG_VFIO_CONTAINER (or `modprobe vfio`)',
  });
}
