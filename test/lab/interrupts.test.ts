// Interrupts on the real kernel, programmed as a guest would (through the ring): e1000e MSI-X in
// relay mode (host callback) and with a KVM VM (GsiRouter commits, irqfd consumed by KVM, seen
// in vCPU 0's APIC IRR), masking with the PBA, edu MSI and INTx, and the relay-mode latency
// against a C program polling the eventfd itself (bench/c/irq-latency.c).

import { spawnSync } from 'node:child_process';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { compileC, median } from '../../bench/support.js';
import { raw } from '../../native/libc.js';
import * as vfio from '../../native/vfio.js';
import { DeviceHandle, type InterruptEvent } from '../../src/coordinator/device-handle.js';
import { drainEventfd } from '../../src/irq/eventfd.js';
import { GsiRouter } from '../../src/irq/gsi-router.js';
import { irqViews, SRC } from '../../src/irq/irq-state.js';
import type { RingClient } from '../../src/ring/client.js';
import { OP, STATUS } from '../../src/ring/protocol.js';
import {
  ApicVm,
  busMaster,
  E1000E,
  EDU,
  e1000eRaise,
  GuestMsi,
  GuestMsix,
  sleep,
  until,
} from '../support/guest-irq.js';
import { loud } from '../support/hooks.js';
import { labDevice, openOnIommufd, requireLab } from '../support/lab.js';

const V = vfio.VFIO_C;
const MSI_ADDR = 0xfee00000; // destination APIC 0, physical, fixed

/**
 * One VM (and its one GsiRouter) for every KVM test in this file, as a VMM has: creating and
 * destroying VMs flips a static key in the guest kernel's scheduler (KVM's preempt notifiers),
 * and the lab's TCG now and then runs stale code on the other vCPU while that is patched.
 */
let shared: { vm: ApicVm; router: GsiRouter } | undefined;
function sharedVm(): { vm: ApicVm; router: GsiRouter } {
  if (!shared) {
    const vm = new ApicVm();
    shared = { vm, router: new GsiRouter(vm.vm) };
  }
  return shared;
}

// ---------------------------------------------------------------- e1000e, relay mode
const relay = suite('e1000e MSI-X in relay mode (no KVM): host callback, masking, PBA, latency');
const r: {
  handle?: DeviceHandle;
  c?: RingClient;
  gm?: GuestMsix;
  events: InterruptEvent[];
  onEvent?: () => void;
  dev?: { fd: number; path: string };
  close?: () => void;
} = { events: [] };

relay.before(
  loud('relay before', async () => {
    requireLab();
    const o = openOnIommufd(labDevice('e1000e'));
    r.dev = o.dev;
    r.close = o.close;
    r.handle = await DeviceHandle.start({
      name: 'e1000e-relay',
      device: o.dev,
      onInterrupt: (e) => {
        r.events.push(e);
        r.onEvent?.();
      },
    });
    r.c = r.handle.client();
    r.gm = new GuestMsix(r.c, r.handle.description);
  }),
);
relay.after(async () => {
  await r.handle?.shutdown();
  r.close?.();
});

relay(
  'a table entry programmed through the ring, then ICS: the interrupt arrives on that vector',
  async () => {
    const { c, gm, handle } = r as Required<typeof r>;
    assert.is(
      (await handle.irqStatus()).mode,
      'intx',
      'INTx until the guest enables MSI-X (as QEMU)',
    );
    busMaster(c);
    gm.control(true, true); // Linux enables MSI-X with the function masked, programs, then unmasks
    gm.program(2, MSI_ADDR, 0x42);
    gm.control(true, false);
    gm.mask(2, false);
    c.barWrite(0, E1000E.IVAR, 4, 0x8 | 2); // RxQ0 → vector 2
    c.barWrite(0, E1000E.IMS, 4, E1000E.RXQ0);
    const st = await handle.irqStatus();
    console.log(
      `    mode ${st.mode}, VFIO MSI-X vectors ${st.vfioVectors.msix} (resizable: ${st.msixResizable}), in use: ${st.vectors.map((x) => `${x.kind}${x.vector}:${x.trigger}${x.direct ? '/direct' : ''}`).join(' ')}`,
    );
    assert.is(st.mode, 'msix');
    assert.equal(st.errors, []);
    assert.ok(
      st.vectors.some(
        (x) => x.kind === 'msix' && x.vector === 2 && x.trigger === 'user' && x.direct,
      ),
    );
    e1000eRaise(c);
    await until('the interrupt', () => r.events.length > 0);
    await sleep(100);
    assert.equal(r.events, [{ kind: 'msix', vector: 2, count: 1 }]);
    assert.equal(handle.interruptCounts('msix', 2), { fired: 1, delivered: 1, pended: 0 });
  },
);

