// Config-space virtualization against a synthetic device image: BAR and ROM sizing answered
// locally, pass-through of everything else, MSI-X control intercepted, SR-IOV/ARI hidden from
// the extended capability list, malformed capability chains refused.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ConfigError, type ConfigIo, ConfigSpace } from '../../src/device/config-space.js';

function image(): Buffer {
  const b = Buffer.alloc(4096);
  b.writeUInt16LE(0x1234, 0);
  b.writeUInt16LE(0x5678, 2);
  b.writeUInt16LE(0x0010, 6); // status: capability list
  b.writeUInt32LE(0x0000000c, 0x10); // BAR0: 64-bit prefetchable memory
  b.writeUInt32LE(0x00000000, 0x18); // BAR2: 32-bit memory
  b.writeUInt32LE(0x00000001, 0x20); // BAR4: I/O
  b[0x34] = 0x40;
  // MSI at 0x40: 64-bit, per-vector masking, 4 vectors capable
  b[0x40] = 0x05;
  b[0x41] = 0x60;
  b.writeUInt16LE(0x0180 | (2 << 1), 0x42);
  // MSI-X at 0x60: 8 vectors, table in BAR0 at 0x2000, PBA in BAR0 at 0x3000
  b[0x60] = 0x11;
  b[0x61] = 0x00;
  b.writeUInt16LE(7, 0x62);
  b.writeUInt32LE(0x2000, 0x64);
  b.writeUInt32LE(0x3000, 0x68);
  // Extended: SR-IOV @0x100 -> AER @0x140 -> ARI @0x180 -> vendor @0x1a0
  b.writeUInt32LE(0x10 | (1 << 16) | (0x140 << 20), 0x100);
  b.writeUInt32LE(0xdeadbeef, 0x104);
  b.writeUInt32LE(0x01 | (2 << 16) | (0x180 << 20), 0x140);
  b.writeUInt32LE(0x0e | (1 << 16) | (0x1a0 << 20), 0x180);
  b.writeUInt32LE(0xcafef00d, 0x184);
  b.writeUInt32LE(0x0b | (1 << 16), 0x1a0);
  return b;
}

const regions = [0x100000n, 0n, 0x4000n, 0n, 0x20n, 0n, 0x10000n].map((size) => ({ size }));

function device(img = image()): {
  cs: ConfigSpace;
  writes: [number, number, number][];
  msix: [boolean, boolean][];
} {
  const writes: [number, number, number][] = [];
  const msix: [boolean, boolean][] = [];
  const io: ConfigIo = {
    read: (off, size) =>
      size === 4 ? img.readUInt32LE(off) : size === 2 ? img.readUInt16LE(off) : img[off]!,
    write: (off, size, v) => {
      writes.push([off, size, v]);
      if (size === 4) img.writeUInt32LE(v >>> 0, off);
      else if (size === 2) img.writeUInt16LE(v, off);
      else img[off] = v;
    },
  };
  const cs = new ConfigSpace(io, new Uint8Array(img), regions, {
    msixControl: (e, m) => msix.push([e, m]),
  });
  return { cs, writes, msix };
}

test('BARs and the ROM size from region info, answered locally', () => {
  const { cs, writes } = device();
  const size = (off: number): number => {
    cs.write(off, 4, 0xffffffff);
    return cs.read(off, 4);
  };
  assert.is(size(0x10), 0xfff0000c, 'BAR0: 1 MiB, 64-bit prefetchable');
  assert.is(size(0x14), 0xffffffff, 'BAR1: upper half of BAR0');
  assert.is(size(0x18), 0xffffc000, 'BAR2: 16 KiB');
  assert.is(size(0x1c), 0, 'BAR3: unimplemented');
  assert.is(size(0x20), 0xffffffe1, 'BAR4: 32 bytes of I/O');
  assert.is(size(0x24), 0, 'BAR5: unimplemented');
  assert.is(size(0x30), 0xffff0001, 'ROM: 64 KiB');
  cs.write(0x18, 4, 0xfe000000);
  assert.is(cs.read(0x18, 4), 0xfe000000, 'a programmed address reads back');
  cs.write(0x18, 2, 0x1234);
  assert.is(cs.read(0x18, 4), 0xfe000000, 'low bits below the size stay zero');
  assert.equal(writes, [], 'no BAR/ROM write reached the device');
  assert.equal(
    cs.bars.map((b) => [b.index, b.is64, b.io, b.prefetch]),
    [
      [0, true, false, true],
      [2, false, false, false],
      [4, false, true, false],
    ],
  );
});

