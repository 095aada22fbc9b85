// GuestMemory.addRegionAsync: the kernel calls go through a runner (a pool thread in the
// runtime), in chunks, with progress; cancelling between chunks unmaps everything made so far.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { memfdSource } from '../../src/dma/backend.js';
import { GuestMemory } from '../../src/dma/guest-memory.js';
import type { MapRunner } from '../../src/dma/map-offload.js';
import { FakeBackend } from '../support/fake-dma-backend.js';

const MiB = 1n << 20n;
const LAB = [
  { start: 0n, last: 0xfedfffffn },
  { start: 0xfef00000n, last: 0x7fffffffffn },
];
const mem = memfdSource({ fd: 42, path: 'memfd:ram' }, 0n, 0x7f0000000000n);
const later: MapRunner = () => new Promise((r) => setImmediate(() => r({ ok: true, ms: 0 })));

test('chunks, progress, and the table agrees', async () => {
  const b = new FakeBackend('ctx0');
  b.attach(LAB);
  const t = new GuestMemory();
  t.addBackend(b);
  const seen: [bigint, bigint][] = [];
  const r = await t.addRegionAsync(
    { name: 'ram', gpa: 0xfe000000n, size: 32n * MiB, memory: mem },
    { run: later, chunkBytes: 8n * MiB, onProgress: (d, n) => seen.push([d, n]) },
  );
  // 14 MiB below the hole: 8 + 6; 17 MiB above: 8 + 8 + 1.
  assert.equal(
    t.mappingsOf(b).map((m) => m.length / MiB),
    [8n, 6n, 8n, 8n, 1n],
  );
  assert.equal(
    seen.map(([d]) => d / MiB),
    [8n, 14n, 22n, 30n, 31n],
  );
  assert.ok(seen.every(([, n]) => n === 31n * MiB));
  assert.ok(t.isMapped(0xfe000000n, 14n * MiB));
  assert.is(r.name, 'ram');
  t.removeRegion(r);
  assert.equal(t.mappingsOf(b), []);
});

test('cancelled between chunks: nothing stays mapped and the region is not added', async () => {
  const b = new FakeBackend('ctx0');
  b.attach(LAB);
  const t = new GuestMemory();
  t.addBackend(b);
  const ac = new AbortController();
  let calls = 0;
  const run: MapRunner = (c, s) => {
    if (++calls === 2) ac.abort(new Error('operator cancelled'));
    return later(c, s);
  };
  let err: unknown;
  try {
    await t.addRegionAsync(
      { name: 'ram', gpa: 0n, size: 64n * MiB, memory: mem },
      { run, signal: ac.signal, chunkBytes: 16n * MiB },
    );
  } catch (e) {
    err = e;
  }
  assert.match(String(err), 'operator cancelled');
  assert.is(calls, 2, 'no chunk started after the cancel');
  assert.equal(t.mappingsOf(b), []);
  assert.equal(t.regions(), []);
  assert.ok(
    b.calls.filter((c) => c.op === 'unmap').length === 2,
    'the two chunks made were unmapped',
  );
});

test('a failed chunk unmaps the earlier ones and names the piece', async () => {
  const b = new FakeBackend('ctx0');
  b.attach(LAB);
  const t = new GuestMemory();
  t.addBackend(b);
  let calls = 0;
  const run: MapRunner = (c, s) =>
    ++calls === 3 ? Promise.resolve({ ok: false, errno: 12, message: 'ENOMEM' }) : later(c, s);
  let err: unknown;
  try {
    await t.addRegionAsync(
      { name: 'ram', gpa: 0n, size: 64n * MiB, memory: mem },
      { run, chunkBytes: 16n * MiB },
    );
  } catch (e) {
    err = e;
  }
  assert.match(String(err), /ENOMEM.*mapping 0x2000000-0x2ffffff of guest region 'ram'/s);
  assert.equal(t.mappingsOf(b), []);
});

test.run();