relay(
  'masked: nothing delivered and its PBA bit reads 1; on unmask it is delivered and the bit clears',
  async () => {
    const { c, gm, handle } = r as Required<typeof r>;
    r.events.length = 0;
    gm.mask(2, true);
    assert.not.ok(gm.pending(2));
    e1000eRaise(c);
    await until('PBA bit 2', () => gm.pending(2));
    await sleep(200);
    assert.equal(r.events, [], 'nothing reached the host while masked');
    assert.is(gm.pending(0) || gm.pending(1) || gm.pending(3), false, 'only vector 2 is pending');
    gm.mask(2, false);
    await until('delivery on unmask', () => r.events.length > 0);
    assert.equal(r.events, [{ kind: 'msix', vector: 2, count: 1 }]);
    assert.not.ok(gm.pending(2), 'PBA bit cleared');
    const n = handle.interruptCounts('msix', 2);
    console.log(`    vector 2: fired ${n.fired}, delivered ${n.delivered}, pended ${n.pended}`);
    assert.equal(n, { fired: 2, delivered: 2, pended: 1 });
  },
);

relay(
  'table and PBA accesses of every allowed width; straddling the table end is refused; PBA writes are ignored',
  async () => {
    const { c, gm } = r as Required<typeof r>;
    const { tableBar, tableOffset, vectors, pbaBar, pbaOffset } = gm.m;
    c.barWrite64(tableBar, tableOffset + 16 * 4, 0x00000000fee01000n); // vector 4 address as one qword
    assert.is(c.barRead(tableBar, tableOffset + 16 * 4, 4), 0xfee01000);
    assert.is(c.barRead(tableBar, tableOffset + 16 * 4 + 1, 1), 0x10, 'byte read');
    assert.is(c.barRead(tableBar, tableOffset + 16 * 4 + 2, 2), 0xfee0, 'word read');
    const end = tableOffset + 16 * vectors;
    assert.is(c.call(OP.BAR_READ, tableBar, end - 4, 8), STATUS.MISALIGNED, 'a qword not aligned');
    assert.is(
      c.call(OP.BAR_READ, tableBar, end - 8, 16),
      STATUS.OUT_OF_RANGE,
      'a 16-byte read over the table end',
    );
    const pba = c.barRead64(pbaBar, pbaOffset);
    c.barWrite64(pbaBar, pbaOffset, 0xffffffffffffffffn);
    assert.is(c.barRead64(pbaBar, pbaOffset), pba, 'the PBA is read-only');
    assert.is(
      c.barRead(tableBar, tableOffset + 16 * 2 + 8, 4),
      0x42,
      'still serving; vector 2 intact',
    );
    assert.equal((await r.handle!.irqStatus()).errors, []);
  },
);