test('everything else passes through; the command register reaches the device', () => {
  const { cs, writes } = device();
  assert.is(cs.read(0, 4), 0x56781234);
  cs.write(4, 2, 0x0006);
  assert.equal(writes, [[4, 2, 6]]);
  assert.is(cs.read(4, 2), 6);
});

test('MSI-X message control is intercepted: Enable and Function Mask never reach the device', () => {
  const { cs, writes, msix } = device();
  assert.is(cs.read(0x62, 2), 7, 'table size visible, enable clear');
  cs.write(0x60, 4, 0xc0000000 | 0x0011); // a dword write over ID/next/control
  assert.equal(msix, [[true, true]]);
  assert.is(cs.read(0x62, 2), 0xc007);
  assert.ok(cs.msixEnabled && cs.msixFunctionMasked);
  assert.ok(
    !writes.some(([off]) => off >= 0x62 && off < 0x64),
    `device saw ${JSON.stringify(writes)}`,
  );
  assert.equal(cs.msix, {
    offset: 0x60,
    tableSize: 8,
    tableBar: 0,
    tableOffset: 0x2000,
    pbaBar: 0,
    pbaOffset: 0x3000,
  });
});

test('MSI capability is emulated', () => {
  const { cs, writes } = device();
  cs.write(0x44, 4, 0xfee01004);
  cs.write(0x48, 4, 0);
  cs.write(0x4c, 2, 0x4041);
  assert.is(cs.read(0x44, 4), 0xfee01004);
  assert.is(cs.read(0x4c, 2), 0x4041);
  assert.equal(writes, []);
  assert.equal(cs.msi, { offset: 0x40, is64: true, maskable: true, vectors: 4 });
});

test('SR-IOV and ARI are unlinked from the extended list and read as zero', () => {
  const { cs } = device();
  const hdr = (off: number): [number, number] => {
    const v = cs.read(off, 4);
    return [v & 0xffff, v >>> 20];
  };
  assert.equal(hdr(0x100), [0, 0x140], 'a null capability stands at 0x100 in place of SR-IOV');
  assert.equal(hdr(0x140), [0x01, 0x1a0], 'AER now links past ARI');
  assert.equal(hdr(0x1a0), [0x0b, 0]);
  assert.is(cs.read(0x104, 4), 0, 'SR-IOV body hidden');
  assert.is(cs.read(0x184, 4), 0, 'ARI body hidden');
  assert.equal(
    cs.extCaps.map((c) => [c.id, c.hidden]),
    [
      [0x10, true],
      [0x01, false],
      [0x0e, true],
      [0x0b, false],
    ],
  );
});

test('a looping or out-of-range capability chain is refused', () => {
  const loop = image();
  loop[0x61] = 0x40;
  loop[0x41] = 0x60;
  loop[0x61] = 0x40;
  assert.throws(
    () => device(loop),
    (e: unknown) => e instanceof ConfigError && /loops at 0x40/.test((e as Error).message),
  );
  const ext = image();
  ext.writeUInt32LE(0x01 | (0x140 << 20), 0x140);
  assert.throws(
    () => device(ext),
    (e: unknown) =>
      e instanceof ConfigError && /extended capability list loops/.test((e as Error).message),
  );
  const bad = image();
  bad[0x34] = 0x20;
  assert.throws(
    () => device(bad),
    (e: unknown) =>
      e instanceof ConfigError && /outside the capability area/.test((e as Error).message),
  );
});

test('a restarted worker keeps the guest-visible state', () => {
  const img = image();
  const io: ConfigIo = {
    read: (off, size) =>
      size === 4 ? img.readUInt32LE(off) : size === 2 ? img.readUInt16LE(off) : img[off]!,
    write: () => {},
  };
  const shared = new Uint8Array(new SharedArrayBuffer(4096));
  const first = new ConfigSpace(io, new Uint8Array(img), regions, {}, shared);
  first.write(0x18, 4, 0xfe000000);
  first.write(0x62, 2, 0x8000);
  const second = new ConfigSpace(io, new Uint8Array(img), regions, {}, shared, true);
  assert.is(second.read(0x18, 4), 0xfe000000);
  assert.ok(second.msixEnabled);
  assert.is(second.read(0x10, 4), 0x0000000c);
});

test('access validation', () => {
  assert.is(ConfigSpace.validAccess(0x10, 4, 256), 'ok');
  assert.is(ConfigSpace.validAccess(0x11, 4, 256), 'align');
  assert.is(ConfigSpace.validAccess(0x10, 3, 256), 'width');
  assert.is(ConfigSpace.validAccess(0x100, 4, 256), 'range');
});

test.run();
