// The minimal VMM's pure parts: bzImage header checks, the zero page, the e820 map, the MP
// table (checksums, entries), CPUID filtering, the 8250's register behaviour and the vm
// command's own flags.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { vmCommand } from '../../src/cli/vm.js';
import { InvalidSpecError } from '../../src/errors.js';
import { BootError, BP, fillZeroPage, parseBzImage } from '../../src/vmm/bzimage.js';
import { guestCpuid } from '../../src/vmm/cpuid.js';
import { E820_RAM, E820_RESERVED, e820Map, ramRanges } from '../../src/vmm/memory-map.js';
import { buildMpTable } from '../../src/vmm/mptable.js';
import { CTL } from '../../src/vmm/shared.js';
import { initUart, Uart } from '../../src/vmm/uart.js';

function fakeBzImage(version = 0x20f, loadflags = 1): Buffer {
  const f = Buffer.alloc(0x4000);
  f[BP.SETUP_SECTS] = 3;
  f.writeUInt16LE(0x6aeb, BP.JUMP); // jmp over a header ending at 0x26c
  f.writeUInt32LE(0x53726448, BP.HEADER);
  f.writeUInt16LE(version, BP.VERSION);
  f[BP.LOADFLAGS] = loadflags;
  f.writeUInt32LE(0x100000, BP.CODE32_START);
  f.writeUInt32LE(0x7fffffff, BP.INITRD_ADDR_MAX);
  f.writeUInt32LE(2047, BP.CMDLINE_SIZE);
  f.writeUInt32LE(0x800000, BP.INIT_SIZE);
  return f;
}

test('bzImage: header fields, the kernel after the setup sectors', () => {
  const k = parseBzImage(fakeBzImage(), 'k');
  assert.equal(
    [k.version, k.setupSects, k.code32Start, k.initrdAddrMax, k.cmdlineSize, k.initSize],
    [0x20f, 3, 0x100000, 0x7fffffff, 2047, 0x800000],
  );
  assert.is(k.kernel.length, 0x4000 - 4 * 512);
  assert.is(k.header.length, 0x26c - 0x1f1);
});

test('bzImage: what is refused, and why', () => {
  assert.throws(() => parseBzImage(Buffer.alloc(100), 'x'), /too small for a bzImage/);
  const elf = Buffer.alloc(0x2000);
  elf.writeUInt32BE(0x7f454c46, 0);
  assert.throws(() => parseBzImage(elf, 'x'), /ELF file/);
  assert.throws(() => parseBzImage(fakeBzImage(0x204), 'x'), /older than 2.06/);
  assert.throws(() => parseBzImage(fakeBzImage(0x20f, 0), 'x'), /zImage/);
  assert.throws(
    () => parseBzImage(Buffer.alloc(0x2000), 'x'),
    (e: unknown) => e instanceof BootError,
  );
});

test('zero page: loader, command line, initrd and e820', () => {
  const zp = new Uint8Array(4096),
    v = new DataView(zp.buffer);
  fillZeroPage(zp, parseBzImage(fakeBzImage(), 'k'), {
    cmdlineAddr: 0x20000,
    cmdlineLength: 10,
    initrdAddr: 0x1f000000,
    initrdSize: 0x1000,
    e820: e820Map(512 << 20),
  });
  assert.is(v.getUint32(BP.HEADER, true), 0x53726448);
  assert.is(zp[BP.TYPE_OF_LOADER], 0xff);
  assert.is(v.getUint32(BP.CMD_LINE_PTR, true), 0x20000);
  assert.is(v.getUint32(BP.RAMDISK_IMAGE, true), 0x1f000000);
  assert.is(zp[BP.E820_ENTRIES], 4);
});

test('e820: RAM around the EBDA and the MMIO hole, above 4 GiB for the rest', () => {
  assert.equal(ramRanges(4 * 2 ** 30), [
    { gpa: 0, size: 0xc0000000, offset: 0 },
    { gpa: 2 ** 32, size: 2 ** 30, offset: 0xc0000000 },
  ]);
  const m = e820Map(4 * 2 ** 30);
  assert.equal(
    m.filter((e) => e.type === E820_RAM).map((e) => [e.addr, e.size]),
    [
      [0, 0x9fc00],
      [0x100000, 0xc0000000 - 0x100000],
      [2 ** 32, 2 ** 30],
    ],
  );
  assert.ok(m.some((e) => e.type === E820_RESERVED && e.addr === 0x9fc00));
});

