// The BAR fast path's arithmetic (src/device/bar-areas.ts): which pages of a BAR a VMM may map
// into the guest and which trap, from VFIO's mmap flag and sparse areas, with the MSI-X table and
// PBA carved out page-rounded wherever they sit; and the KVM slots following the guest (a BAR
// moved, decoding off, two BARs trading places) and falling back to trapping when KVM refuses.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { barAreas } from '../../src/device/bar-areas.js';
import { BarSlots, FIRST_BAR_SLOT, type SlotRegion } from '../../src/vmm/bar-slots.js';
import {
  BAR,
  BAR_MEM,
  BARS,
  CTL,
  createShared,
  MAX_AREAS,
  MAX_DEVICES,
  SLOT,
  SLOT_NONE,
  slotRow,
} from '../../src/vmm/shared.js';

const K = 1024;

test('no mmap flag: the whole BAR traps', () => {
  assert.equal(barAreas({ size: 16 * K, mmap: false }), { mappable: [], trapped: [[0, 16 * K]] });
});

test('mmap flag, no MSI-X: the whole BAR maps', () => {
  assert.equal(barAreas({ size: 16 * K, mmap: true }), { mappable: [[0, 16 * K]], trapped: [] });
});

test('MSI-X table and PBA at the end (QEMU NVMe: table 0x2000, PBA 0x3000)', () => {
  const a = barAreas({
    size: 16 * K,
    mmap: true,
    emulated: [
      [0x2000, 0x2000 + 65 * 16],
      [0x3000, 0x3010],
    ],
  });
  assert.equal(a.mappable, [[0, 0x2000]]);
  assert.equal(a.trapped, [[0x2000, 0x4000]]);
});

test('MSI-X table in the middle of a page: its whole page traps, both sides map', () => {
  const a = barAreas({ size: 64 * K, mmap: true, emulated: [[0x5100, 0x5200]] });
  assert.equal(a.mappable, [
    [0, 0x5000],
    [0x6000, 64 * K],
  ]);
  assert.equal(a.trapped, [[0x5000, 0x6000]]);
});

test('table straddling a page boundary: both pages trap', () => {
  const a = barAreas({ size: 32 * K, mmap: true, emulated: [[0x1f00, 0x2100]] });
  assert.equal(a.trapped, [[0x1000, 0x3000]]);
});

test('table and PBA at offset 0 of their own BAR (e1000e BAR3)', () => {
  const a = barAreas({
    size: 16 * K,
    mmap: true,
    emulated: [
      [0, 5 * 16],
      [0x2000, 0x2008],
    ],
  });
  assert.equal(a.mappable, [
    [0x1000, 0x2000],
    [0x3000, 0x4000],
  ]);
  assert.equal(a.trapped, [
    [0, 0x1000],
    [0x2000, 0x3000],
  ]);
});

test('sparse areas (MSI-X not mappable): only those map, and the carve-out still applies', () => {
  const a = barAreas({
    size: 32 * K,
    mmap: true,
    sparse: [
      { offset: 0, size: 0x2000 },
      { offset: 0x3000, size: 0x5000 },
    ],
    emulated: [[0x2000, 0x2400]],
  });
  assert.equal(a.mappable, [
    [0, 0x2000],
    [0x3000, 0x8000],
  ]);
  assert.equal(a.trapped, [[0x2000, 0x3000]]);
});

test('sparse areas are trimmed to whole pages inside the BAR; empty ones vanish', () => {
  const a = barAreas({
    size: 16 * K,
    mmap: true,
    sparse: [
      { offset: 0x800, size: 0x1800 },
      { offset: 0x2100, size: 0x100 },
      { offset: 0x3000, size: 0x4000 },
    ],
  });
  assert.equal(a.mappable, [
    [0x1000, 0x2000],
    [0x3000, 0x4000],
  ]);
  assert.equal(a.trapped, [
    [0, 0x1000],
    [0x2000, 0x3000],
  ]);
});

test('a BAR smaller than a page never maps', () => {
  assert.equal(barAreas({ size: 0x100, mmap: true }), { mappable: [], trapped: [[0, 0x100]] });
});

