// Peer-to-peer BAR mappings above the DMA interface, without a device: a memfd stands in for the
// VFIO device fd (the container path mmaps it like a BAR; the dma-buf export, an ioctl a memfd
// does not know, fails ENOTTY), fake backends take the maps. Failures come back as results,
// never thrown; a moved BAR is unmapped before it is mapped again; unmap leaves no mmap. And the
// VMM's PeerSync: placed, moved, decoding off, noMmap, against a stand-in runtime.
import { readFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { errnoNumber } from '../../native/errno.js';
import { failCall } from '../../native/fault-hooks.js';
import { view } from '../../native/libc.js';
import type { Runtime } from '../../src/coordinator/runtime.js';
import { U64_MAX } from '../../src/dma/iova-ranges.js';
import { PeerBars, type PeerBarTarget } from '../../src/dma/peer-bars.js';
import { MemfdRegion } from '../../src/memory/memfd-region.js';
import { PeerSync } from '../../src/vmm/peer-sync.js';
import { BAR, BAR_MEM, BARS, CTL } from '../../src/vmm/shared.js';
import { FakeBackend } from '../support/fake-dma-backend.js';

const ALL = [{ start: 0n, last: U64_MAX }];
const mapsOf = (name: string): number =>
  readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => l.includes(name)).length;

function setup() {
  const dev = new MemfdRegion('peer-bar-dev', 0x10000);
  const target: PeerBarTarget = {
    port: 'shm',
    device: dev.fd,
    bar: 2,
    regionOffset: 0n,
    areas: [
      [0, 0x4000],
      [0x8000, 0x10000],
    ],
  };
  const ctx = new FakeBackend('ctx0', 'iommufd'),
    box = new FakeBackend('vfio-container', 'container');
  ctx.attach(ALL);
  box.attach(ALL);
  return { dev, target, ctx, box, peers: new PeerBars() };
}

test('each area goes into each backend: the container by an mmap of it, iommufd reported ENOTTY', () => {
  const { dev, target, ctx, box, peers } = setup();
  const before = mapsOf('peer-bar-dev');
  const r = peers.map(target, 0x100000n, [ctx, box]);
  assert.equal(
    r.map((x) => [x.backend, x.via, x.iova, x.ok, x.errno]),
    [
      ['iommufd:ctx0', 'dma-buf', '0x100000', false, 'ENOTTY'],
      ['container:vfio-container', 'host-address', '0x100000', true, undefined],
      ['iommufd:ctx0', 'dma-buf', '0x108000', false, 'ENOTTY'],
      ['container:vfio-container', 'host-address', '0x108000', true, undefined],
    ],
  );
  assert.match(r[0]!.reason!, /CONFIG_VFIO_PCI_DMABUF/);
  assert.equal(ctx.mappings(), []);
  // The container's mappings point at the device's bytes at the area's offset.
  const m = box.mappings()[1]!;
  assert.is(m.iova, 0x108000n);
  assert.is(m.memory.kind, 'hva');
  new Uint8Array(view(m.memory.hva!, 4))[0] = 0x5a;
  assert.is(dev.bytes[0x8000], 0x5a, 'the second mapping is the BAR at +0x8000');
  assert.is(mapsOf('peer-bar-dev'), before + 2, 'one mmap per area');
  assert.is(peers.iovaOf('shm', 2), 0x100000n);

  // A kernel without the dma-buf export is asked once per device: later maps report it again
  // without a call (any ioctl now fails EIO, and the answer is still the first ENOTTY).
  const putBack = failCall('ioctlPtr', errnoNumber('EIO'), () => true);
  let again: ReturnType<PeerBars['map']>;
  try {
    again = peers.map(target, 0x200000n, [ctx]);
  } finally {
    putBack();
  }
  assert.equal(
    again.map((x) => [x.iova, x.ok, x.errno]),
    [
      ['0x200000', false, 'ENOTTY'],
      ['0x208000', false, 'ENOTTY'],
    ],
  );
  assert.is(peers.iovaOf('shm', 2), 0x200000n, 'moved (the container mappings went first)');
  assert.equal(box.mappings(), []);
  assert.is(mapsOf('peer-bar-dev'), before, 'no mmap left');
  peers.map(target, 0x100000n, [ctx, box]);
  assert.is(peers.unmap('shm', 2), 0xcn << 12n, 'both areas unmapped');
  assert.equal(box.mappings(), []);
  assert.is(mapsOf('peer-bar-dev'), before, 'no mmap left');
  assert.is(peers.iovaOf('shm', 2), undefined);
  dev.close();
});

