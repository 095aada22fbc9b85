// MSI-X table emulation (every access width the spec allows, the reserved bits of vector
// control, listener calls, PBA) and the MSI source over an emulated capability (enable,
// multiple-message data bits, per-vector mask and pending bits); VectorSet resuming from the
// shared state a previous worker left.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type ConfigIo, ConfigSpace } from '../../src/device/config-space.js';
import { MsixTableEmulator } from '../../src/device/msix-table.js';
import type { MsiMessage, RouteChange, RouteResult } from '../../src/irq/gsi-router.js';
import { createIrqState, irqViews } from '../../src/irq/irq-state.js';
import { MsiVectors, MsixVectors } from '../../src/irq/sources.js';
import { type IrqBackend, type IrqContext, VectorSet } from '../../src/irq/vector-set.js';

const bytes = (...b: number[]): Uint8Array => new Uint8Array(b);

test('MSI-X table: qword, dword, word and byte accesses; only the mask bit of vector control is writable', () => {
  const t = new MsixTableEmulator(4);
  const changed: number[] = [];
  t.listener = { vectorChanged: (v) => changed.push(v) };
  assert.ok(
    [0, 1, 2, 3].every((v) => t.masked(v)),
    'every vector starts masked',
  );
  t.writeTable(16, bytes(0x00, 0x10, 0xe0, 0xfe, 0x01, 0, 0, 0), 8); // vector 1 address, one qword
  assert.is(t.addressLo(1), 0xfee01000);
  assert.is(t.addressHi(1), 1);
  t.writeTable(24, bytes(0x41, 0x00, 0x00, 0x00, 0xfe, 0xff, 0xff, 0xff), 8); // data + vector control
  assert.is(t.data(1), 0x41);
  assert.not.ok(t.masked(1), 'mask bit cleared');
  const out = new Uint8Array(4);
  t.readTable(28, out, 4);
  assert.equal([...out], [0, 0, 0, 0], 'reserved vector-control bits stay zero');
  t.writeTable(28, bytes(1), 1);
  assert.ok(t.masked(1), 'a byte write sets the mask bit');
  t.writeTable(40, bytes(0x34, 0x12), 2);
  assert.is(t.data(2) & 0xffff, 0x1234);
  assert.equal(changed, [1, 1, 1, 2], 'one call per affected vector per access');
  const q = new Uint8Array(8);
  t.readTable(16, q, 8);
  assert.equal([...q], [0x00, 0x10, 0xe0, 0xfe, 0x01, 0, 0, 0]);
  // fits(): the widths and alignments a guest may use, inside the region
  assert.ok(MsixTableEmulator.fits(56, 8, 64));
  assert.not.ok(MsixTableEmulator.fits(60, 8, 64), 'past the end');
  assert.not.ok(MsixTableEmulator.fits(2, 4, 64), 'misaligned');
  assert.not.ok(MsixTableEmulator.fits(0, 3, 64), 'width 3');
  assert.not.ok(MsixTableEmulator.fits(0, 16, 64), 'wider than a qword');
  // PBA: one bit per vector in qwords; a read gives the listener its chance first
  let reads = 0;
  t.listener = {
    vectorChanged: () => {},
    pbaRead: () => {
      reads++;
      t.setPending(3, true);
    },
  };
  const p = new Uint8Array(8);
  t.readPba(0, p, 8);
  assert.is(reads, 1);
  assert.is(p[0], 0x08);
  assert.is(MsixTableEmulator.pbaBytes(65), 16);
});

/** A config image with an MSI capability at 0x50: 64-bit, per-vector masking, 8 vectors capable. */
function msiConfig(): ConfigSpace {
  const img = Buffer.alloc(256);
  img.writeUInt16LE(0x8086, 0);
  img.writeUInt16LE(0x0010, 6);
  img[0x34] = 0x50;
  img[0x50] = 0x05;
  img[0x51] = 0;
  img.writeUInt16LE(0x0180 | (3 << 1), 0x52);
  const io: ConfigIo = {
    read: (o, s) => (s === 4 ? img.readUInt32LE(o) : s === 2 ? img.readUInt16LE(o) : img[o]!),
    write: () => {},
  };
  return new ConfigSpace(io, new Uint8Array(img), [], {});
}

