// Device workers on the real kernel: NVMe (iommufd cdev) and e1000e (legacy container), each in
// its own worker, reached through their rings: registers, config space against sysfs, BAR
// sizing, 4 producer threads × 2 devices × 10,000 mixed requests, and malformed requests.

import { readFileSync } from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { raw } from '../../native/libc.js';
import * as vfio from '../../native/vfio.js';
import { DeviceHandle } from '../../src/coordinator/device-handle.js';
import { H_ATTENTION, H_HEAD, OP, ringWords, STATUS } from '../../src/ring/protocol.js';
import { labDevice, openOnContainer, openOnIommufd, requireLab } from '../support/lab.js';
import type { ProducerJob, ProducerResult } from '../support/ring-threads.js';
import { runThread } from '../support/threads.js';

const t = suite('device workers through the ring');
const s: {
  nvme?: DeviceHandle;
  e1000e?: DeviceHandle;
  closers: (() => void)[];
  bdf: Record<string, string>;
} = { closers: [], bdf: {} };

t.before(async () => {
  requireLab();
  s.bdf.nvme = labDevice('nvme');
  s.bdf.e1000e = labDevice('e1000e');
  const n = openOnIommufd(s.bdf.nvme);
  const e = openOnContainer(s.bdf.e1000e);
  s.closers.push(n.close, e.close);
  // The workers owe their event loops a turn only every minute: every control call of this suite
  // must get through because the coordinator flags its posts in the ring.
  s.nvme = await DeviceHandle.start({ name: 'nvme0', device: n.dev, serve: { yieldMs: 60_000 } });
  s.e1000e = await DeviceHandle.start({
    name: 'e1000e0',
    device: e.dev,
    serve: { yieldMs: 60_000 },
  });
});

t.after(async () => {
  await s.nvme?.shutdown();
  await s.e1000e?.shutdown();
  for (const c of s.closers) c();
});

t('NVMe CAP, VS and CSTS; an AQA write sticks', () => {
  const c = s.nvme!.client();
  const cap = c.barRead64(0, 0x0);
  console.log(
    `    NVMe CAP 0x${cap.toString(16)} VS 0x${c.barRead(0, 0x8, 4).toString(16)} CSTS 0x${c.barRead(0, 0x1c, 4).toString(16)}`,
  );
  assert.ok(cap !== 0n && (cap & 0xffffn) > 0n, 'CAP.MQES is set');
  assert.is(c.barRead(0, 0x8, 4), 0x10400, 'VS 1.4.0');
  assert.is(c.barRead(0, 0x1c, 4) & 0x2, 0, 'CSTS.CFS clear');
  c.barWrite(0, 0x24, 4, 0x001f001f);
  assert.is(c.barRead(0, 0x24, 4), 0x001f001f, 'AQA read back');
  c.barWrite64(0, 0x28, 0x12345000n);
  assert.is(c.barRead64(0, 0x28), 0x12345000n, 'ASQ read back (64-bit access)');
});

t('e1000e STATUS through the ring equals a direct read of the device', () => {
  const c = s.e1000e!.client();
  const viaRing = c.barRead(0, 0x8, 4);
  const direct = Buffer.alloc(4);
  const dev = s.e1000e!.opts.device;
  raw.pread(dev.fd, direct, 4, vfio.deviceGetRegionInfo(dev, 0).offset + 8n);
  console.log(`    e1000e STATUS 0x${viaRing.toString(16)}`);
  assert.is(viaRing, direct.readUInt32LE());
});