test('the same IOVA again changes nothing; a new one unmaps the old first; failures are results', () => {
  const { dev, target, box, peers } = setup();
  peers.map(target, 0x100000n, [box]);
  const calls = box.calls.length;
  peers.map(target, 0x100000n, [box]);
  assert.is(box.calls.length, calls, 'no kernel call for an unchanged BAR');
  box.failNextMap = 'EEXIST';
  const r = peers.map(target, 0x200000n, [box]);
  assert.equal(
    box.calls.slice(calls).map((c) => [c.op, c.iova]),
    [
      ['unmap', 0x100000n],
      ['unmap', 0x108000n],
      ['map', 0x208000n],
    ],
  );
  assert.equal(
    r.map((x) => [x.iova, x.ok, x.errno]),
    [
      ['0x200000', false, 'EEXIST'],
      ['0x208000', true, undefined],
    ],
  );
  assert.match(r[0]!.reason!, /mapped at that IOVA already/);
  assert.equal(
    peers.list().map((p) => [p.port, p.bar, p.iova]),
    [['shm', 2, '0x200000']],
  );
  assert.is(peers.clear(), 0x8000n);
  dev.close();
});

test('PeerSync: placed maps, moved maps at the new address, decoding off unmaps, noMmap ports skipped', async () => {
  const calls: string[] = [];
  const at = new Map<string, bigint>();
  const bars = [
    { index: 0, io: false, mappable: [[0, 0x1000]] },
    { index: 1, io: true, mappable: [] },
  ];
  const rt = {
    device: () => ({ description: { bars } }),
    peers: { iovaOf: (p: string, b: number) => at.get(`${p}/${b}`) },
    mapBarForPeers: (p: string, b: number, iova: bigint) => {
      calls.push(`map ${p}/${b} 0x${iova.toString(16)}`);
      at.set(`${p}/${b}`, iova);
      return [{ ok: false, errno: 'ENOTTY' }];
    },
    unmapBarForPeers: (p: string, b: number) => {
      calls.push(`unmap ${p}/${b}`);
      at.delete(`${p}/${b}`);
      return 0n;
    },
  } as unknown as Runtime;
  const map = new Float64Array(2 * BARS * BAR.WORDS);
  const place = (dev: number, base: number, active: number): void => {
    const row = dev * BARS * BAR.WORDS;
    map[row + BAR.BASE] = base;
    map[row + BAR.SIZE] = 0x1000;
    map[row + BAR.KIND] = BAR_MEM;
    map[row + BAR.ACTIVE] = active;
  };
  const sync = new PeerSync(rt, map, ['a', 'b'], ['b']);
  place(0, 0xc0000000, 1);
  place(1, 0xc0001000, 1);
  await sync.sync();
  place(0, 0xd0000000, 1);
  await sync.sync();
  await sync.sync();
  place(0, 0xd0000000, 0);
  await sync.sync();
  assert.equal(calls, ['map a/0 0xc0000000', 'map a/0 0xd0000000', 'unmap a/0']);
  const { maps, unmaps, failures, syncs } = sync.stats;
  assert.equal({ maps, unmaps, failures, syncs }, { maps: 2, unmaps: 1, failures: 2, syncs: 4 });
});

test('PeerSync.follow: a burst of BAR_GEN bumps is one re-sync once the map has settled', async () => {
  let syncs = 0;
  const rt = {
    device: () => ({ description: { bars: [] } }),
  } as unknown as Runtime;
  const sync = new PeerSync(rt, new Float64Array(BARS * BAR.WORDS), ['a']);
  const ctl = new Int32Array(new SharedArrayBuffer(CTL.COUNT * 4));
  const orig = sync.sync.bind(sync);
  sync.sync = () => {
    syncs++;
    return orig();
  };
  const following = sync.follow(ctl, 20);
  for (let i = 0; i < 3; i++) {
    Atomics.add(ctl, CTL.BAR_GEN, 1);
    Atomics.notify(ctl, CTL.BAR_GEN);
    await new Promise((r) => setTimeout(r, 5));
  }
  await new Promise((r) => setTimeout(r, 60));
  assert.is(syncs, 1, 'one re-sync for the burst');
  sync.stop(ctl);
  await following;
  assert.is(syncs, 1, 'stop() does not sync');
});

test.run();