test('MP table: checksums, CPUs, IOAPIC after them, PCI INTx entries', () => {
  const t = buildMpTable(0x9fc00, {
    cpus: 2,
    cpuSignature: 0x663,
    cpuFeatures: 0x201,
    pciIrqs: [{ slot: 1, pin: 1, ioapicPin: 16 }],
  });
  const sum = (a: number, b: number): number =>
    t.subarray(a, b).reduce((s, x) => (s + x) & 0xff, 0);
  assert.is(Buffer.from(t.subarray(0, 4)).toString(), '_MP_');
  assert.is(sum(0, 16), 0);
  assert.is(sum(16, t.length), 0);
  const v = new DataView(t.buffer);
  assert.is(v.getUint32(4, true), 0x9fc00 + 16);
  assert.is(v.getUint16(16 + 4, true), t.length - 16);
  // entries: 2 CPUs (20 bytes), then 8-byte ones: 2 buses, the IOAPIC (id 2), 15 ISA, 1 PCI, 2 local
  const e = 16 + 44 + 40;
  assert.equal([t[e + 16], t[e + 17]], [2, 2]);
  const pci = e + 24 + 15 * 8;
  assert.equal([...t.subarray(pci, pci + 8)], [3, 0, 0x0d, 0, 0, (1 << 2) | 0, 2, 16]);
});

test('CPUID: no XSAVE/AVX, leaf 0xD gone, APIC ids filled in', () => {
  const e = (
    fn: number,
    index: number,
    ecx: number,
    ebx = 0,
  ): {
    function: number;
    index: number;
    flags: number;
    eax: number;
    ebx: number;
    ecx: number;
    edx: number;
    padding: number[];
  } => ({ function: fn, index, flags: 0, eax: 0, ebx, ecx, edx: 0, padding: [0, 0, 0] });
  const out = guestCpuid(
    [e(1, 0, 0xffffffff, 0x00000800), e(0xd, 0, 7), e(0xb, 0, 0), e(7, 0, 0xff, 0xffffffff)],
    3,
    4,
  );
  const l1 = out.find((x) => x.function === 1)!;
  assert.is(l1.ecx >>> 31, 1, 'hypervisor');
  assert.is(
    (guestCpuid([e(1, 0, 0)], 0, 1, true)[0]!.ecx >>> 24) & 1,
    1,
    'TSC deadline when the VM has it',
  );
  assert.is((guestCpuid([e(1, 0, 0)], 0, 1, false)[0]!.ecx >>> 24) & 1, 0);
  assert.is((l1.ecx >>> 26) & 7, 0, 'XSAVE, OSXSAVE, AVX off');
  assert.is(l1.ebx >>> 24, 3);
  assert.is((l1.ebx >>> 16) & 0xff, 4);
  assert.not.ok(out.some((x) => x.function === 0xd));
  assert.is(out.find((x) => x.function === 0xb)!.edx, 3);
  assert.is((out.find((x) => x.function === 7)!.ebx >>> 5) & 1, 0, 'AVX2 off');
});

test('8250: transmit raises THRE as an edge, IIR read clears it, loopback MSR', () => {
  const ctl = new Int32Array(new SharedArrayBuffer(CTL.COUNT * 4));
  initUart(ctl);
  const levels: number[] = [],
    out: number[] = [];
  const u = new Uart(
    ctl,
    (l) => levels.push(l),
    (b) => out.push(b),
  );
  assert.is(u.read(5) & 0x60, 0x60, 'THR and transmitter empty');
  u.write(1, 0x02); // IER: THRE interrupt
  assert.equal(levels, [1]);
  assert.is(u.read(2), 0x02);
  assert.is(u.read(2), 0x01, 'read once, the THRE interrupt is gone');
  assert.equal(levels, [1, 0]);
  u.write(0, 0x41);
  assert.equal(out, [0x41]);
  assert.equal(levels, [1, 0, 1]);
  u.write(4, 0x1a); // loopback, OUT2, RTS
  assert.is(u.read(6) & 0xf0, 0x90);
  u.write(3, 0x80);
  u.write(0, 0x01);
  u.write(3, 0x03);
  assert.equal(out, [0x41], 'a divisor write is not output');
});

test('vm --no-mmap: a port no --vfio names is refused before anything is opened', async () => {
  const argv = ['--kernel', '/nonexistent', '--memory', 'size=64M', '--no-mmap', 'nvme0'];
  try {
    await vmCommand([...argv, '--vfio', 'host=0000:00:04.0,port=nic0']);
    assert.unreachable('accepted');
  } catch (e) {
    assert.instance(e, InvalidSpecError);
    assert.match((e as Error).message, '--no-mmap nvme0: no --vfio with that port');
  }
});

test.run();
