// The front door (src/index.ts, src/threads.ts): the package's own name resolves to it through
// package.json "exports", every error kind is exported by name, the light half is the same
// bindings, and the two methods a VMM uses instead of reaching behind it: a DeviceHandle aborts
// its ring's requests, and the runtime's BAR-area mappings (BarMaps, over a memfd here).

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { view } from '../../native/libc.js';
import { BarMaps } from '../../src/coordinator/bar-maps.js';
import * as door from '../../src/index.js';
import * as threads from '../../src/threads.js';
import { barWords, HANG, HANG_SEEN } from '../support/synthetic-device.js';
import { runThread, supportUrl } from '../support/threads.js';

const PAGE = 4096;
const pkg = (name: string): Promise<Record<string, unknown>> => import(name);

test('the package name resolves to the front door ("exports"), "./threads" to its light half', async () => {
  assert.is(await pkg('vfio-runtime'), door as unknown);
  assert.is(await pkg('vfio-runtime/threads'), threads as unknown);
});

test('every error kind and what a VMM builds on is exported by name', () => {
  for (const [code, cls] of door.ERROR_CLASSES)
    assert.is((door as Record<string, unknown>)[cls.name], cls, `${code}: ${cls.name}`);
  for (const name of [
    'Runtime',
    'DeviceHandle',
    'normalizeRuntimeSpec',
    'normalizeDeviceSpec',
    'GsiRouter',
    'RingClient',
    'STATUS',
    'OP',
    'MemfdRegion',
    'memfdRegionSource',
    'OwnedFd',
    'createEventfd',
    'sendFds',
    'listFunctions',
    'startMetricsServer',
  ])
    assert.type(
      (door as Record<string, unknown>)[name],
      name === 'STATUS' || name === 'OP' ? 'object' : 'function',
      name,
    );
});

test('the light half is the same bindings as the whole door', () => {
  for (const [name, value] of Object.entries(threads))
    assert.is((door as Record<string, unknown>)[name], value, name);
});

test('DeviceHandle.abortRequests: a request waiting on a stuck device ends RingClosedError', async () => {
  const h = await door.DeviceHandle.start({
    name: 'syn0',
    device: { fd: -1, path: 'synthetic' },
    workerUrl: supportUrl('synthetic-device-worker.js'),
    ring: { capacity: 8, bulkBytes: 64 },
    stopGraceMs: 100,
  });
  try {
    // Another thread's write hangs the device's handler; that thread waits for its completion.
    const waiting = runThread<number>('lost-request.js', {
      role: 'one-write',
      ring: h.ring,
      offset: HANG,
    });
    const bar = barWords(h.memory.state);
    for (const t0 = performance.now(); Atomics.load(bar, HANG_SEEN / 4) !== 1; )
      if (performance.now() - t0 > 10_000) throw new Error('the handler did not hang');
      else await new Promise((r) => setTimeout(r, 2));
    h.abortRequests();
    await waiting.then(
      () => assert.unreachable('the waiting request completed'),
      (e: Error) => assert.match(e.message, 'device ring is closed'),
    );
    assert.is(h.state, 'running', 'the worker is left as it is');
  } finally {
    await h.shutdown();
  }
});

const bar = (index: number, regionOffset: number, mappable: [number, number][]) => ({
  index,
  regionOffset: `0x${regionOffset.toString(16)}`,
  mappable,
});
type Bars = Parameters<BarMaps['map']>[2];

test('BarMaps maps each area at region offset + area offset, at most maxPerBar, and unmaps', () => {
  const mem = new door.MemfdRegion('bars', 8 * PAGE);
  try {
    for (let p = 0; p < 8; p++) mem.bytes[p * PAGE] = 0xa0 + p;
    const maps = new BarMaps();
    const bars = [
      bar(0, 0, [
        [PAGE, 2 * PAGE],
        [3 * PAGE, 4 * PAGE],
      ]),
      bar(2, 4 * PAGE, [[0, 2 * PAGE]]),
    ] as unknown as Bars;
    const got = maps.map('d0', mem.fd, bars, 1);
    assert.equal(
      got.map((m) => [m.bar, m.area, m.offset, m.size]),
      [
        [0, 0, PAGE, PAGE],
        [2, 0, 0, 2 * PAGE],
      ],
    );
    assert.equal(
      got.map((m) => new Uint8Array(view(m.hva, m.size))[0]),
      [0xa1, 0xa4],
      'the bytes at region offset + area offset',
    );
    assert.ok(maps.has('d0'));
    maps.unmap('d0');
    assert.not.ok(maps.has('d0'));
  } finally {
    mem.close();
  }
});

test('BarMaps: a refused mmap is a SysError naming the node; the areas before it stay for unmap', () => {
  const mem = new door.MemfdRegion('bars2', PAGE);
  const maps = new BarMaps();
  try {
    const ok = maps.map('d0', mem.fd, [bar(0, 0, [[0, PAGE]])] as unknown as Bars);
    assert.is(ok.length, 1);
    assert.throws(
      () =>
        maps.map('d1', { fd: -1, path: '/dev/vfio/devices/vfio9' }, [
          bar(0, 0, [[0, PAGE]]),
        ] as unknown as Bars),
      (e: unknown) =>
        e instanceof Error &&
        /^mmap on \/dev\/vfio\/devices\/vfio9 \(BAR area at 0x0\): EBADF$/.test(e.message),
    );
    assert.ok(maps.has('d1'));
  } finally {
    maps.clear();
    mem.close();
  }
});

test.run();
