// The MSI-X/MSI vector logic (VectorSet) over a real emulated table and fake VFIO/KVM: vectors
// enabled in VFIO as the guest unmasks them (growing, or re-enabling under NORESIZE), relay
// delivery and pending bits, and in KVM mode the trigger switching QEMU does (userspace eventfd
// while masked or while a route is being committed; the irqfd once KVM has the message).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { VFIO_C } from '../../native/vfio.js';
import type { ConfigSpace } from '../../src/device/config-space.js';
import { MsixTableEmulator } from '../../src/device/msix-table.js';
import type { MsiMessage, RouteChange, RouteResult } from '../../src/irq/gsi-router.js';
import { createIrqState, IRQ, type IrqViews, irqViews, takeBits } from '../../src/irq/irq-state.js';
import { MsixVectors } from '../../src/irq/sources.js';
import { type IrqBackend, type IrqContext, VectorSet } from '../../src/irq/vector-set.js';

const X = VFIO_C.VFIO_PCI_MSIX_IRQ_INDEX;

class FakeVfio implements IrqBackend {
  calls: string[] = [];
  next = 100;
  counts = new Map<number, number>();
  constructor(readonly resizable = true) {}
  canResize(): boolean {
    return this.resizable;
  }
  setTrigger(index: number, v: number, fd: number): void {
    this.calls.push(`trigger ${index}:${v}=${fd}`);
  }
  setTriggers(index: number, fds: readonly number[]): void {
    this.calls.push(`enable ${index} [${fds.join(',')}]`);
  }
  disable(index: number): void {
    this.calls.push(`disable ${index}`);
  }
  newEventfd(): number {
    return this.next++;
  }
  take(fd: number): number {
    const n = this.counts.get(fd) ?? 0;
    this.counts.delete(fd);
    return n;
  }
}

class FakeRoutes {
  updates: RouteChange[][] = [];
  update(changes: RouteChange[]): Promise<RouteResult[]> {
    this.updates.push(changes);
    return Promise.resolve(changes.map((c) => ({ key: c.key, gsi: 24 + c.key })));
  }
}

interface Rig {
  set: VectorSet;
  table: MsixTableEmulator;
  cfg: { msixEnabled: boolean; msixFunctionMasked: boolean };
  vfio: FakeVfio;
  v: IrqViews;
  msis: MsiMessage[];
  routes: FakeRoutes;
  errors: string[];
  vmm: () => number[];
}

function rig(opts: { kvm?: boolean; resizable?: boolean } = {}): Rig {
  const table = new MsixTableEmulator(5);
  const cfg = { msixEnabled: false, msixFunctionMasked: false };
  const vfio = new FakeVfio(opts.resizable ?? true);
  const v = irqViews(createIrqState());
  const msis: MsiMessage[] = [],
    errors: string[] = [];
  const routes = new FakeRoutes();
  const ctx: IrqContext = {
    views: v,
    backend: vfio,
    publish: () => {
      Atomics.add(v.hdr, IRQ.GEN, 1);
    },
    error: (m) => errors.push(m),
  };
  if (opts.kvm) ctx.kvm = { route: routes, signalMsi: (m) => msis.push({ ...m }) };
  const set = new VectorSet(new MsixVectors(table, cfg as unknown as ConfigSpace, 5), ctx);
  table.listener = { vectorChanged: (i) => set.sync(i) };
  const vmm = (): number[] => {
    const out: number[] = [];
    takeBits(v.TO_VMM, (s) => out.push(s));
    return out;
  };
  return { set, table, cfg, vfio, v, msis, routes, errors, vmm };
}

const le = (x: number): Uint8Array => new Uint8Array(new Uint32Array([x]).buffer);
function program(t: MsixTableEmulator, i: number, lo: number, data: number): void {
  t.writeTable(i * 16, le(lo), 4);
  t.writeTable(i * 16 + 4, le(0), 4);
  t.writeTable(i * 16 + 8, le(data), 4);
}
const unmask = (t: MsixTableEmulator, i: number): void => t.writeTable(i * 16 + 12, le(0), 4);
const mask = (t: MsixTableEmulator, i: number): void => t.writeTable(i * 16 + 12, le(1), 4);

