// The VMM's PCI bus as a vCPU sees it, against a fake function served by a ring in another
// thread: configuration mechanism #1, the host bridge, absent functions, BAR snooping (the BAR
// map follows the guest's BAR and command writes) and a refused BAR access reading all ones.

import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { RingClient } from '../../src/ring/client.js';
import { createRingBuffer } from '../../src/ring/protocol.js';
import { ExitDevices } from '../../src/vmm/devices.js';
import { KIND_IO, KIND_MEM32, PciBus } from '../../src/vmm/pci-bus.js';
import { BAR, BARS, CTL, MAX_DEVICES, STAT } from '../../src/vmm/shared.js';
import { initUart, Uart } from '../../src/vmm/uart.js';
import { supportUrl } from '../support/threads.js';

const ring = createRingBuffer();
const worker = new Worker(supportUrl('vmm-device-thread.js'), {
  workerData: { role: 'fake-pci', ring },
});
const ctl = new Int32Array(new SharedArrayBuffer(CTL.COUNT * 4));
const bars = new Float64Array(MAX_DEVICES * BARS * BAR.WORDS);
const stats = new Float64Array(STAT.WORDS);
initUart(ctl);
const bus = new PciBus(ctl, bars, [new RingClient(ring)], stats, 0);
const dev = new ExitDevices(
  ctl,
  new Uart(
    ctl,
    () => {},
    () => {},
  ),
  bus,
  stats,
  0,
);
bars[BAR.SIZE] = 0x1000;
bars[BAR.KIND] = KIND_MEM32;
bars[2 * BAR.WORDS + BAR.SIZE] = 0x20;
bars[2 * BAR.WORDS + BAR.KIND] = KIND_IO;

const addr = (slot: number, reg: number, fn = 0, bus = 0): number =>
  (0x80000000 | (bus << 16) | (slot << 11) | (fn << 8) | reg) >>> 0;
const cfgRead = (slot: number, reg: number, size: number, fn = 0, b = 0): number => {
  dev.outPort(0xcf8, 4, addr(slot, reg & 0xfc, fn, b));
  return dev.inPort(0xcfc + (reg & 3), size);
};
const cfgWrite = (slot: number, reg: number, size: number, v: number): void => {
  dev.outPort(0xcf8, 4, addr(slot, reg & 0xfc));
  dev.outPort(0xcfc + (reg & 3), size, v);
};

test('the address latch reads back; byte accesses to 0xcf8-0xcfb are not the latch', () => {
  dev.outPort(0xcf8, 4, 0x80000000);
  assert.is(dev.inPort(0xcf8, 4), 0x80000000);
  dev.outPort(0xcfb, 1, 1);
  assert.is(dev.inPort(0xcf8, 4), 0x80000000);
});

test('00:00.0 is the host bridge; absent slots, functions and buses read all ones', () => {
  assert.is(cfgRead(0, 0, 4), 0x12378086);
  assert.is(cfgRead(0, 0x0a, 2), 0x0600);
  assert.is(cfgRead(2, 0, 4), 0xffffffff);
  assert.is(cfgRead(1, 0, 2, 1), 0xffff);
  assert.is(cfgRead(1, 0, 4, 0, 1), 0xffffffff);
});

test('a device slot answers through its ring, at any width and offset', () => {
  assert.is(cfgRead(1, 0, 4), 0x56781234);
  assert.is(cfgRead(1, 2, 2), 0x5678);
  assert.is(cfgRead(1, 1, 1), 0x12);
});

test('the BAR map follows the guest: sizing, placing, decoding on and off', () => {
  cfgWrite(1, 0x10, 4, 0xffffffff);
  assert.is(cfgRead(1, 0x10, 4), 0xfffff000, 'BAR0 sizes as 4 KiB');
  assert.not.ok(dev.pci.lookup(0xfffff010, false), 'decoding is off');
  cfgWrite(1, 0x10, 4, 0xd0000000);
  cfgWrite(1, 0x18, 4, 0xc100);
  cfgWrite(1, 0x04, 2, 0x3);
  assert.ok(bus.lookup(0xd0000010, false));
  assert.equal([bus.hitDevice, bus.hitBar, bus.hitOffset], [0, 0, 0x10]);
  assert.not.ok(bus.lookup(0xd0001000, false), 'past the end of the BAR');
  assert.ok(bus.lookup(0xc104, true));
  assert.equal([bus.hitBar, bus.hitOffset], [2, 4]);
  assert.is(dev.mmio(0xd0000010, 4, false, 0, 0), 0x10);
  assert.is(dev.inPort(0xc104, 2), 4);
  cfgWrite(1, 0x10, 4, 0xd0100000);
  assert.not.ok(bus.lookup(0xd0000010, false), 'the old address no longer decodes');
  assert.ok(bus.lookup(0xd0100010, false));
});

test('a BAR access the device refuses reads all ones, a write is dropped, both are counted', () => {
  cfgWrite(1, 0x04, 2, 0x1); // memory decoding off in the device, but the VMM's map is stale on purpose
  bars[BAR.ACTIVE] = 1;
  const refused = stats[STAT.REFUSED]!;
  assert.is(dev.mmio(0xd0100010, 4, false, 0, 0), 0xffffffff);
  dev.mmio(0xd0100010, 4, true, 5, 0);
  assert.is(stats[STAT.REFUSED]! - refused, 2);
  assert.is(dev.mmio(0xe0000000, 2, false, 0, 0), 0xffff, 'nothing there: all ones');
  assert.ok(stats[STAT.UNKNOWN_MMIO]! >= 1);
});

test.after(async () => {
  worker.postMessage('stop');
  await once(worker, 'message');
  await worker.terminate();
});
test.run();
