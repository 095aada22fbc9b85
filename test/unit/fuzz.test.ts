// Property-based fuzzing (fast-check), seeded and reproducible: the seed is printed, and
// FUZZ_SEED=<seed> runs the same cases again (FUZZ_RUNS sets the cases per target, default
// 100,000). Targets: config-space write sequences, ring slots with arbitrary words served by a
// device whose every fd access is window-checked (AccessGuard: 0 accesses outside a BAR or the
// config region, the server serving afterwards), MSI-X table/PBA accesses against a model, and
// the CLI's and the runtime's spec parsing (a spec, or InvalidSpecError; nothing else).
import fc from 'fast-check';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { bitmapBytes, memfdBytes, simDeps } from '../../bench/stress/sim-device.js';
import { C, check, raw } from '../../native/libc.js';
import { PCI } from '../../native/pci-regs.js';
import { parseRuntimeArgs } from '../../src/cli/specs.js';
import { normalizeRuntimeSpec } from '../../src/coordinator/spec.js';
import { AccessGuard } from '../../src/device/access-guard.js';
import { type ConfigIo, ConfigSpace } from '../../src/device/config-space.js';
import { MsixTableEmulator } from '../../src/device/msix-table.js';
import { createDeviceMemory } from '../../src/device/shared-state.js';
import { InvalidSpecError, VfrError } from '../../src/errors.js';
import { C_OUTSIDE } from '../../src/metrics/schema.js';
import {
  createRingBuffer,
  H_TAIL,
  ringWords,
  S_DATA,
  S_INDEX,
  S_OFF_HI,
  S_OFF_LO,
  S_OP,
  S_SEQ,
  S_SIZE,
  S_STATUS,
  STATUS,
  slotWord,
} from '../../src/ring/protocol.js';
import { RingServer } from '../../src/ring/server.js';

const seed = Number(process.env.FUZZ_SEED ?? Math.floor(Math.random() * 0x7fffffff));
const numRuns = Number(process.env.FUZZ_RUNS ?? 100_000);
console.log(`    fuzz: seed ${seed}, ${numRuns} cases per target (FUZZ_SEED=${seed} reproduces)`);
const params = { seed, numRuns, verbose: 1 } as const;

// ---------------------------------------------------------------- config space

/** A device image: BAR0 1 MiB 64-bit prefetchable, BAR2 16 KiB, BAR4 32 B I/O, MSI, MSI-X. */
function image(): Buffer {
  const b = Buffer.alloc(4096);
  b.writeUInt32LE(0x56781234, 0);
  b.writeUInt16LE(0x0010, 6);
  b.writeUInt32LE(0x0c, 0x10);
  b.writeUInt32LE(0x01, 0x20);
  b[0x34] = 0x40;
  b[0x40] = 0x05;
  b[0x41] = 0x60;
  b.writeUInt16LE(0x0180 | (2 << 1), 0x42);
  b[0x60] = 0x11;
  b.writeUInt16LE(7, 0x62);
  b.writeUInt32LE(0x2000, 0x64);
  b.writeUInt32LE(0x3000, 0x68);
  return b;
}
const regions = [0x100000n, 0n, 0x4000n, 0n, 0x20n, 0n, 0x10000n].map((size) => ({ size }));
const access = fc.record({
  offset: fc.oneof(fc.integer({ min: 0, max: 0x40 }), fc.integer({ min: 0, max: 4095 })),
  size: fc.constantFrom(1, 2, 4) as fc.Arbitrary<1 | 2 | 4>,
  value: fc.integer({ min: 0, max: 0xffffffff }),
});

test('config space: any write sequence keeps the identity read-only and the BARs sized', () => {
  const img = image();
  const io: ConfigIo = {
    read: (off, size) =>
      size === 4 ? img.readUInt32LE(off) : size === 2 ? img.readUInt16LE(off) : img[off]!,
    write: (off, size, v) => {
      if (off < 4) throw new Error(`the identity (0x${off.toString(16)}) reached the device`);
      if (size === 4) img.writeUInt32LE(v >>> 0, off);
      else if (size === 2) img.writeUInt16LE(v & 0xffff, off);
      else img[off] = v & 0xff;
    },
  };
  fc.assert(
    fc.property(fc.array(access, { maxLength: 16 }), (writes) => {
      const cs = new ConfigSpace(io, new Uint8Array(image()), regions, {});
      for (const w of writes) {
        if (ConfigSpace.validAccess(w.offset, w.size, cs.size) !== 'ok') continue;
        if (w.offset < 4) continue; // the identity is read-only on hardware; pass-through here
        cs.write(w.offset, w.size, w.value);
      }
      assert.is(cs.read(0, 4), 0x56781234);
      const bar0 = cs.read(0x10, 4);
      assert.is(bar0 & 0xf, 0xc, 'BAR0 type bits');
      assert.is(bar0 & 0xffff0, 0, 'BAR0 bits below its 1 MiB size');
      assert.is(cs.read(0x18, 4) & 0x3fff, 0, 'BAR2 bits below its 16 KiB size');
      assert.is(cs.read(0x20, 4) & 0x1f, 1, 'BAR4: I/O, 32 bytes');
      assert.is(cs.read(0x1c, 4), 0, 'BAR3 unimplemented');
    }),
    params,
  );
});