test('relay: enable with no usable vector, then vectors are added as the guest unmasks them', () => {
  const r = rig();
  r.cfg.msixEnabled = true;
  r.set.enable();
  assert.equal(r.vfio.calls, ['enable 2 [-1]'], 'MSI-X on in VFIO with one unused vector, as QEMU');
  program(r.table, 2, 0xfee00000, 0x42);
  assert.equal(r.vfio.calls.length, 1, 'programming a masked entry touches nothing');
  unmask(r.table, 2);
  assert.equal(r.vfio.calls.slice(1), [`trigger ${X}:2=100`]);
  assert.is(r.set.vfioCount, 3);
  assert.is(r.v.DIRECT[2], 1, 'the poller may report vector 2 straight to the host');
  assert.is(Atomics.load(r.v.hdr, IRQ.GEN), 1, 'the poller was told about the new eventfd');
});

test('relay NORESIZE: a new vector beyond the enabled count disables and re-enables with more', () => {
  const r = rig({ resizable: false });
  r.cfg.msixEnabled = true;
  program(r.table, 0, 0xfee00000, 0x40);
  unmask(r.table, 0);
  r.set.enable();
  assert.equal(r.vfio.calls, ['enable 2 [100]']);
  program(r.table, 3, 0xfee00000, 0x43);
  unmask(r.table, 3);
  assert.equal(r.vfio.calls.slice(1), ['disable 2', 'enable 2 [100,-1,-1,101]']);
  assert.is(r.set.vfioCount, 4);
});

test('relay: delivered when unmasked; while masked the PBA bit is set and it is delivered on unmask', () => {
  const r = rig();
  r.cfg.msixEnabled = true;
  r.set.enable();
  program(r.table, 1, 0xfee00000, 0x41);
  unmask(r.table, 1);
  r.set.fired(1);
  assert.equal(r.vmm(), [1]);
  assert.is(r.v.DELIVERED[1], 1);
  mask(r.table, 1);
  assert.is(r.v.DIRECT[1], 0);
  r.set.fired(1);
  assert.equal(r.vmm(), [], 'nothing delivered while masked');
  assert.ok(r.table.pending(1), 'PBA bit set');
  assert.is(r.v.PENDED[1], 1);
  unmask(r.table, 1);
  assert.not.ok(r.table.pending(1), 'PBA bit cleared on unmask');
  assert.equal(r.vmm(), [1], 'the pending interrupt is delivered on unmask');
  assert.is(r.v.DELIVERED[1], 2);
  // Function mask masks every vector; a PBA read folds in what fired on the eventfd.
  r.cfg.msixFunctionMasked = true;
  r.set.syncAll();
  assert.is(r.v.DIRECT[1], 0);
  r.vfio.counts.set(100, 3);
  r.set.pollMasked();
  assert.ok(r.table.pending(1));
  assert.is(r.v.FIRED[1], 3);
  r.cfg.msixFunctionMasked = false;
  r.set.syncAll();
  assert.equal(r.vmm(), [1]);
  assert.not.ok(r.table.pending(1));
  r.cfg.msixEnabled = false;
  r.set.disable();
  assert.equal(r.vfio.calls.at(-1), 'disable 2');
  assert.is(r.v.TRIGGER[1], -1);
  r.set.fired(1);
  assert.equal(r.vmm(), [], 'a stale firing after disable is dropped'); // Metrics: unmask, mask, unmask, function mask, function unmask, disable.
  assert.equal([r.v.MASKS[1], r.v.UNMASKS[1]], [3, 3], 'mask and unmask transitions counted');
});