relay('latency, device write → host callback, against C polling the VFIO eventfd', async () => {
  const { c, handle } = r as Required<typeof r>;
  const bin = compileC('irq-latency');
  const N = 200;
  const bar0 = vfio.deviceGetRegionInfo(r.dev!, 0).offset;
  const reg = Buffer.alloc(4);
  reg.writeUInt32LE(E1000E.RXQ0);
  /** N interrupts; `write` raises one. Returns µs from before the write to the host callback. */
  const measure = async (write: () => void): Promise<{ total: number[]; write: number[] }> => {
    const total: number[] = [],
      writes: number[] = [];
    for (let i = -10; i < N; i++) {
      const got = new Promise<void>((resolve, reject) => {
        const t = setTimeout(
          () => reject(new Error(`no interrupt within 2 s (iteration ${i})`)),
          2000,
        );
        r.onEvent = () => {
          clearTimeout(t);
          resolve();
        };
      });
      c.barWrite(0, E1000E.ICR, 4, E1000E.RXQ0);
      const t0 = performance.now();
      write();
      const t1 = performance.now();
      await got;
      if (i >= 0) {
        total.push((performance.now() - t0) * 1000);
        writes.push((t1 - t0) * 1000);
      }
    }
    r.onEvent = undefined;
    return { total, write: writes };
  };
  // As a guest's write arrives: through the device's ring (the worker makes the pwrite).
  const ring = await measure(() => c.barWrite(0, E1000E.ICS, 4, E1000E.RXQ0));
  // The interrupt path alone: the same pwrite made here, the runtime doing the rest (poller → callback).
  const direct = await measure(() => {
    if (raw.pwrite(r.dev!.fd, reg, 4, bar0 + BigInt(E1000E.ICS)) !== 4)
      throw new Error('pwrite ICS failed');
  });
  await handle.shutdown();
  r.handle = undefined;
  // The same device fd, its interrupts now off: the C program binds vector 2 itself.
  const out = spawnSync(
    bin,
    [
      '3',
      String(V.VFIO_PCI_MSIX_IRQ_INDEX),
      '2',
      String(bar0 + BigInt(E1000E.ICS)),
      String(E1000E.RXQ0),
      String(N),
      String(bar0 + BigInt(E1000E.ICR)),
      String(E1000E.RXQ0),
    ],
    { stdio: ['ignore', 'pipe', 'inherit', r.dev!.fd], encoding: 'utf8' },
  );
  assert.is(out.status, 0, `irq-latency exited with ${out.status}`);
  const [cMed, cP90] = out.stdout
    .trim()
    .split(' ')
    .map((x) => Number(x) / 1000) as [number, number];
  const p90 = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.9)]!;
  const f = (x: number): string => x.toFixed(1);
  console.log(
    `    relay latency, µs in the lab guest (medians, p90 in brackets), ${N} interrupts each:`,
  );
  console.log(`      C, pwrite + poll(eventfd):                  ${f(cMed)} [${f(cP90)}]`);
  console.log(
    `      runtime, pwrite → poller → host callback:    ${f(median(direct.total))} [${f(p90(direct.total))}]  ratio ${(median(direct.total) / cMed).toFixed(2)}`,
  );
  console.log(
    `      runtime, ring write → ... → host callback:   ${f(median(ring.total))} [${f(p90(ring.total))}]  ratio ${(median(ring.total) / cMed).toFixed(2)} (the ring write alone: ${f(median(ring.write))})`,
  );
  console.log(
    `    IRQ_LATENCY_JSON ${JSON.stringify({ n: N, c_median_us: cMed, c_p90_us: cP90, direct_median_us: median(direct.total), direct_p90_us: p90(direct.total), direct_ratio: median(direct.total) / cMed, ring_median_us: median(ring.total), ring_p90_us: p90(ring.total), ring_ratio: median(ring.total) / cMed, ring_write_median_us: median(ring.write) })}`,
  );
});

relay.run();

// ---------------------------------------------------------------- e1000e with KVM
const kv = suite(
  'e1000e MSI-X routed by KVM: a commit per mask/unmask/message change, irqfd consumed by KVM',
);
const k: {
  vm?: ApicVm;
  router?: GsiRouter;
  handle?: DeviceHandle;
  c?: RingClient;
  gm?: GuestMsix;
  events: InterruptEvent[];
  close?: () => void;
} = { events: [] };
const NAME = 'e1000e-kvm';

