// GsiRouter against fake KVM calls: GSI allocation after the irqchip pins, changes from the same
// turn coalesced into one KVM_SET_GSI_ROUTING, irqfds bound once per route, a refused commit
// leaves the table as it was and rejects with KVM's errno, INTx resample irqfds, release.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { errnoNumber, SysError } from '../../native/errno.js';
import * as kvm from '../../native/kvm.js';
import {
  GsiRouter,
  GsiRouterError,
  type KvmRoutingOps,
  x86DefaultRoutes,
} from '../../src/irq/gsi-router.js';

const K = kvm.KVM_C;
type Call = {
  setGsiRouting?: number;
  irqfd?: { fd: number; gsi: number; flags?: number; resamplefd?: number };
};

function fake(fail?: () => boolean): {
  ops: KvmRoutingOps;
  calls: Call[];
  tables: ReturnType<GsiRouter['table']>[];
} {
  const calls: Call[] = [],
    tables: ReturnType<GsiRouter['table']>[] = [];
  return {
    calls,
    tables,
    ops: {
      setGsiRouting: (e) => {
        if (fail?.()) throw new SysError('KVM_SET_GSI_ROUTING', 'fake-vm', errnoNumber('EINVAL'));
        calls.push({ setGsiRouting: e.length });
        tables.push(structuredClone([...e]));
      },
      irqfd: (a) => {
        calls.push({ irqfd: a });
      },
    },
  };
}
const vm = { fd: -1, path: 'fake-vm' };
const msiEntries = (t: ReturnType<GsiRouter['table']>) =>
  t
    .filter((e) => e.type === K.KVM_IRQ_ROUTING_MSI)
    .map((e) => [e.gsi, e.u!.msi!.address_lo, e.u!.msi!.data]);

test('the default base table is KVM x86 one: PIC + IOAPIC for 0-15, IOAPIC for 16-23', () => {
  const t = x86DefaultRoutes();
  assert.is(t.length, 40);
  assert.ok(t.every((e) => e.type === K.KVM_IRQ_ROUTING_IRQCHIP));
  assert.equal(
    t.filter((e) => e.gsi === 9).map((e) => [e.u!.irqchip!.irqchip, e.u!.irqchip!.pin]),
    [
      [K.KVM_IRQCHIP_IOAPIC, 9],
      [K.KVM_IRQCHIP_PIC_SLAVE, 1],
    ],
  );
});

test('changes made in one turn are one commit; GSIs start after the pins; irqfd bound once', async () => {
  const f = fake();
  const r = new GsiRouter(vm, { ops: f.ops });
  const [a, b] = await Promise.all([
    r.update('dev0', [
      { key: 0, fd: 10, msi: { lo: 0xfee00000, hi: 0, data: 0x41 } },
      { key: 1, fd: 11, msi: { lo: 0xfee00000, hi: 0, data: 0x42 } },
    ]),
    r.update('dev1', [{ key: 0, fd: 20, msi: { lo: 0xfee01000, hi: 0, data: 0x51 } }]),
  ]);
  assert.equal(
    a!.map((x) => x.gsi),
    [24, 25],
  );
  assert.equal(
    b!.map((x) => x.gsi),
    [26],
  );
  assert.is(r.commits, 1, 'one KVM_SET_GSI_ROUTING for three routes from two devices');
  assert.equal(
    f.calls.filter((c) => c.setGsiRouting).map((c) => c.setGsiRouting),
    [43],
  );
  assert.equal(
    f.calls.filter((c) => c.irqfd).map((c) => [c.irqfd!.fd, c.irqfd!.gsi]),
    [
      [10, 24],
      [11, 25],
      [20, 26],
    ],
  );
  assert.equal(msiEntries(r.table()), [
    [24, 0xfee00000, 0x41],
    [25, 0xfee00000, 0x42],
    [26, 0xfee01000, 0x51],
  ]);
  // Removing a route (mask) keeps the GSI and irqfd; a new message updates the entry in place.
  await r.update('dev0', [{ key: 0, fd: 10, msi: null }]);
  assert.equal(msiEntries(r.table()), [
    [25, 0xfee00000, 0x42],
    [26, 0xfee01000, 0x51],
  ]);
  const again = await r.update('dev0', [
    { key: 0, fd: 10, msi: { lo: 0xfee02000, hi: 0, data: 0x43 } },
  ]);
  assert.equal(
    again.map((x) => x.gsi),
    [24],
    'the vector keeps its GSI',
  );
  assert.is(f.calls.filter((c) => c.irqfd).length, 3, 'no second KVM_IRQFD');
  assert.is(r.commits, 3);
  assert.equal(r.routesOf('dev0').get(0), {
    gsi: 24,
    msi: { lo: 0xfee02000, hi: 0, data: 0x43 },
    intx: false,
  });
  // The same table again is not committed twice.
  await r.update('dev0', [{ key: 0, fd: 10, msi: { lo: 0xfee02000, hi: 0, data: 0x43 } }]);
  assert.is(r.commits, 3);
});