// ---------------------------------------------------------------- ring slots

test('ring slots with arbitrary words: each completes once with a status, no access leaves its window, the server serves on', () => {
  const fd = check(raw.memfd_create('fuzz-sim', C.MFD_CLOEXEC), 'memfd_create', 'fuzz');
  check(raw.ftruncate(fd, memfdBytes(64)), 'ftruncate', 'fuzz');
  const memory = createDeviceMemory();
  const device = simDeps.open(
    {
      name: 'fuzz',
      fd,
      path: `sim:${bitmapBytes(64)}`,
      ring: new SharedArrayBuffer(0),
      memory,
    },
    {},
  );
  const ring = createRingBuffer({ capacity: 8, bulkBytes: 64 });
  const h = ringWords(ring);
  const server = new RingServer(ring, device.handle);
  const known = new Set<number>(Object.values(STATUS));
  const word = fc.integer({ min: -0x80000000, max: 0x7fffffff });
  let t = 0,
    served = 0;
  const publish = (words: number[]): number => {
    const w = slotWord(t & 7);
    h[w + S_OP] = words[0]!;
    h[w + S_INDEX] = words[1]!;
    h[w + S_SIZE] = words[2]!;
    h[w + S_OFF_LO] = words[3]!;
    h[w + S_OFF_HI] = words[4]!;
    for (let i = 0; i < 4; i++) h[w + S_DATA + i] = words[5 + i]!;
    Atomics.store(h, H_TAIL, t + 1); // one producer, one request at a time: no free words needed
    Atomics.store(h, w + S_SEQ, t + 1);
    return w;
  };
  try {
    fc.assert(
      fc.property(
        fc.array(word, { minLength: 9, maxLength: 9 }),
        fc.nat(6),
        fc.nat(5),
        (words, op, size) => {
          // Half the cases: a plausible op and width with arbitrary offsets and data.
          if (words[8]! & 1) {
            words[0] = op;
            words[2] = [0, 1, 2, 4, 8, 16][size]!;
            words[1] = words[1]! & 7;
            // A quarter: offsets inside the BAR (or the config space) too.
            if (words[8]! & 2) {
              words[3] = words[3]! & 0xffff;
              words[4] = 0;
            }
          }
          const w = publish(words);
          assert.is(server.drain(), 1);
          assert.is(Atomics.load(h, w + S_SEQ), t + 2, 'completed once');
          assert.ok(known.has(h[w + S_STATUS]!), `status ${h[w + S_STATUS]}`);
          if (h[w + S_STATUS] === STATUS.OK) served++;
          t++;
        },
      ),
      { ...params },
    );
    const stats = new Float64Array(memory.stats);
    assert.is(stats[C_OUTSIDE], 0, 'no access outside a BAR or the config region');
    assert.ok(
      served > numRuns / 50,
      `${served} of ${numRuns} served OK: the cases reach the device`,
    );
    // The server serves on: a plain NOP.
    const w = publish([0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert.is(server.drain(), 1);
    assert.is(h[w + S_STATUS], STATUS.OK);
  } finally {
    raw.close(fd);
  }
});

test('the access guard refuses and counts an access outside its window', () => {
  const stats = new Float64Array(C_OUTSIDE + 1);
  const g = new AccessGuard(stats);
  g.allow(0, 0x1000, 0x100);
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0x2000 }), fc.nat(16), (at, size) => {
      const before = stats[C_OUTSIDE]!;
      const inside = size > 0 && at >= 0x1000 && at + size <= 0x1100;
      assert.is(g.inside(0, at, size), inside);
      assert.is(stats[C_OUTSIDE]! - before, inside ? 0 : 1);
      assert.not.ok(g.inside(3, at, size), 'a window never allowed');
    }),
    params,
  );
});

// ---------------------------------------------------------------- MSI-X table and PBA