kv.before(
  loud('kvm before', async () => {
    requireLab();
    ({ vm: k.vm, router: k.router } = sharedVm());
    const o = openOnIommufd(labDevice('e1000e'));
    k.close = o.close;
    k.handle = await DeviceHandle.start({
      name: NAME,
      device: o.dev,
      router: k.router,
      onInterrupt: (e) => k.events.push(e),
    });
    k.c = k.handle.client();
    k.gm = new GuestMsix(k.c, k.handle.description);
    busMaster(k.c);
    k.c.barWrite(0, E1000E.ICR, 4, 0xffffffff); // nothing left asserted from an earlier user (INTx is on until MSI-X is)
    k.c.barWrite(0, E1000E.IMS, 4, E1000E.RXQ0);
  }),
);
kv.after(async () => {
  await k.handle?.shutdown();
  k.close?.();
});

/** The committed KVM table holds exactly the guest's deliverable entries, with the guest's messages. */
function assertRoutesMatchGuest(): void {
  const { gm, router } = k as Required<typeof k>;
  const routes = router.routesOf(NAME),
    table = router.table();
  const enabled = (k.c!.cfgRead(gm.cap + 2, 2) & 0xc000) === 0x8000;
  for (let v = 0; v < gm.m.vectors; v++) {
    const e = gm.entry(v),
      route = routes.get(SRC.MSIX + v);
    const kvmEntry = route && table.find((x) => x.gsi === route.gsi);
    if (enabled && !e.masked) {
      assert.equal(
        route?.msi,
        { lo: e.lo, hi: e.hi, data: e.data },
        `vector ${v}: committed route`,
      );
      assert.equal(
        kvmEntry?.u?.msi,
        { address_lo: e.lo, address_hi: e.hi, data: e.data },
        `vector ${v}: entry in the table KVM accepted`,
      );
    } else {
      assert.is(route?.msi ?? null, null, `vector ${v} is masked: no route`);
      assert.is(kvmEntry, undefined, `vector ${v} is masked: not in KVM's table`);
    }
  }
}

const kvmFd = (v: number): number => irqViews(k.handle!.memory.irq).KVM_FD[SRC.MSIX + v]!;

kv('unmask: one routing commit; the committed table matches the guest MSI-X table', async () => {
  const { gm, router, handle } = k as Required<typeof k>;
  gm.control(true, true);
  gm.program(1, MSI_ADDR, 0x41);
  gm.control(true, false);
  await handle.irqSettled();
  const c0 = router.commits;
  gm.mask(1, false);
  await handle.irqSettled();
  assert.is(router.commits, c0 + 1, 'unmask → one KVM_SET_GSI_ROUTING');
  assertRoutesMatchGuest();
  const st = await handle.irqStatus();
  const v1 = st.vectors.find((x) => x.kind === 'msix' && x.vector === 1)!;
  console.log(
    `    vector 1: GSI ${v1.gsi}, VFIO → ${v1.trigger} eventfd, route ${JSON.stringify(v1.route)}; KVM table ${router.table().length} entries`,
  );
  assert.is(v1.trigger, 'kvm');
  assert.equal(st.errors, []);
});

kv(
  'an interrupt on a routed vector is consumed by KVM: userspace sees nothing, vCPU 0 has it in IRR',
  async () => {
    const { c, vm, handle } = k as Required<typeof k>;
    c.barWrite(0, E1000E.IVAR, 4, 0x8 | 1);
    assert.not.ok(vm.irr(0x41));
    e1000eRaise(c);
    await until('IRR 0x41 in vCPU 0', () => vm.irr(0x41));
    await sleep(100);
    assert.equal(
      handle.interruptCounts('msix', 1),
      { fired: 0, delivered: 0, pended: 0 },
      'the userspace eventfd never fired',
    );
    assert.is(drainEventfd(kvmFd(1)), 0n, "KVM's irqfd consumed the signal");
    assert.equal(k.events, []);
  },
);