test('KVM: unmask routes the message, then points VFIO at the irqfd; mask goes back to userspace at once', async () => {
  const r = rig({ kvm: true });
  r.cfg.msixEnabled = true;
  r.set.enable();
  program(r.table, 0, 0xfee00000, 0x30);
  program(r.table, 1, 0xfee01000, 0x31);
  unmask(r.table, 0);
  unmask(r.table, 1);
  // Vector 0: user 100, kvm 101; vector 1: user 102, kvm 103. VFIO gets the userspace fds until KVM has the routes.
  assert.equal(r.vfio.calls.slice(1), [`trigger ${X}:0=100`, `trigger ${X}:1=102`]);
  await r.set.settled();
  assert.is(r.routes.updates.length, 1, 'two unmasks in one turn: one route update');
  assert.equal(r.routes.updates[0], [
    { key: 0, fd: 101, msi: { lo: 0xfee00000, hi: 0, data: 0x30 } },
    { key: 1, fd: 103, msi: { lo: 0xfee01000, hi: 0, data: 0x31 } },
  ]);
  assert.equal(
    r.vfio.calls.slice(3),
    [`trigger ${X}:0=101`, `trigger ${X}:1=103`],
    'then the irqfds',
  );
  assert.equal([r.v.GSI[0], r.v.GSI[1], r.v.ROUTED[0]], [24, 25, 1]);
  // Mask: back to the userspace eventfd synchronously (before the MMIO write completes), route removed after.
  mask(r.table, 1);
  assert.equal(r.vfio.calls.at(-1), `trigger ${X}:1=102`);
  await r.set.settled();
  assert.equal(r.routes.updates.at(-1), [{ key: 1, fd: 103, msi: null }]);
  assert.is(r.v.ROUTED[1], 0);
  // A firing while masked sets the PBA bit; unmask delivers it by KVM_SIGNAL_MSI at once, then restores the route.
  r.set.fired(1);
  assert.ok(r.table.pending(1));
  assert.equal(r.msis, []);
  unmask(r.table, 1);
  assert.equal(r.msis, [{ lo: 0xfee01000, hi: 0, data: 0x31 }]);
  assert.not.ok(r.table.pending(1));
  await r.set.settled();
  assert.equal(r.routes.updates.at(-1), [
    { key: 1, fd: 103, msi: { lo: 0xfee01000, hi: 0, data: 0x31 } },
  ]);
  assert.equal(r.vfio.calls.at(-1), `trigger ${X}:1=103`);
  // A message change on an unmasked vector: userspace first, the new route, then the irqfd again.
  const n = r.vfio.calls.length;
  r.table.writeTable(0 * 16 + 8, le(0x35), 4);
  assert.equal(r.vfio.calls.slice(n), [`trigger ${X}:0=100`]);
  r.set.fired(0);
  assert.equal(
    r.msis.at(-1),
    { lo: 0xfee00000, hi: 0, data: 0x35 },
    'meanwhile a firing is injected with the new message',
  );
  await r.set.settled();
  assert.equal(r.routes.updates.at(-1), [
    { key: 0, fd: 101, msi: { lo: 0xfee00000, hi: 0, data: 0x35 } },
  ]);
  assert.equal(r.vfio.calls.slice(n + 1), [`trigger ${X}:0=101`]);
  // Disable removes every route in one update.
  r.cfg.msixEnabled = false;
  r.set.disable();
  await r.set.settled();
  assert.equal(
    r.routes.updates.at(-1)!.map((c) => [c.key, 'msi' in c ? c.msi : 'intx']),
    [
      [0, null],
      [1, null],
    ],
  );
  assert.equal(r.errors, []); // Metrics: one commit counted per route update.
  assert.is(Atomics.load(r.v.hdr, IRQ.ROUTE_COMMITS), r.routes.updates.length);
});

test('KVM: rewriting an entry without changing it makes no route update', async () => {
  const r = rig({ kvm: true });
  r.cfg.msixEnabled = true;
  r.set.enable();
  program(r.table, 4, 0xfee00000, 0x44);
  unmask(r.table, 4);
  await r.set.settled();
  const updates = r.routes.updates.length;
  program(r.table, 4, 0xfee00000, 0x44);
  await r.set.settled();
  assert.is(r.routes.updates.length, updates);
});

test.run();
