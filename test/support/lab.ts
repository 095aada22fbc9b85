// The lab's emulated devices, found by vendor:device id (see lab/README or ../shared/lab/README.md).
import * as iommufd from '../../native/iommufd.js';
import * as vfio from '../../native/vfio.js';
import { OwnedFd } from '../../src/fd.js';
import { existsSync } from 'node:fs';
import { findFunctions, listFunctions } from '../../src/host/pci-sysfs.js';
import { openCdev, openContainer, openGroup, openIommufd } from '../../src/vfio/open.js';

export const LAB_IDS = { nvme: [0x1b36, 0x0010], e1000e: [0x8086, 0x10d3], edu: [0x1234, 0x11e8], igb: [0x8086, 0x10c9] } as const;

/** Throws with a clear message unless this process runs inside the lab guest. */
export function requireLab(): void {
  if (!existsSync('/dev/iommu') || !existsSync('/dev/vfio')) {
    throw new Error('lab tests need the lab kernel: run them with `npm run test:lab` (lab/run boots it)');
  }
}

/** BDFs of the lab devices of a kind that are bound to vfio-pci. */
export function labDevices(kind: keyof typeof LAB_IDS): string[] {
  const [v, d] = LAB_IDS[kind];
  return findFunctions(v, d).filter((f) => f.driver === 'vfio-pci').map((f) => f.bdf);
}

export function labDevice(kind: keyof typeof LAB_IDS): string {
  const bdf = labDevices(kind)[0];
  if (!bdf) throw new Error(`no ${kind} bound to vfio-pci in this guest (lab/run --devices must include ${kind})`);
  return bdf;
}

/** A function the lab did not hand to vfio-pci (the host bridge, say). */
export function nonVfioFunction(): string {
  const f = listFunctions().find((x) => x.driver !== 'vfio-pci');
  if (!f) throw new Error('every function in the guest is bound to vfio-pci');
  return f.bdf;
}

/** A lab device opened on the cdev path, bound and attached to a fresh IOAS. */
export function openOnIommufd(bdf: string): { dev: OwnedFd; close: () => void } {
  const iommu = openIommufd();
  const ioas = iommufd.ioasAlloc(iommu);
  const dev = openCdev(bdf);
  vfio.deviceBindIommufd(dev, iommu.fd);
  vfio.deviceAttachIommufdPt(dev, ioas);
  return { dev, close: () => { dev.close(); iommu.close(); } };
}

/** A lab device opened on the legacy group/container path. */
export function openOnContainer(bdf: string): { dev: OwnedFd; close: () => void } {
  const container = openContainer();
  const { group } = openGroup(bdf);
  vfio.groupSetContainer(group, container.fd);
  vfio.setIommu(container, vfio.VFIO_C.VFIO_TYPE1v2_IOMMU);
  const dev = new OwnedFd(vfio.groupGetDeviceFd(group, bdf), `${group.path} (${bdf})`);
  return { dev, close: () => { dev.close(); group.close(); container.close(); } };
}