kv(
  'mask: one commit removing the route; a firing sets the PBA bit; unmask: one commit and the pending interrupt is injected',
  async () => {
    const { c, gm, router, vm, handle } = k as Required<typeof k>;
    const c0 = router.commits;
    gm.mask(1, true);
    await handle.irqSettled();
    assert.is(router.commits, c0 + 1, 'mask → one commit');
    assertRoutesMatchGuest();
    gm.program(1, MSI_ADDR, 0x51);
    await handle.irqSettled();
    assert.is(router.commits, c0 + 1, 'a message change on a masked vector needs no commit');
    e1000eRaise(c);
    await until('PBA bit 1', () => gm.pending(1));
    assert.not.ok(vm.irr(0x51));
    gm.mask(1, false);
    await handle.irqSettled();
    assert.is(router.commits, c0 + 2, 'unmask → one commit');
    assertRoutesMatchGuest();
    await until('IRR 0x51 (the pending interrupt, KVM_SIGNAL_MSI)', () => vm.irr(0x51));
    assert.not.ok(gm.pending(1), 'PBA bit cleared');
    assert.equal(handle.interruptCounts('msix', 1), { fired: 1, delivered: 1, pended: 1 });
  },
);

kv(
  'a message change on an unmasked vector: one commit, and the interrupt follows the new message through the irqfd',
  async () => {
    const { c, gm, router, vm, handle } = k as Required<typeof k>;
    const c0 = router.commits,
      before = handle.interruptCounts('msix', 1);
    gm.program(1, MSI_ADDR, 0x61);
    await handle.irqSettled();
    assert.is(router.commits, c0 + 1);
    assertRoutesMatchGuest();
    assert.is(
      (await handle.irqStatus()).vectors.find((x) => x.vector === 1 && x.kind === 'msix')!.trigger,
      'kvm',
    );
    e1000eRaise(c);
    await until('IRR 0x61', () => vm.irr(0x61));
    await sleep(100);
    assert.equal(handle.interruptCounts('msix', 1), before, 'userspace saw nothing');
  },
);

kv(
  'route changes that reach the router in one turn are one commit; one guest write changing several vectors is one commit',
  async () => {
    const { gm, router, handle } = k as Required<typeof k>;
    for (const v of [0, 2, 3]) gm.program(v, MSI_ADDR, 0x70 + v);
    await handle.irqSettled();
    const c0 = router.commits;
    // Three MMIO writes; the coordinator is busy meanwhile (as a VMM's main thread can be), so
    // the worker's route updates queue up and are committed in its next turn.
    for (const v of [0, 2, 3]) gm.mask(v, false);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 300);
    await handle.irqSettled();
    assert.is(router.commits, c0 + 1, 'three unmasks → one commit');
    assertRoutesMatchGuest();
    // Function mask: one config write takes every route away, in one commit; clearing it restores all four in one.
    gm.control(true, true);
    await handle.irqSettled();
    assert.is(router.commits, c0 + 2);
    assert.is(
      router.table().filter((e) => e.type === 2).length,
      0,
      'no MSI route while the function is masked',
    );
    gm.control(true, false);
    await handle.irqSettled();
    assert.is(router.commits, c0 + 3);
    assertRoutesMatchGuest();
    const st = await handle.irqStatus();
    console.log(
      `    ${router.commits} commits in all; route updates ${st.routeUpdates}; VFIO MSI-X vectors ${st.vfioVectors.msix}`,
    );
  },
);

kv.run();

// ---------------------------------------------------------------- edu: MSI and INTx
const edu = suite('edu: MSI from its raise-interrupt register, INTx with EOI, MSI routed by KVM');
const d: {
  handle?: DeviceHandle;
  c?: RingClient;
  msi?: GuestMsi;
  events: InterruptEvent[];
  dev?: { fd: number; path: string };
  close?: () => void;
} = { events: [] };

