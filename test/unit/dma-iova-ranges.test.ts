// IOVA range arithmetic: normalising the kernel's allowed ranges, their holes, splitting a
// guest range around them (with the x86 MSI window only ever coming from the input), and
// picking a free IOVA.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  alignRanges,
  findFreeIova,
  holesOf,
  IovaHoleError,
  type IovaRange,
  normalizeRanges,
  spanCovered,
  splitGuestRange,
  subtractSpans,
  U64_MAX,
} from '../../src/dma/iova-ranges.js';

const MiB = 1n << 20n;
// What the lab kernel reports behind the emulated Intel IOMMU (39-bit address width).
const LAB: IovaRange[] = [
  { start: 0n, last: 0xfedfffffn },
  { start: 0xfef00000n, last: 0x7fffffffffn },
];

function throwsWith(fn: () => unknown, ...parts: string[]): Error {
  try {
    fn();
  } catch (e) {
    for (const p of parts)
      assert.ok((e as Error).message.includes(p), `expected '${p}' in: ${(e as Error).message}`);
    return e as Error;
  }
  assert.unreachable('did not throw');
  throw new Error('unreachable');
}

test('normalizeRanges sorts, merges overlapping and adjacent ranges, and names a bad one', () => {
  assert.equal(
    normalizeRanges([
      { start: 0x3000n, last: 0x3fffn },
      { start: 0n, last: 0xfffn },
      { start: 0x1000n, last: 0x1fffn },
      { start: 0x3800n, last: 0x4fffn },
    ]),
    [
      { start: 0n, last: 0x1fffn },
      { start: 0x3000n, last: 0x4fffn },
    ],
  );
  throwsWith(
    () => normalizeRanges([{ start: 0x2000n, last: 0x1000n }]),
    '0x2000-0x1000',
    'not a valid',
  );
  throwsWith(() => normalizeRanges([{ start: 0n, last: U64_MAX + 1n }]), 'not a valid');
});

test('holesOf: the complement within the 64-bit space', () => {
  assert.equal(holesOf(LAB), [
    { start: 0xfee00000n, last: 0xfeefffffn },
    { start: 0x8000000000n, last: U64_MAX },
  ]);
  assert.equal(holesOf([{ start: 0n, last: U64_MAX }]), []);
  assert.equal(holesOf([]), [{ start: 0n, last: U64_MAX }]);
  assert.equal(holesOf([{ start: 0x1000n, last: U64_MAX }]), [{ start: 0n, last: 0xfffn }]);
});

test('a range spanning the reserved window is split; the hole part is reported with its hole', () => {
  const { pieces, skipped } = splitGuestRange({ iova: 0xfe000000n, length: 32n * MiB }, LAB, {
    alignment: 0x1000n,
  });
  assert.equal(pieces, [
    { iova: 0xfe000000n, length: 14n * MiB },
    { iova: 0xfef00000n, length: 17n * MiB },
  ]);
  assert.equal(skipped, [
    { iova: 0xfee00000n, length: MiB, hole: { start: 0xfee00000n, last: 0xfeefffffn } },
  ]);
});

test('a range inside one allowed range is one piece; one past the address width is cut', () => {
  assert.equal(splitGuestRange({ iova: 0n, length: 0xc0000000n }, LAB).pieces, [
    { iova: 0n, length: 0xc0000000n },
  ]);
  const top = splitGuestRange({ iova: 0x7fffe00000n, length: 4n * MiB }, LAB);
  assert.equal(top.pieces, [{ iova: 0x7fffe00000n, length: 2n * MiB }]);
  assert.equal(top.skipped[0]?.hole, { start: 0x8000000000n, last: U64_MAX });
});

test('a range entirely in a hole is an error naming the range and the hole', () => {
  const e = throwsWith(
    () =>
      splitGuestRange({ iova: 0xfee00000n, length: 0x80000n }, LAB, { where: "iommufd 'ctx0'" }),
    'guest range 0xfee00000-0xfee7ffff',
    'hole 0xfee00000-0xfeefffff',
    "iommufd 'ctx0'",
    '0x0-0xfedfffff, 0xfef00000-0x7fffffffff',
  );
  assert.instance(e, IovaHoleError);
});

