// The guest-memory mapping table against fake backends: IOVA == GPA split around each
// backend's own holes, exact unmaps, regions added and removed while devices run, a backend
// added later or activated by its first device, ranges that narrow and widen, rollback when a
// map fails, and the isMapped/translate queries.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SysError } from '../../native/errno.js';
import { type GuestMemorySource, hvaSource, memfdSource } from '../../src/dma/backend.js';
import { GuestMemory, type RecheckReport } from '../../src/dma/guest-memory.js';
import { IovaHoleError, type IovaRange } from '../../src/dma/iova-ranges.js';
import { FakeBackend } from '../support/fake-dma-backend.js';

const MiB = 1n << 20n;
const LAB: IovaRange[] = [
  { start: 0n, last: 0xfedfffffn },
  { start: 0xfef00000n, last: 0x7fffffffffn },
];
// A second backend whose hole is elsewhere (as another IOMMU might reserve).
const OTHER: IovaRange[] = [
  { start: 0n, last: 0xfe7fffffn },
  { start: 0xfe900000n, last: 0xffffffffffn },
];
const memfd = (): GuestMemorySource =>
  memfdSource({ fd: 42, path: 'memfd:ram' }, 0n, 0x7f0000000000n);
const spans = (ms: readonly { iova: bigint; length: bigint }[]): [bigint, bigint][] =>
  ms.map((m) => [m.iova, m.length]);

function active(name: string, ranges = LAB): FakeBackend {
  const b = new FakeBackend(name);
  b.attach(ranges);
  return b;
}

test('a region spanning the hole is mapped at IOVA == GPA in pieces, each with the right memory', () => {
  const b = active('ctx0');
  const t = new GuestMemory();
  t.addBackend(b);
  const r = t.addRegion({ name: 'high', gpa: 0xfe000000n, size: 32n * MiB, memory: memfd() });
  assert.equal(spans(t.mappingsOf(b)), [
    [0xfe000000n, 14n * MiB],
    [0xfef00000n, 17n * MiB],
  ]);
  const maps = b.calls.filter((c) => c.op === 'map');
  assert.equal(
    maps.map((c) =>
      c.op === 'map' && c.memory.kind === 'memfd' ? [c.memory.offset, c.memory.hva] : [],
    ),
    [
      [0n, 0x7f0000000000n],
      [0xf00000n, 0x7f0000f00000n],
    ],
    'the second piece starts 15 MiB into the memory',
  );
  assert.equal(spans(t.unmappedIn(b)), [[0xfee00000n, MiB]]);
  assert.ok(t.isMapped(0xfe000000n, 14n * MiB, b));
  assert.not.ok(t.isMapped(0xfedff000n, 0x2000n, b), 'runs into the hole');
  assert.ok(t.isMapped(0xfef00000n, 17n * MiB));
  assert.is(r.name, 'high');
});

test('removeRegion unmaps exactly the calls it made and returns what the kernel unmapped', () => {
  const b = active('ctx0');
  const t = new GuestMemory();
  t.addBackend(b);
  t.addRegion({ gpa: 0xfe000000n, size: 32n * MiB, memory: memfd() });
  const low = t.addRegion({ gpa: 0n, size: 16n * MiB, memory: hvaSource(0x7e0000000000n) });
  const bytes = t.removeRegion(0xfe000000n);
  assert.is(bytes.get(b), 31n * MiB);
  assert.equal(
    b.calls.filter((c) => c.op === 'unmap').map((c) => [c.iova, c.length]),
    [
      [0xfe000000n, 14n * MiB],
      [0xfef00000n, 17n * MiB],
    ],
  );
  assert.equal(spans(t.mappingsOf(b)), [[0n, 16n * MiB]]);
  assert.not.ok(b.has(0xfe000000n, 0x1000n));
  assert.is(t.removeRegion(low).get(b), 16n * MiB);
  assert.equal(b.mappings(), []);
  try {
    t.removeRegion(0x1000n);
    assert.unreachable();
  } catch (e) {
    assert.match((e as Error).message, 'no guest region starts at GPA 0x1000');
  }
});