edu.before(
  loud('edu before', async () => {
    requireLab();
    const o = openOnIommufd(labDevice('edu'));
    d.dev = o.dev;
    d.close = o.close;
    d.handle = await DeviceHandle.start({
      name: 'edu',
      device: o.dev,
      onInterrupt: (e) => d.events.push(e),
    });
    d.c = d.handle.client();
    d.msi = new GuestMsi(d.c, d.handle.description);
    busMaster(d.c);
  }),
);
edu.after(async () => {
  await d.handle?.shutdown();
  d.close?.();
  shared?.vm.close();
  shared = undefined;
});

edu('MSI: writing the raise-interrupt register delivers vector 0 to the host', async () => {
  const { c, msi, handle } = d as Required<typeof d>;
  d.msi!.program(MSI_ADDR, 0x50);
  msi.enable(true);
  const st = await handle.irqStatus();
  assert.is(st.mode, 'msi');
  assert.equal(st.errors, []);
  c.barWrite(0, EDU.RAISE, 4, 1);
  await until('the MSI', () => d.events.length > 0);
  c.barWrite(0, EDU.ACK, 4, 1);
  c.barWrite(0, EDU.RAISE, 4, 1);
  await until('a second MSI', () => d.events.reduce((n, e) => n + e.count, 0) >= 2);
  c.barWrite(0, EDU.ACK, 4, 1);
  assert.ok(
    d.events.every((e) => e.kind === 'msi' && e.vector === 0),
    JSON.stringify(d.events),
  );
  assert.equal(handle.interruptCounts('msi', 0), { fired: 2, delivered: 2, pended: 0 });
});

edu(
  'INTx: with MSI off the same register asserts INTx; after the EOI it can fire again',
  async () => {
    const { c, msi, handle } = d as Required<typeof d>;
    d.events.length = 0;
    msi.enable(false);
    const st = await handle.irqStatus();
    assert.is(st.mode, 'intx');
    assert.equal(st.errors, []);
    c.barWrite(0, EDU.RAISE, 4, 1);
    await until('INTx', () => d.events.length > 0);
    assert.equal(d.events, [{ kind: 'intx', vector: 0, count: 1 }]);
    c.barWrite(0, EDU.ACK, 4, 1); // the guest's handler clears the cause, then EOIs
    handle.intxEoi();
    await sleep(50);
    c.barWrite(0, EDU.RAISE, 4, 1);
    await until('INTx again', () => d.events.length > 1);
    c.barWrite(0, EDU.ACK, 4, 1);
    handle.intxEoi();
    assert.equal(d.events[1], { kind: 'intx', vector: 0, count: 1 });
  },
);

edu('MSI routed by KVM: the raise reaches vCPU 0 through the irqfd', async () => {
  await d.handle!.shutdown();
  d.handle = undefined;
  const { vm, router } = sharedVm(); // the e1000e's VM: this router now serves two devices
  const handle = await DeviceHandle.start({ name: 'edu-kvm', device: d.dev!, router });
  try {
    const c = handle.client(),
      msi = new GuestMsi(c, handle.description);
    busMaster(c);
    msi.program(MSI_ADDR, 0x58);
    msi.enable(true);
    await handle.irqSettled();
    const st = await handle.irqStatus();
    const v0 = st.vectors.find((x) => x.kind === 'msi' && x.vector === 0)!;
    assert.is(v0.trigger, 'kvm');
    assert.equal(router.routesOf('edu-kvm').get(SRC.MSI)?.msi, { lo: MSI_ADDR, hi: 0, data: 0x58 });
    c.barWrite(0, EDU.RAISE, 4, 1);
    await until('IRR 0x58', () => vm.irr(0x58));
    c.barWrite(0, EDU.ACK, 4, 1);
    assert.equal(handle.interruptCounts('msi', 0), { fired: 0, delivered: 0, pended: 0 });
  } finally {
    await handle.shutdown();
  }
});

edu.run();
