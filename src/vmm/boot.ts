// Loading a Linux guest into RAM: the protected-mode kernel at code32_start, the initramfs as
// high as the kernel allows, the command line, the zero page, the MP table and the boot GDT.
import { readFileSync } from 'node:fs';
import { BootError, type BzImage, fillZeroPage, parseBzImage } from './bzimage.js';
import {
  CMDLINE_ADDR,
  EBDA_START,
  e820Map,
  KERNEL_LOAD_ADDR,
  MiB,
  ramRanges,
  ZERO_PAGE_ADDR,
} from './memory-map.js';
import { buildMpTable, type MpTableSpec } from './mptable.js';
import { writeGdt } from './vcpu-setup.js';

export const DEFAULT_CMDLINE = 'console=ttyS0 reboot=t panic=-1 pci=conf1 acpi=off io_delay=none';

export interface BootFiles {
  kernel: BzImage;
  initrd: Uint8Array | undefined;
}

function readFile(what: string, path: string): Uint8Array {
  try {
    return readFileSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT'
        ? 'no such file'
        : code === 'EACCES'
          ? 'permission denied'
          : (e as Error).message;
    throw new BootError(`${what} ${path}: ${why}`);
  }
}

export function readBootFiles(kernel: string, initrd: string | undefined): BootFiles {
  return {
    kernel: parseBzImage(readFile('kernel', kernel), kernel),
    initrd: initrd === undefined ? undefined : readFile('initrd', initrd),
  };
}

/** The least RAM that holds the kernel while it unpacks and the initramfs above it (plus 16 MiB to run). */
export function minimumMemory(f: BootFiles): number {
  const k = f.kernel;
  return (
    KERNEL_LOAD_ADDR + Math.max(k.initSize, k.kernel.length) + (f.initrd?.length ?? 0) + 16 * MiB
  );
}

/** Write everything the 32-bit boot entry needs into RAM (`ram` = the memfd's bytes, low RAM at offset 0). */
export function loadGuest(
  ram: Uint8Array,
  total: number,
  f: BootFiles,
  cmdline: string,
  mp: MpTableSpec,
): { entry: number; initrdAddr: number } {
  const k = f.kernel;
  if (k.code32Start !== KERNEL_LOAD_ADDR) {
    throw new BootError(
      `kernel: code32_start is 0x${k.code32Start.toString(16)}, ` +
        `this loader puts the kernel at 0x${KERNEL_LOAD_ADDR.toString(16)}`,
    );
  }
  if (cmdline.length > k.cmdlineSize) {
    throw new BootError(
      `command line is ${cmdline.length} bytes; this kernel takes at most ${k.cmdlineSize}`,
    );
  }
  const lowEnd = ramRanges(total)[0]!.size;
  const need = minimumMemory(f);
  if (need > lowEnd) {
    throw new BootError(
      `${Math.floor(total / MiB)} MiB of memory is too little for this kernel and initrd: ` +
        `give at least ${Math.ceil(need / MiB)} MiB`,
    );
  }
  ram.fill(0, 0, MiB);
  ram.set(k.kernel, KERNEL_LOAD_ADDR);
  let initrdAddr = 0;
  if (f.initrd) {
    const top = Math.min(k.initrdAddrMax + 1, lowEnd);
    initrdAddr = Math.floor((top - f.initrd.length) / 4096) * 4096;
    if (initrdAddr < KERNEL_LOAD_ADDR + k.initSize) {
      throw new BootError(
        `initrd of ${f.initrd.length} bytes does not fit above the kernel ` +
          `and below initrd_addr_max 0x${k.initrdAddrMax.toString(16)}`,
      );
    }
    ram.set(f.initrd, initrdAddr);
  }
  ram.set(Buffer.from(`${cmdline}\0`, 'latin1'), CMDLINE_ADDR);
  fillZeroPage(ram.subarray(ZERO_PAGE_ADDR, ZERO_PAGE_ADDR + 4096), k, {
    cmdlineAddr: CMDLINE_ADDR,
    cmdlineLength: cmdline.length,
    initrdAddr,
    initrdSize: f.initrd?.length ?? 0,
    e820: e820Map(total),
  });
  ram.set(buildMpTable(EBDA_START, mp), EBDA_START);
  writeGdt(ram);
  return { entry: k.code32Start, initrdAddr };
}