for (const kind of ['nvme', 'e1000e'] as const) {
  t(
    `${kind}: config space through the runtime equals sysfs except where virtualized; BARs size from region info`,
    () => {
      const handle = s[kind]!;
      const c = handle.client();
      const d = handle.description;
      const sysfs = readFileSync(`/sys/bus/pci/devices/${s.bdf[kind]}/config`);
      const emulated = new Uint8Array(d.configSize);
      for (const [a, b] of d.emulatedConfig) emulated.fill(1, a, b);
      let compared = 0;
      for (let off = 0; off < Math.min(sysfs.length, d.configSize); off += 4) {
        const v = c.cfgRead(off, 4);
        for (let i = 0; i < 4; i++) {
          if (emulated[off + i]) continue;
          compared++;
          const got = (v >>> (8 * i)) & 0xff;
          if (got !== sysfs[off + i])
            assert.unreachable(
              `config byte 0x${(off + i).toString(16)}: runtime 0x${got.toString(16)}, sysfs 0x${sysfs[off + i]!.toString(16)}`,
            );
        }
      }
      console.log(
        `    ${kind}: ${compared} pass-through bytes equal sysfs; ${d.emulatedConfig.length} emulated ranges; hidden ext caps: ${
          d.extendedCapabilities
            .filter((x) => x.hidden)
            .map((x) => x.id)
            .join(',') || 'none'
        }`,
      );
      assert.ok(compared > 200);
      for (const bar of d.bars) {
        const off = 0x10 + 4 * bar.index;
        const flags = sysfs.readUInt32LE(off) & (bar.io ? 0x3 : 0xf);
        c.cfgWrite(off, 4, 0xffffffff);
        const size = BigInt(bar.size);
        const want =
          size >= 1n << 32n
            ? flags
            : ((~Number(size - 1n) & (bar.io ? 0xfffffffc : 0xfffffff0)) | flags) >>> 0;
        assert.is(c.cfgRead(off, 4), want, `BAR${bar.index} sizing (size ${bar.size})`);
        if (bar.is64) {
          c.cfgWrite(off + 4, 4, 0xffffffff);
          assert.is(
            c.cfgRead(off + 4, 4),
            ~Number((size - 1n) >> 32n) >>> 0,
            `BAR${bar.index} upper half`,
          );
          c.cfgWrite(off + 4, 4, 0);
        }
        c.cfgWrite(off, 4, 0);
      }
      // The device itself never saw the all-ones writes: its BARs read from sysfs are unchanged.
      assert.equal(
        readFileSync(`/sys/bus/pci/devices/${s.bdf[kind]}/config`).subarray(0x10, 0x28),
        sysfs.subarray(0x10, 0x28),
      );
    },
  );
}

t(
  '4 producer threads × 2 devices × 10,000 mixed requests: each completes once, correctly',
  async () => {
    const n = s.nvme!.description,
      msix = n.msix!;
    const rings = [s.nvme!.ring, s.e1000e!.ring];
    const status = s.e1000e!.client().barRead(0, 0x8, 4);
    const before = await Promise.all([s.nvme!.stats(), s.e1000e!.stats()]);
    const jobs: ProducerJob[] = [0, 1, 2, 3].map((p) => ({
      role: 'producer',
      rings,
      requests: 10_000,
      seed: 99 + p,
      avoidMod16: 12,
      // NVMe: this producer's quarter of the (emulated) MSI-X table; e1000e: its quarter of the MTA registers.
      scratch: [
        { bar: msix.tableBar, offset: msix.tableOffset + p * 0x100, bytes: 0x100 },
        { bar: 0, offset: 0x5200 + p * 0x80, bytes: 0x80 },
      ],
      probe: [
        { bar: 0, offset: 0x8, value: 0x10400, vendor: 0x1b36 },
        { bar: 0, offset: 0x8, value: status, vendor: 0x8086 },
      ],
    }));
    const t0 = performance.now();
    const results = await Promise.all(
      jobs.map((j) => runThread<ProducerResult>('ring-threads.js', j)),
    );
    const ms = performance.now() - t0;
    for (const r of results) {
      assert.equal(r.errors, []);
      assert.equal(r.mismatches, []);
      assert.is(r.done, 10_000);
    }
    const after = await Promise.all([s.nvme!.stats(), s.e1000e!.stats()]);
    const served = after.map((a, i) => a.served - before[i]!.served);
    console.log(
      `    40,000 producer operations in ${ms.toFixed(0)} ms; served: nvme ${served[0]}, e1000e ${served[1]}`,
    );
    // Each producer op is one ring request, except write+read-back (two): ≥ 40,000 in all, split across both devices.
    assert.ok(served[0]! >= 20_000 && served[1]! >= 20_000, `served ${served}`);
  },
);