test('a refused commit rejects its batch and leaves the table and GSIs as they were', async () => {
  let refuse = false;
  const f = fake(() => refuse);
  const r = new GsiRouter(vm, { ops: f.ops });
  await r.update('d', [{ key: 0, fd: 10, msi: { lo: 0xfee00000, hi: 0, data: 1 } }]);
  refuse = true;
  try {
    await r.update('d', [{ key: 1, fd: 11, msi: { lo: 0xfee00000, hi: 0, data: 2 } }]);
    assert.unreachable();
  } catch (e) {
    assert.match(
      (e as Error).message,
      /KVM_SET_GSI_ROUTING with 42 entries refused: KVM_SET_GSI_ROUTING on fake-vm: EINVAL/,
    );
    assert.ok(e instanceof GsiRouterError && e.code === 'VFR_ERR_GSI_ROUTING');
    assert.equal(
      [e.errno, e.errnoName, e.call],
      [22, 'EINVAL', 'KVM_SET_GSI_ROUTING'],
      'the errno is kept',
    );
  }
  assert.is(r.failedCommits, 1);
  assert.equal(msiEntries(r.table()), [[24, 0xfee00000, 1]]);
  refuse = false;
  const [res] = await r.update('d', [{ key: 1, fd: 11, msi: { lo: 0xfee00000, hi: 0, data: 2 } }]);
  assert.is(res!.gsi, 25, 'the GSI the refused commit took was given back');
});

test('running out of GSIs names the VM and the limit', async () => {
  const r = new GsiRouter(vm, { ops: fake().ops, maxGsi: 26 });
  await r.update(
    'd',
    [0, 1].map((key) => ({ key, fd: key, msi: { lo: 0xfee00000, hi: 0, data: key } })),
  );
  try {
    await r.update('d', [{ key: 2, fd: 2, msi: { lo: 0xfee00000, hi: 0, data: 2 } }]);
    assert.unreachable();
  } catch (e) {
    assert.match((e as Error).message, 'fake-vm: no free GSI (KVM allows 26, 2 in use)');
    assert.ok(e instanceof GsiRouterError && e.errno === undefined, 'no kernel call failed');
  }
});

test('INTx: a resample irqfd on a VMM GSI, and off again; release drops everything in one commit', async () => {
  const f = fake();
  const r = new GsiRouter(vm, { ops: f.ops });
  await r.update('d', [
    { key: 2080, fd: 30, gsi: 10, resampleFd: 31, on: true },
    { key: 0, fd: 10, msi: { lo: 0xfee00000, hi: 0, data: 1 } },
  ]);
  assert.equal(
    f.calls.filter((c) => c.irqfd).map((c) => c.irqfd),
    [
      { fd: 30, gsi: 10, flags: K.KVM_IRQFD_FLAG_RESAMPLE, resamplefd: 31 },
      { fd: 10, gsi: 24 },
    ],
  );
  await r.update('d', [{ key: 2080, fd: 30, gsi: 10, resampleFd: 31, on: false }]);
  assert.equal(f.calls.at(-1)!.irqfd, { fd: 30, gsi: 10, flags: K.KVM_IRQFD_FLAG_DEASSIGN });
  const before = r.commits;
  await r.release('d');
  assert.equal(f.calls.at(-1)!.setGsiRouting, 40, 'back to the base table');
  assert.is(r.commits, before + 1);
  assert.equal(
    f.calls.filter((c) => c.irqfd?.flags === K.KVM_IRQFD_FLAG_DEASSIGN).map((c) => c.irqfd!.fd),
    [30, 10],
  );
  assert.is(r.routesOf('d').size, 0);
});

test.run();