test('every backend gets its own split; isMapped without a backend asks all of them', () => {
  const a = active('ctx0', LAB),
    c = active('legacy', OTHER);
  const t = new GuestMemory();
  t.addBackend(a);
  t.addBackend(c);
  t.addRegion({ gpa: 0xfe000000n, size: 32n * MiB, memory: memfd() });
  assert.equal(spans(t.mappingsOf(a)), [
    [0xfe000000n, 14n * MiB],
    [0xfef00000n, 17n * MiB],
  ]);
  assert.equal(spans(t.mappingsOf(c)), [
    [0xfe000000n, 8n * MiB],
    [0xfe900000n, 23n * MiB],
  ]);
  assert.ok(t.isMapped(0xfe900000n, MiB, a));
  assert.ok(t.isMapped(0xfe900000n, MiB, c));
  assert.ok(t.isMapped(0xfe900000n, MiB));
  assert.not.ok(t.isMapped(0xfe800000n, 0x1000n), "in the second backend's hole");
  assert.ok(t.isMapped(0xfe800000n, 0x1000n, a));
});

test('bad regions: entirely in a hole, overlapping, unaligned — and nothing stays mapped', () => {
  const b = active('ctx0');
  const t = new GuestMemory();
  t.addBackend(b);
  t.addRegion({ name: 'low', gpa: 0n, size: 4n * MiB, memory: memfd() });
  try {
    t.addRegion({ name: 'msi', gpa: 0xfee00000n, size: MiB, memory: memfd() });
    assert.unreachable();
  } catch (e) {
    assert.instance(e, IovaHoleError);
    assert.match(
      (e as Error).message,
      "guest range 0xfee00000-0xfeefffff lies entirely in the reserved IOVA hole 0xfee00000-0xfeefffff of iommufd 'ctx0'",
    );
  }
  assert.throws(
    () => t.addRegion({ gpa: 2n * MiB, size: 4n * MiB, memory: memfd() }),
    /overlaps region 'low' 0x0-0x3fffff/,
  );
  assert.throws(
    () => t.addRegion({ gpa: 0x10000800n, size: MiB, memory: memfd() }),
    /multiples of the 4 KiB page size/,
  );
  assert.throws(
    () => t.addRegion({ gpa: 0x10000000n, size: MiB, memory: hvaSource(0x7f0000000800n) }),
    /page boundary/,
  );
  assert.equal(
    t.regions().map((r) => r.name),
    ['low'],
  );
  assert.equal(spans(b.mappings()), [[0n, 4n * MiB]]);
});

test('a failed map rolls back every backend and keeps the kernel errno', () => {
  const a = active('ctx0'),
    c = active('legacy');
  const t = new GuestMemory();
  t.addBackend(a);
  t.addBackend(c);
  c.failNextMap = 'ENOMEM';
  try {
    t.addRegion({ name: 'ram', gpa: 0n, size: 8n * MiB, memory: memfd() });
    assert.unreachable();
  } catch (e) {
    assert.instance(e, SysError);
    assert.is((e as SysError).code, 'ENOMEM');
    assert.match(
      (e as Error).message,
      "mapping 0x0-0x7fffff of guest region 'ram' into iommufd 'legacy'",
    );
  }
  assert.equal(a.mappings(), [], 'the first backend was unmapped again');
  assert.equal(t.regions(), []);
});

test('an inactive backend gets nothing until its first device; then every region; emptied drops them', () => {
  const reports: RecheckReport[] = [];
  const t = new GuestMemory({ onRecheck: (r) => reports.push(r) });
  const b = new FakeBackend('ctx1');
  t.addBackend(b);
  t.addRegion({ gpa: 0n, size: 2n * MiB, memory: memfd() });
  t.addRegion({ gpa: 0xfe000000n, size: 32n * MiB, memory: memfd() });
  assert.equal(t.mappingsOf(b), []);
  assert.ok(t.isMapped(0n, 0x1000n), 'no active backend: registered RAM is all there is to check');
  b.attach(LAB);
  assert.equal(spans(t.mappingsOf(b)), [
    [0n, 2n * MiB],
    [0xfe000000n, 14n * MiB],
    [0xfef00000n, 17n * MiB],
  ]);
  assert.is(reports.at(-1)?.added.length, 3);
  b.detach();
  assert.equal(t.mappingsOf(b), []);
  assert.is(reports.at(-1)?.dropped.length, 3);
  assert.not.ok(t.isMapped(0n, 0x1000n, b));
  b.attach(LAB);
  assert.is(t.mappingsOf(b).length, 3, 'a device attaching again gets everything mapped again');
});