test('MSI source: enable, multiple message enable, vector number in the data, mask and pending bits', () => {
  const cs = msiConfig();
  const src = new MsiVectors(cs, 8);
  assert.is(src.size, 8);
  assert.not.ok(src.enabled());
  cs.write(0x54, 4, 0xfee00000);
  cs.write(0x58, 4, 0);
  cs.write(0x5c, 2, 0x4c);
  cs.write(0x52, 2, 0x0001 | (2 << 4)); // enable, 4 messages
  assert.ok(src.enabled());
  assert.is(src.active(), 4);
  const m: MsiMessage = { lo: 0, hi: 0, data: 0 };
  src.message(3, m);
  assert.equal(
    m,
    { lo: 0xfee00000, hi: 0, data: 0x4f },
    'the low 2 bits of the data carry the vector',
  );
  assert.ok(src.deliverable(3));
  assert.not.ok(src.deliverable(4), 'beyond the enabled messages');
  cs.write(0x60, 4, 0b1000); // mask vector 3
  assert.not.ok(src.deliverable(3));
  src.setPending(3, true);
  assert.is(cs.read(0x64, 4), 0b1000, 'the guest reads the pending bit');
  cs.write(0x64, 4, 0);
  assert.is(cs.read(0x64, 4), 0b1000, 'pending bits are read-only to the guest');
  src.setPending(3, false);
  assert.is(cs.read(0x64, 4), 0);
});

test('VectorSet resumes from shared state: a new worker re-sends the routes and keeps the eventfds', async () => {
  const irq = createIrqState();
  const table = new MsixTableEmulator(4);
  const cfg = { msixEnabled: true, msixFunctionMasked: false };
  const calls: string[] = [],
    updates: RouteChange[][] = [];
  let next = 50;
  const backend: IrqBackend = {
    canResize: () => true,
    take: () => 0,
    newEventfd: () => next++,
    setTrigger: (_i, v, fd) => {
      calls.push(`trigger ${v}=${fd}`);
    },
    setTriggers: (_i, fds) => {
      calls.push(`enable [${fds}]`);
    },
    disable: () => {
      calls.push('disable');
    },
  };
  const route = {
    update: (c: RouteChange[]): Promise<RouteResult[]> => {
      updates.push(c);
      return Promise.resolve(c.map((x) => ({ key: x.key, gsi: 30 + x.key })));
    },
  };
  const make = (): VectorSet => {
    const ctx: IrqContext = {
      views: irqViews(irq),
      backend,
      publish: () => {},
      error: (m) => {
        throw new Error(m);
      },
      kvm: { route, signalMsi: () => {} },
    };
    return new VectorSet(new MsixVectors(table, cfg as unknown as ConfigSpace, 4), ctx);
  };
  const first = make();
  table.writeTable(0, bytes(0, 0, 0xe0, 0xfe, 0, 0, 0, 0, 0x41, 0, 0, 0, 0, 0, 0, 0), 8);
  table.writeTable(8, bytes(0x41, 0, 0, 0, 0, 0, 0, 0), 8);
  first.enable();
  await first.settled();
  assert.equal(calls, ['enable [50]', 'trigger 0=51']);
  // The worker dies; its successor builds a new VectorSet over the same shared state.
  calls.length = 0;
  const second = make();
  assert.is(second.vfioCount, 1);
  second.resume();
  await second.settled();
  assert.equal(
    updates.at(-1),
    [{ key: 0, fd: 51, msi: { lo: 0xfee00000, hi: 0, data: 0x41 } }],
    'the route is sent again',
  );
  assert.is(next, 52, 'no new eventfd');
  assert.equal(
    calls,
    ['trigger 0=50', 'trigger 0=51'],
    'userspace while the route is re-committed, then the irqfd',
  );
});

test.run();