test('slot table: a refused KVM slot leaves the area trapped, with its errno kept', () => {
  const sh = createShared(1);
  const slots = new Float64Array(sh.slots),
    bars = new Float64Array(MAX_DEVICES * BARS * BAR.WORDS);
  const row = slotRow(0, 0, 0);
  slots[row + SLOT.OFFSET] = 0;
  slots[row + SLOT.SIZE] = 0x2000;
  slots[row + SLOT.HVA] = 0x7f0000000000;
  bars[BAR.BASE] = 0xfe000000;
  bars[BAR.SIZE] = 0x4000;
  bars[BAR.KIND] = BAR_MEM;
  bars[BAR.ACTIVE] = 1;
  const s = new BarSlots(new Int32Array(sh.ctl), slots, -1); // not a VM fd: KVM refuses (EBADF)
  s.sync(bars);
  assert.is(slots[row + SLOT.GPA], SLOT_NONE);
  assert.is(slots[row + SLOT.ERRNO], 9);
  assert.equal(s.installed(), []);
  assert.is(new Int32Array(sh.ctl)[CTL.SLOT_LOCK], 0, 'the lock is released');
});

/** Two devices' BAR0s with one 8 KiB area each, and every KVM call the slot table makes. */
function twoBars() {
  const sh = createShared(1);
  const slots = new Float64Array(sh.slots),
    bars = new Float64Array(MAX_DEVICES * BARS * BAR.WORDS),
    calls: SlotRegion[] = [];
  for (const dev of [0, 1]) {
    const row = slotRow(dev, 0, 0);
    slots[row + SLOT.SIZE] = 0x2000;
    slots[row + SLOT.HVA] = 0x7f0000000000 + dev * 0x10000;
    const b = dev * BARS * BAR.WORDS;
    bars[b + BAR.SIZE] = 0x4000;
    bars[b + BAR.KIND] = BAR_MEM;
  }
  const place = (dev: number, base: number, on: boolean): void => {
    const b = dev * BARS * BAR.WORDS;
    bars[b + BAR.BASE] = base;
    bars[b + BAR.ACTIVE] = on ? 1 : 0;
  };
  const s = new BarSlots(new Int32Array(sh.ctl), slots, -1, (r) => {
    calls.push(r);
    return 0;
  });
  const log = (): string[] =>
    calls
      .splice(0)
      .map((c) => `${c.slot - FIRST_BAR_SLOT}:${c.size ? `0x${c.gpa.toString(16)}` : 'del'}`);
  return { s, bars, place, log };
}

test('slots follow the guest: placed, moved (delete, then add), decoding off', () => {
  const { s, bars, place, log } = twoBars();
  s.sync(bars);
  assert.equal(log(), [], 'decoding off: nothing installed');
  place(0, 0xc0000000, true);
  s.sync(bars);
  assert.equal(log(), ['0:0xc0000000']);
  s.sync(bars);
  assert.equal(log(), [], 'no change, no call');
  place(0, 0xd0000000, true);
  s.sync(bars);
  assert.equal(log(), ['0:del', '0:0xd0000000']);
  assert.equal(
    s.installed().map((i) => [i.device, i.bar, i.gpa]),
    [[0, 0, 0xd0000000]],
  );
  place(0, 0xd0000000, false);
  s.sync(bars);
  assert.equal(log(), ['0:del']);
  assert.equal(s.installed(), []);
});

test('two BARs trading addresses: both deletes come before either add', () => {
  const { s, bars, place, log } = twoBars();
  place(0, 0xc0000000, true);
  place(1, 0xc0004000, true);
  s.sync(bars);
  log();
  place(0, 0xc0004000, true);
  place(1, 0xc0000000, true);
  s.sync(bars);
  const dev1 = MAX_AREAS * BARS;
  assert.equal(log(), ['0:del', `${dev1}:del`, '0:0xc0004000', `${dev1}:0xc0000000`]);
});

test('clear() deletes every installed slot', () => {
  const { s, bars, place, log } = twoBars();
  place(0, 0xc0000000, true);
  place(1, 0xc0004000, true);
  s.sync(bars);
  log();
  s.clear();
  assert.equal(log(), ['0:del', `${MAX_AREAS * BARS}:del`]);
  assert.equal(s.installed(), []);
});

test.run();