test('a backend added later gets every existing region', () => {
  const t = new GuestMemory();
  t.addRegion({ gpa: 0n, size: 2n * MiB, memory: memfd() });
  t.addRegion({ gpa: 0x100000000n, size: 4n * MiB, memory: memfd() });
  const b = active('late');
  t.addBackend(b);
  assert.equal(spans(b.mappings()), [
    [0n, 2n * MiB],
    [0x100000000n, 4n * MiB],
  ]);
  t.removeBackend(b);
  assert.equal(b.mappings(), [], 'removeBackend unmaps exactly what the table mapped');
});

test('ranges that narrow invalidate and unmap mappings; ranges that widen get the new parts mapped', () => {
  const reports: RecheckReport[] = [];
  const t = new GuestMemory({ onRecheck: (r) => reports.push(r) });
  const b = active('ctx0', [{ start: 0n, last: 0xffffffffffn }]);
  t.addBackend(b);
  t.addRegion({ gpa: 0xfe000000n, size: 32n * MiB, memory: memfd() });
  assert.equal(spans(t.mappingsOf(b)), [[0xfe000000n, 32n * MiB]]);
  b.attach(LAB); // a second device reserves the MSI window (the real kernel refuses this attach instead)
  const narrowed = reports.at(-1)!;
  assert.equal(spans(narrowed.invalidated), [[0xfe000000n, 32n * MiB]]);
  assert.equal(spans(narrowed.added), [
    [0xfe000000n, 14n * MiB],
    [0xfef00000n, 17n * MiB],
  ]);
  assert.not.ok(b.has(0xfee00000n, 0x1000n));
  b.detach([{ start: 0n, last: 0xffffffffffn }]); // it leaves: the window is allowed again
  assert.equal(spans(reports.at(-1)!.added), [[0xfee00000n, MiB]]);
  assert.ok(t.isMapped(0xfe000000n, 32n * MiB, b));
  assert.equal(spans(t.mappingsOf(b)), [
    [0xfe000000n, 14n * MiB],
    [0xfee00000n, MiB],
    [0xfef00000n, 17n * MiB],
  ]);
});

test('a device whose ranges leave a region nowhere to go fails its attach; the backend undoes it', () => {
  const t = new GuestMemory();
  const b = new FakeBackend('ctx0');
  t.addBackend(b);
  t.addRegion({ name: 'odd', gpa: 0xfee00000n, size: MiB, memory: memfd() });
  assert.throws(
    () => b.attach(LAB),
    /guest range 0xfee00000-0xfeefffff lies entirely in the reserved IOVA hole/,
  );
  assert.not.ok(b.active);
  assert.equal(b.mappings(), []);
});

test('translate: region, offset, host address, bytes left; undefined outside guest RAM', () => {
  const t = new GuestMemory();
  const low = t.addRegion({ gpa: 0n, size: 2n * MiB, memory: hvaSource(0x7e0000000000n) });
  t.addRegion({ gpa: 2n * MiB, size: 2n * MiB, memory: memfd() });
  assert.equal(t.translate(0x1234n), {
    region: low,
    offset: 0x1234n,
    hva: 0x7e0000001234n,
    remaining: 2n * MiB - 0x1234n,
  });
  assert.is(t.translate(3n * MiB)?.hva, 0x7f0000000000n + MiB);
  assert.is(t.translate(4n * MiB), undefined);
  assert.ok(t.isMapped(MiB, 2n * MiB), 'two adjacent regions cover a range across their boundary');
  assert.not.ok(t.isMapped(3n * MiB, 2n * MiB));
});

test.run();
