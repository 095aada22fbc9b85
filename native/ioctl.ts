// ioctl request numbers built by the rules of <asm-generic/ioctl.h> (x86_64), and a registry
// of every number and uAPI constant `native/` defines, for the layout test.

const NRBITS = 8,
  TYPEBITS = 8,
  SIZEBITS = 14;
const NRSHIFT = 0,
  TYPESHIFT = NRSHIFT + NRBITS,
  SIZESHIFT = TYPESHIFT + TYPEBITS,
  DIRSHIFT = SIZESHIFT + SIZEBITS;
const IOC_NONE = 0,
  IOC_WRITE = 1,
  IOC_READ = 2;

function ioc(dir: number, type: number | string, nr: number, size: number): number {
  const t = typeof type === 'string' ? type.charCodeAt(0) : type;
  if (size >= 1 << SIZEBITS)
    throw new RangeError(`ioctl size ${size} does not fit in ${SIZEBITS} bits`);
  // >>> 0 keeps the number unsigned: _IOR/_IOWR set bit 31.
  return ((dir << DIRSHIFT) | (t << TYPESHIFT) | (nr << NRSHIFT) | (size << SIZESHIFT)) >>> 0;
}

export const _IO = (type: number | string, nr: number): number => ioc(IOC_NONE, type, nr, 0);
export const _IOR = (type: number | string, nr: number, size: number): number =>
  ioc(IOC_READ, type, nr, size);
export const _IOW = (type: number | string, nr: number, size: number): number =>
  ioc(IOC_WRITE, type, nr, size);
export const _IOWR = (type: number | string, nr: number, size: number): number =>
  ioc(IOC_READ | IOC_WRITE, type, nr, size);

/** Which C header a symbol comes from, so the layout probe includes it. */
export type Header =
  | 'linux/vfio.h'
  | 'linux/iommufd.h'
  | 'linux/kvm.h'
  | 'linux/pci_regs.h'
  | 'libc'
  | 'iommufd_test.h';

export interface Constant {
  readonly name: string;
  readonly value: number | bigint;
  readonly header: Header;
  readonly ioctl: boolean;
}
export const constantRegistry: Constant[] = [];

/** Register uAPI constants (ioctl numbers or flags) under their C names; returns them unchanged. */
export function defineConstants<T extends Record<string, number | bigint>>(
  header: Header,
  values: T,
  ioctl = false,
): T {
  for (const [name, value] of Object.entries(values))
    constantRegistry.push({ name, value, header, ioctl });
  return values;
}

export const defineIoctls = <T extends Record<string, number>>(header: Header, values: T): T =>
  defineConstants(header, values, true);