t('malformed and out-of-range requests get their status; the worker keeps serving', async () => {
  const c = s.nvme!.client();
  const cases: [string, number, number, number, number, number][] = [
    ['unknown op', 77, 0, 0, 4, STATUS.BAD_OP],
    ['BAR1 (upper half of BAR0)', OP.BAR_READ, 1, 0, 4, STATUS.BAD_BAR],
    ['BAR index 9', OP.BAR_READ, 9, 0, 4, STATUS.BAD_BAR],
    ['negative BAR index', OP.BAR_READ, -1, 0, 4, STATUS.BAD_BAR],
    ['offset past the BAR', OP.BAR_READ, 0, 0x4000, 4, STATUS.OUT_OF_RANGE],
    ['bulk access straddling the BAR end', OP.BAR_READ, 0, 0x3ff8, 16, STATUS.OUT_OF_RANGE],
    ['misaligned qword', OP.BAR_WRITE, 0, 0x3ffc, 8, STATUS.MISALIGNED],
    ['width 3', OP.BAR_READ, 0, 0, 3, STATUS.BAD_WIDTH],
    ['misaligned dword', OP.BAR_READ, 0, 2, 4, STATUS.MISALIGNED],
    ['config offset past 4 KiB', OP.CFG_READ, 0, 4096, 4, STATUS.OUT_OF_RANGE],
    ['config width 8', OP.CFG_READ, 0, 0, 8, STATUS.BAD_WIDTH],
    ['larger than the bulk area', OP.BAR_READ, 0, 0, 8192, STATUS.BAD_WIDTH],
  ];
  for (const [what, op, idx, off, size, want] of cases)
    assert.is(c.call(op, idx, off, size), want, what);
  assert.is(c.barRead(0, 0x8, 4), 0x10400, 'still serving');
  const bulk = new Uint8Array(64);
  c.barReadBulk(0, 0, bulk);
  assert.is(Buffer.from(bulk).readUInt32LE(8), 0x10400, 'bulk read of the register file');
  const st = await s.nvme!.stats();
  // (The oversized bulk request is refused by the ring server before it reaches the device counters.)
  assert.ok(
    st.ERR_BAD_OP >= 1 &&
      st.ERR_BAD_BAR >= 3 &&
      st.ERR_OUT_OF_RANGE >= 3 &&
      st.ERR_BAD_WIDTH >= 2 &&
      st.ERR_MISALIGNED >= 2,
    JSON.stringify(st),
  );
});

t('control calls are answered while the worker is busy serving its ring', async () => {
  // A producer thread keeps the NVMe worker serving NOPs back to back. Its event loop is owed a
  // turn only every minute (serve.yieldMs above), so each answer below comes because the
  // coordinator flagged its post in the ring's attention word.
  const h = ringWords(s.nvme!.ring),
    stop = new SharedArrayBuffer(4);
  const producer = runThread<number>('ring-threads.js', {
    role: 'nop-loop',
    ring: s.nvme!.ring,
    stop,
  });
  const within = <T>(p: Promise<T>, ms: number): Promise<T | 'no answer'> =>
    Promise.race([p, new Promise<'no answer'>((r) => setTimeout(() => r('no answer'), ms))]);
  const served: number[] = [];
  let flagged = 0;
  try {
    const first = await s.nvme!.stats();
    for (let i = 0; i < 5000 && Atomics.load(h, H_HEAD) < first.served + 1000; i++)
      await new Promise((r) => setTimeout(r, 2));
    flagged = Atomics.load(h, H_ATTENTION);
    for (let i = 0; i < 20; i++) {
      const st = await within(s.nvme!.stats(), 20_000);
      assert.ok(st !== 'no answer', `stats() call ${i} answered while the ring is busy`);
      served.push(st.served);
    }
  } finally {
    Atomics.store(new Int32Array(stop), 0, 1);
  }
  const nops = await producer;
  assert.ok(
    Atomics.load(h, H_ATTENTION) - flagged >= 20,
    `each control call flagged its post (${Atomics.load(h, H_ATTENTION) - flagged} flags for 20 calls)`,
  );
  assert.ok(
    served[19]! > served[0]!,
    `the ring was served while the calls were answered: ${served.join(' ')}`,
  );
  assert.ok(nops > 1000, `${nops} NOPs`);
});

t('describe and reset over the control plane', async () => {
  const d = await s.nvme!.describe();
  assert.is(d.msix?.vectors, 65);
  assert.ok(d.bars.some((b) => b.index === 0 && b.msixTable));
  const c = s.nvme!.client();
  c.cfgWrite(0x10, 4, 0xfe000000);
  await s.nvme!.reset();
  assert.is(c.cfgRead(0x10, 4) & 0xfffffff0, 0, 'BAR0 back to its power-on value after reset');
  assert.is(c.barRead(0, 0x8, 4), 0x10400, 'serving after reset');
});

t.run();
