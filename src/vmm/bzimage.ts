// The Linux x86 boot protocol (Documentation/arch/x86/boot.rst): reading a bzImage's setup
// header and filling the zero page (struct boot_params) a 32-bit boot entry expects. The
// header is a packed on-disk format, not an ioctl struct, so its fields are named by their
// offsets in boot_params as the protocol document gives them.
import { BootError } from '../index.js';
import type { E820Entry } from './memory-map.js';

/** Offsets in boot_params (the setup header starts at 0x1f1, as in the file's first sector). */
export const BP = {
  EXT_RAMDISK_IMAGE: 0x0c0,
  EXT_RAMDISK_SIZE: 0x0c4,
  EXT_CMD_LINE_PTR: 0x0c8,
  E820_ENTRIES: 0x1e8,
  SENTINEL: 0x1ef,
  SETUP_SECTS: 0x1f1,
  VID_MODE: 0x1fa,
  BOOT_FLAG: 0x1fe,
  JUMP: 0x200,
  HEADER: 0x202,
  VERSION: 0x206,
  TYPE_OF_LOADER: 0x210,
  LOADFLAGS: 0x211,
  CODE32_START: 0x214,
  RAMDISK_IMAGE: 0x218,
  RAMDISK_SIZE: 0x21c,
  HEAP_END_PTR: 0x224,
  CMD_LINE_PTR: 0x228,
  INITRD_ADDR_MAX: 0x22c,
  KERNEL_ALIGNMENT: 0x230,
  RELOCATABLE: 0x234,
  CMDLINE_SIZE: 0x238,
  INIT_SIZE: 0x260,
  E820_TABLE: 0x2d0,
} as const;
const HDRS = 0x53726448; // "HdrS"
const LOADED_HIGH = 0x01;
const E820_MAX = 128;

// One of the runtime's error kinds (VFR_ERR_BOOT), thrown here and by boot.ts.
export { BootError };

export interface BzImage {
  /** Protocol version, e.g. 0x20f for 2.15. */
  version: number;
  setupSects: number;
  loadflags: number;
  code32Start: number;
  initrdAddrMax: number;
  /** Longest command line the kernel takes, without the NUL. */
  cmdlineSize: number;
  /** Bytes from the load address the kernel needs while it decompresses and starts. */
  initSize: number;
  /** The setup header bytes to copy into boot_params (from 0x1f1). */
  header: Uint8Array;
  /** The protected-mode kernel, loaded at code32_start. */
  kernel: Uint8Array;
}

/** Check and read a bzImage: every refusal says what the file is instead. */
export function parseBzImage(file: Uint8Array, name: string): BzImage {
  const v = new DataView(file.buffer, file.byteOffset, file.byteLength);
  if (file.length < 0x1000)
    throw new BootError(`kernel ${name}: ${file.length} bytes is too small for a bzImage`);
  if (v.getUint32(BP.HEADER, true) !== HDRS) {
    const what =
      v.getUint32(0) === 0x7f454c46
        ? 'an ELF file (a vmlinux?); give the bzImage (arch/x86/boot/bzImage or /boot/vmlinuz-*)'
        : 'no "HdrS" setup header at 0x202';
    throw new BootError(`kernel ${name} is not a bzImage: ${what}`);
  }
  const version = v.getUint16(BP.VERSION, true);
  if (version < 0x206) {
    throw new BootError(
      `kernel ${name}: boot protocol ${version >> 8}.${version & 0xff} is older than 2.06 ` +
        '(Linux before 2.6.22); use a newer kernel',
    );
  }
  const loadflags = v.getUint8(BP.LOADFLAGS);
  if (!(loadflags & LOADED_HIGH))
    throw new BootError(`kernel ${name} is a zImage (loaded low), not a bzImage`);
  const setupSects = v.getUint8(BP.SETUP_SECTS) || 4;
  const kernelStart = (setupSects + 1) * 512;
  if (kernelStart >= file.length)
    throw new BootError(`kernel ${name}: setup_sects ${setupSects} runs past the end of the file`);
  const headerEnd = BP.JUMP + 2 + v.getUint8(BP.JUMP + 1);
  return {
    version,
    setupSects,
    loadflags,
    code32Start: v.getUint32(BP.CODE32_START, true),
    initrdAddrMax: v.getUint32(BP.INITRD_ADDR_MAX, true),
    cmdlineSize: v.getUint32(BP.CMDLINE_SIZE, true),
    initSize: version >= 0x20a ? v.getUint32(BP.INIT_SIZE, true) : (file.length - kernelStart) * 4,
    header: file.subarray(BP.SETUP_SECTS, Math.min(headerEnd, 0x290)),
    kernel: file.subarray(kernelStart),
  };
}

export interface ZeroPage {
  cmdlineAddr: number;
  cmdlineLength: number;
  initrdAddr: number;
  initrdSize: number;
  e820: E820Entry[];
}

/** Fill a zeroed boot_params page (`zp`, 4 KiB) for a boot through the 32-bit entry. */
export function fillZeroPage(zp: Uint8Array, k: BzImage, p: ZeroPage): void {
  const v = new DataView(zp.buffer, zp.byteOffset, 4096);
  zp.fill(0, 0, 4096);
  zp.set(k.header, BP.SETUP_SECTS);
  v.setUint16(BP.VID_MODE, 0xffff, true); // "normal": the loader set no video mode
  v.setUint8(BP.TYPE_OF_LOADER, 0xff); // undefined loader
  v.setUint8(
    BP.LOADFLAGS,
    k.loadflags & ~0x20 /* QUIET_FLAG off: keep the decompressor's messages */,
  );
  v.setUint32(BP.CMD_LINE_PTR, p.cmdlineAddr, true);
  v.setUint32(BP.RAMDISK_IMAGE, p.initrdAddr >>> 0, true);
  v.setUint32(BP.RAMDISK_SIZE, p.initrdSize >>> 0, true);
  v.setUint32(BP.EXT_RAMDISK_IMAGE, Math.floor(p.initrdAddr / 2 ** 32), true);
  v.setUint32(BP.EXT_RAMDISK_SIZE, Math.floor(p.initrdSize / 2 ** 32), true);
  if (p.e820.length > E820_MAX)
    throw new BootError(`${p.e820.length} e820 entries; boot_params holds ${E820_MAX}`);
  v.setUint8(BP.E820_ENTRIES, p.e820.length);
  p.e820.forEach((e, i) => {
    const at = BP.E820_TABLE + 20 * i;
    v.setBigUint64(at, BigInt(e.addr), true);
    v.setBigUint64(at + 8, BigInt(e.size), true);
    v.setUint32(at + 16, e.type, true);
  });
}