test('MSI-X table and PBA: any access sequence matches a byte model; only the mask bit of vector control is writable', () => {
  const ENTRY = PCI.PCI_MSIX_ENTRY_SIZE,
    CTRL = PCI.PCI_MSIX_ENTRY_VECTOR_CTRL;
  const op = fc.record({
    table: fc.boolean(),
    write: fc.boolean(),
    offset: fc.integer({ min: -8, max: 8 * ENTRY + 8 }),
    size: fc.constantFrom(1, 2, 4, 8, 3, 16),
    bytes: fc.uint8Array({ minLength: 8, maxLength: 8 }),
  });
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 8 }), fc.array(op, { maxLength: 24 }), (n, ops) => {
      const m = new MsixTableEmulator(n);
      const model = Uint8Array.from(m.table);
      const pba = Uint8Array.from(m.pba);
      const out = new Uint8Array(8);
      for (const o of ops) {
        const bytes = o.table ? m.tableBytes : m.pba.length;
        if (!MsixTableEmulator.fits(o.offset, o.size, bytes)) {
          assert.ok(
            o.offset < 0 ||
              o.offset + o.size > bytes ||
              o.offset % o.size !== 0 ||
              o.size > 8 ||
              o.size === 3,
          );
          continue;
        }
        if (o.table && o.write) {
          m.writeTable(o.offset, o.bytes, o.size);
          for (let i = 0; i < o.size; i++) {
            const at = o.offset + i;
            if (at % ENTRY < CTRL) model[at] = o.bytes[i]!;
            else if (at % ENTRY === CTRL) model[at] = (model[at]! & ~1) | (o.bytes[i]! & 1);
          }
        } else if (o.table) {
          m.readTable(o.offset, out, o.size);
          assert.equal(
            [...out.subarray(0, o.size)],
            [...model.subarray(o.offset, o.offset + o.size)],
          );
        } else if (!o.write) {
          m.readPba(o.offset, out, o.size);
          assert.equal(
            [...out.subarray(0, o.size)],
            [...pba.subarray(o.offset, o.offset + o.size)],
          );
        }
      }
      assert.equal([...m.table], [...model]);
      for (let v = 0; v < n; v++) assert.is(m.masked(v), (model[v * ENTRY + CTRL]! & 1) === 1);
    }),
    params,
  );
});

// ---------------------------------------------------------------- specs

const token = fc.oneof(
  fc.constantFrom('--iommu', '--vfio', '--memory', '--once', '--json', '--'),
  fc
    .array(
      fc.tuple(
        fc.constantFrom(
          'id',
          'host',
          'port',
          'iommu',
          'fd',
          'size',
          'gpa',
          'iommufd_fd',
          'group_fd',
          'x',
        ),
        fc.oneof(
          fc.constantFrom('ctx0', '00:04.0', '0000:00:05.0', '16M', '1G', '0x1000', '3', '-1', ''),
          fc.string({ maxLength: 8 }),
        ),
      ),
      { maxLength: 4 },
    )
    .map((kv) => kv.map(([k, v]) => `${k}=${v}`).join(',')),
  fc.string({ maxLength: 12 }),
);

test('CLI specs: any argument list gives a spec or an InvalidSpecError (a VfrError), nothing else', () => {
  fc.assert(
    fc.property(fc.array(token, { maxLength: 8 }), (argv) => {
      try {
        const { spec } = parseRuntimeArgs(argv);
        assert.ok(Object.isFrozen(spec));
      } catch (e) {
        assert.ok(e instanceof VfrError, `${(e as Error)?.name}: ${(e as Error)?.message}`);
      }
    }),
    params,
  );
});

test('runtime specs: any JSON value gives a frozen spec or an InvalidSpecError naming a field', () => {
  const value = fc.letrec((tie) => ({
    any: fc.oneof(
      { depthSize: 'small' },
      fc.constantFrom(null, undefined, true, 0, -1, 16, 0x1000, '16M', 'ctx0', '00:04.0', 'nvme0'),
      fc.string({ maxLength: 6 }),
      fc.integer(),
      fc.array(tie('any'), { maxLength: 3 }),
      fc.dictionary(
        fc.constantFrom('iommu', 'vfio', 'memory', 'id', 'port', 'bdf', 'size', 'gpa', 'fd', 'x'),
        tie('any'),
        { maxKeys: 4 },
      ),
    ),
  }));
  fc.assert(
    fc.property(value.any, (v) => {
      try {
        assert.ok(Object.isFrozen(normalizeRuntimeSpec(v as never)));
      } catch (e) {
        assert.ok(e instanceof InvalidSpecError, `${(e as Error)?.name}: ${(e as Error)?.message}`);
      }
    }),
    params,
  );
});

test.run();
