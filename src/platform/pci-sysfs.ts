// What sysfs says about the host's PCI functions: identity, driver, IOMMU group, VFIO cdev
// node, BARs (from the `resource` file) and MSI/MSI-X vector counts (from config space).
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { basename, join } from 'node:path';
import { PCI } from '../../native/pci-regs.js';
import { ConfigError, InvalidSpecError, NotFoundError } from '../errors.js';

export const SYSFS_PCI = process.env.VFIO_RUNTIME_SYSFS_PCI ?? '/sys/bus/pci/devices';

const BDF = /^([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$/;

/** Normalise "00:04.0" or "0000:00:04.0" to the full form; undefined when it is not a BDF. */
export function normalizeBdf(s: string): string | undefined {
  const full = /^[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$/.test(s) ? `0000:${s}` : s;
  return BDF.test(full.toLowerCase()) ? full.toLowerCase() : undefined;
}

/**
 * The sysfs path of `bdf`'s `parts`, for a checked PCI address only: whatever a caller passes
 * never reaches a path join unless it is one (no '../', no '/'), whichever layer it came through.
 */
export function pciPath(bdf: string, ...parts: string[]): string {
  const full = typeof bdf === 'string' ? normalizeBdf(bdf) : undefined;
  if (!full)
    throw new InvalidSpecError(
      `'${String(bdf)}' is not a PCI address (like 0000:01:00.0 or 01:00.0)`,
    );
  return join(SYSFS_PCI, full, ...parts);
}

export interface BarInfo {
  index: number;
  start: bigint;
  size: bigint;
  io: boolean;
  is64: boolean;
  prefetch: boolean;
}
export interface PciFunction {
  bdf: string;
  vendor: number;
  device: number;
  classCode: number;
  driver: string | undefined;
  iommuGroup: number | undefined;
  /** /dev/vfio/devices/vfioN when the function is bound to vfio-pci with cdev support. */
  cdev: string | undefined;
  bars: BarInfo[];
  msi: number;
  msix: number;
}

const readText = (p: string): string | undefined => {
  try {
    return readFileSync(p, 'utf8').trim();
  } catch {
    return undefined;
  }
};
const readHex = (p: string): number => Number.parseInt(readText(p) ?? '0', 16);

/** The function's sysfs directory, or a clear error when the host has no such function. */
export function sysfsDir(bdf: string): string {
  const dir = pciPath(bdf);
  if (!existsSync(dir))
    throw new NotFoundError(
      `no PCI function ${bdf} on this host (${dir} does not exist)`,
      'pci-function',
      bdf,
    );
  return dir;
}

export function driverOf(bdf: string): string | undefined {
  const link = pciPath(bdf, 'driver'); // outside the try: a bad address is an error, not 'no driver'
  try {
    return basename(readlinkSync(link));
  } catch {
    return undefined;
  }
}

export function iommuGroupOf(bdf: string): number | undefined {
  const link = pciPath(bdf, 'iommu_group');
  try {
    return Number(basename(readlinkSync(link)));
  } catch {
    return undefined;
  }
}

/** /dev/vfio/devices/vfioN for a function bound to vfio-pci (the kernel lists it under vfio-dev/). */
export function cdevOf(bdf: string): string | undefined {
  const dir = pciPath(bdf, 'vfio-dev');
  try {
    const name = readdirSync(dir).find((e) => e.startsWith('vfio'));
    return name ? `/dev/vfio/devices/${name}` : undefined;
  } catch {
    return undefined;
  }
}

/** BARs from the `resource` file: one "start end flags" line per resource, BARs first. */
export function barsOf(bdf: string): BarInfo[] {
  const text = readText(pciPath(bdf, 'resource')) ?? '';
  const bars: BarInfo[] = [];
  text
    .split('\n')
    .slice(0, 6)
    .forEach((line, index) => {
      const [s, e, f] = line
        .trim()
        .split(/\s+/)
        .map((x) => BigInt(x));
      if (s === undefined || e === undefined || f === undefined || (s === 0n && e === 0n)) return;
      const flags = Number(f);
      // IORESOURCE_IO 0x100, IORESOURCE_PREFETCH 0x2000, IORESOURCE_MEM_64 0x100000
      bars.push({
        index,
        start: s,
        size: e - s + 1n,
        io: (flags & 0x100) !== 0,
        is64: (flags & 0x100000) !== 0,
        prefetch: (flags & 0x2000) !== 0,
      });
    });
  return bars;
}

/** Walk the standard capability list of a config-space image, with a loop guard. */
export function* capabilities(cfg: Buffer): Generator<{ id: number; offset: number }> {
  if (cfg.length < 0x40 || !(cfg.readUInt16LE(PCI.PCI_STATUS) & PCI.PCI_STATUS_CAP_LIST)) return;
  let off = cfg[PCI.PCI_CAPABILITY_LIST]! & ~3;
  for (let guard = 0; off >= 0x40 && off + 2 <= cfg.length; guard++) {
    if (guard >= 48)
      throw new ConfigError('PCI capability list loops or is longer than config space allows');
    yield { id: cfg[off]!, offset: off };
    off = cfg[off + 1]! & ~3;
  }
}

/** MSI and MSI-X vector counts from config space (sysfs shows the full 256 bytes to root only). */
export function vectorCounts(cfg: Buffer): { msi: number; msix: number } {
  let msi = 0,
    msix = 0;
  for (const cap of capabilities(cfg)) {
    if (cap.id === PCI.PCI_CAP_ID_MSI && cap.offset + 4 <= cfg.length)
      msi =
        1 << ((cfg.readUInt16LE(cap.offset + PCI.PCI_MSI_FLAGS) & PCI.PCI_MSI_FLAGS_QMASK) >> 1);
    if (cap.id === PCI.PCI_CAP_ID_MSIX && cap.offset + 4 <= cfg.length)
      msix = (cfg.readUInt16LE(cap.offset + PCI.PCI_MSIX_FLAGS) & PCI.PCI_MSIX_FLAGS_QSIZE) + 1;
  }
  return { msi, msix };
}

export function describeFunction(bdf: string): PciFunction {
  const dir = sysfsDir(bdf);
  let cfg = Buffer.alloc(0);
  try {
    cfg = readFileSync(join(dir, 'config'));
  } catch {
    /* unreadable: counts stay 0 */
  }
  return {
    bdf,
    vendor: readHex(join(dir, 'vendor')),
    device: readHex(join(dir, 'device')),
    classCode: readHex(join(dir, 'class')),
    driver: driverOf(bdf),
    iommuGroup: iommuGroupOf(bdf),
    cdev: cdevOf(bdf),
    bars: barsOf(bdf),
    ...vectorCounts(cfg),
  };
}

export function listFunctions(): PciFunction[] {
  let names: string[] = [];
  try {
    names = readdirSync(SYSFS_PCI);
  } catch {
    return [];
  }
  return names
    .filter((n) => BDF.test(n))
    .sort()
    .map(describeFunction);
}

/** Functions with this vendor:device id (e.g. 0x1b36, 0x0010 for QEMU's NVMe). */
export function findFunctions(vendor: number, device: number): PciFunction[] {
  return listFunctions().filter((f) => f.vendor === vendor && f.device === device);
}

/** How to hand a function to vfio-pci, for error messages. */
export function bindHint(bdf: string): string {
  return (
    `bind it to vfio-pci: echo vfio-pci > ${SYSFS_PCI}/${bdf}/driver_override; ` +
    `echo ${bdf} > ${SYSFS_PCI}/${bdf}/driver/unbind (if bound); echo ${bdf} > /sys/bus/pci/drivers_probe`
  );
}