test("holes come only from the input: another platform's window is honoured, x86's is not assumed", () => {
  const arm: IovaRange[] = [
    { start: 0n, last: 0x7ffffffn },
    { start: 0x8100000n, last: 0xffffffffffffn },
  ];
  const split = splitGuestRange({ iova: 0x7f00000n, length: 4n * MiB }, arm);
  assert.equal(split.pieces, [
    { iova: 0x7f00000n, length: MiB },
    { iova: 0x8100000n, length: 2n * MiB },
  ]);
  assert.equal(splitGuestRange({ iova: 0xfe000000n, length: 32n * MiB }, arm).pieces, [
    { iova: 0xfe000000n, length: 32n * MiB },
  ]);
});

test('alignment: the guest range must be aligned; allowed edges that are not shrink inward', () => {
  throwsWith(
    () => splitGuestRange({ iova: 0x1800n, length: 0x1000n }, LAB, { alignment: 0x1000n }),
    'not aligned to 4 KiB',
  );
  const odd: IovaRange[] = [
    { start: 0n, last: 0x17ffn },
    { start: 0x2800n, last: 0xffffn },
  ];
  assert.equal(alignRanges(odd, 0x1000n), [
    { start: 0n, last: 0xfffn },
    { start: 0x3000n, last: 0xffffn },
  ]);
  const split = splitGuestRange({ iova: 0n, length: 0x10000n }, odd, { alignment: 0x1000n });
  assert.equal(split.pieces, [
    { iova: 0n, length: 0x1000n },
    { iova: 0x3000n, length: 0xd000n },
  ]);
  assert.equal(
    split.skipped.map((s) => [s.iova, s.length]),
    [[0x1000n, 0x2000n]],
  );
  throwsWith(
    () => splitGuestRange({ iova: 0n, length: 0x1000n }, LAB, { alignment: 0x1800n }),
    'power of two',
  );
});

test('bad guest ranges: empty, negative, past 2^64', () => {
  throwsWith(() => splitGuestRange({ iova: 0n, length: 0n }, LAB), 'length must be positive');
  throwsWith(
    () => splitGuestRange({ iova: -4096n, length: 4096n }, LAB),
    'outside the 64-bit IOVA space',
  );
  throwsWith(
    () => splitGuestRange({ iova: U64_MAX - 0xfffn, length: 0x2000n }, LAB),
    'runs past the end',
  );
});

test('subtractSpans and spanCovered', () => {
  const from = [{ iova: 0n, length: 0x10000n }];
  assert.equal(
    subtractSpans(from, [
      { iova: 0x2000n, length: 0x1000n },
      { iova: 0x8000n, length: 0x10000n },
    ]),
    [
      { iova: 0n, length: 0x2000n },
      { iova: 0x3000n, length: 0x5000n },
    ],
  );
  assert.ok(
    spanCovered({ iova: 0x1000n, length: 0x3000n }, [
      { iova: 0x2000n, length: 0x2000n },
      { iova: 0n, length: 0x2000n },
    ]),
  );
  assert.not.ok(
    spanCovered({ iova: 0x1000n, length: 0x3000n }, [
      { iova: 0n, length: 0x2000n },
      { iova: 0x2001n, length: 0x3000n },
    ]),
  );
});

test('findFreeIova: lowest aligned free space, never 0, around used spans and holes', () => {
  assert.is(findFreeIova(LAB, [], 0x1000n, 0x1000n), 0x1000n);
  assert.is(findFreeIova(LAB, [{ iova: 0n, length: 0x100000n }], 0x200000n, 0x200000n), 0x200000n);
  // Used up to just below the hole: the next fit is past it.
  assert.is(findFreeIova(LAB, [{ iova: 0n, length: 0xfee00000n }], MiB, MiB), 0xfef00000n);
  assert.is(
    findFreeIova(
      [{ start: 0n, last: 0xffffn }],
      [{ iova: 0x1000n, length: 0xf000n }],
      0x1000n,
      0x1000n,
    ),
    undefined,
  );
});

test.run();
