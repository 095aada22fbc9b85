// The lab's emulated devices, found by vendor:device id (see lab/README or ../shared/lab/README.md).
import { existsSync } from 'node:fs';
import type { Target } from '../../native/libc.js';
import type { DmaBackend } from '../../src/dma/backend.js';
import { ContainerBackend } from '../../src/dma/container-backend.js';
import { IommufdContext } from '../../src/dma/iommufd-context.js';
import { findFunctions, listFunctions } from '../../src/platform/pci-sysfs.js';

export const LAB_IDS = {
  nvme: [0x1b36, 0x0010],
  e1000e: [0x8086, 0x10d3],
  edu: [0x1234, 0x11e8],
  igb: [0x8086, 0x10c9],
  ivshmem: [0x1af4, 0x1110],
} as const;

/** Throws with a clear message unless this process runs inside the lab guest. */
export function requireLab(): void {
  if (!existsSync('/dev/iommu') || !existsSync('/dev/vfio')) {
    throw new Error(
      'lab tests need the lab kernel: run them with `npm run test:lab` (lab/run boots it)',
    );
  }
}

/** BDFs of the lab devices of a kind that are bound to vfio-pci. */
export function labDevices(kind: keyof typeof LAB_IDS): string[] {
  const [v, d] = LAB_IDS[kind];
  return findFunctions(v, d)
    .filter((f) => f.driver === 'vfio-pci')
    .map((f) => f.bdf);
}

export function labDevice(kind: keyof typeof LAB_IDS): string {
  const bdf = labDevices(kind)[0];
  if (!bdf)
    throw new Error(
      `no ${kind} bound to vfio-pci in this guest (lab/run --devices must include ${kind})`,
    );
  return bdf;
}

/** A function the lab did not hand to vfio-pci (the host bridge, say). */
export function nonVfioFunction(): string {
  const f = listFunctions().find((x) => x.driver !== 'vfio-pci');
  if (!f) throw new Error('every function in the guest is bound to vfio-pci');
  return f.bdf;
}

/** A lab device on the cdev path, attached to a fresh iommufd context (the production path). */
export const openOnIommufd = (bdf: string): LabDevice =>
  attachThrough(IommufdContext.open(`test-${bdf}`), bdf);

/** A lab device on the legacy group/container path (the production path). */
export const openOnContainer = (bdf: string): LabDevice =>
  attachThrough(ContainerBackend.open(`test-${bdf}`), bdf);

export interface LabDevice {
  dev: Target;
  close: () => void;
}

/** Attach `bdf` through a backend of its own; close() detaches it and closes the backend. */
function attachThrough(backend: DmaBackend & { close(): void }, bdf: string): LabDevice {
  try {
    const a = backend.attachPciDevice(bdf);
    return {
      dev: a.device,
      close: () => {
        a.detach();
        backend.close();
      },
    };
  } catch (e) {
    backend.close();
    throw e;
  }
}
