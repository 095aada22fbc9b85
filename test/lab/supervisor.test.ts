// Supervised workers of real devices killed mid-traffic (a producer thread reading a register
// back to back): each time the supervisor restarts the worker (from a warm standby) on the same
// fd, ring and state, and the device works again without being set up again: the NVMe answers
// Identify through the admin queues the test set up once, the e1000e delivers its interrupt on
// the MSI-X vector programmed once. Two kills per device (lab time); recovery times printed.
// Then leaks: LAB_RESTARTS (default 10; 100 takes ~8 min in the lab, a cold worker start there
// costing ~5 s) restarts of the NVMe's worker under traffic, then teardown: the process holds the
// fds and threads of before, and the kernel finds no mapping left in the IOAS.

import { Worker } from 'node:worker_threads';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ioasUnmap } from '../../native/iommufd.js';
import { DeviceHandle, type InterruptEvent } from '../../src/coordinator/device-handle.js';
import { Supervisor } from '../../src/coordinator/supervisor.js';
import { memfdRegionSource } from '../../src/dma/backend.js';
import { GuestMemory } from '../../src/dma/guest-memory.js';
import { IommufdContext } from '../../src/dma/iommufd-context.js';
import { U64_MAX } from '../../src/dma/iova-ranges.js';
import { MemfdRegion } from '../../src/memory/memfd-region.js';
import { busMaster, E1000E, e1000eRaise, GuestMsix, sleep, until } from '../support/guest-irq.js';
import { loud } from '../support/hooks.js';
import { labDevice, openOnIommufd, requireLab } from '../support/lab.js';
import { modelNumber, NvmeAdmin } from '../support/nvme-admin.js';
import { processState, settledState } from '../support/process-state.js';
import { supportUrl } from '../support/threads.js';
import type { TrafficJob, TrafficResult } from '../support/traffic.js';

const KILLS = 2;
const RESTARTS = Number(process.env.LAB_RESTARTS ?? 10);
const MSI_ADDR = 0xfee00000;

/** Traffic from another thread; stop() ends it and returns its counts. */
function traffic(ring: SharedArrayBuffer, offset: number) {
  const ctl = new SharedArrayBuffer(8),
    words = new Int32Array(ctl);
  const job: TrafficJob = { ring, ctl, bar: 0, offset };
  const w = new Worker(supportUrl('traffic.js'), { workerData: job });
  const done = new Promise<TrafficResult>((res, rej) => {
    w.once('message', res);
    w.once('error', rej);
  });
  return {
    done: () => Atomics.load(words, 1),
    stop: async (): Promise<TrafficResult> => {
      Atomics.store(words, 0, 1);
      return done;
    },
  };
}

/**
 * Kill the worker mid-traffic KILLS times, each once a warm standby is loaded; `check` must pass
 * after each restart.
 */
async function killLoop(
  h: DeviceHandle,
  sup: Supervisor,
  offset: number,
  check: () => Promise<void>,
): Promise<void> {
  const t = traffic(h.ring, offset);
  let failure: unknown;
  try {
    for (let i = 1; i <= KILLS; i++) {
      await until('a loaded standby', () => h.standbyWarm, 120_000);
      const before = t.done();
      await until('traffic', () => t.done() > before + 50, 10_000);
      h.injectFault('kill'); // the traffic's next request: served, then the worker ends
      await until(`restart ${i}`, () => sup.restarts === i || sup.state === 'failed', 120_000);
      assert.is(sup.state, 'running', `restart ${i}: ${JSON.stringify(sup.events)}`);
      const after = t.done();
      await until('traffic after the restart', () => t.done() > after + 50, 10_000);
      await check();
    }
  } catch (e) {
    failure = e;
  }
  const r = await t.stop();
  console.log(
    `    ${h.name}: traffic ok ${r.ok}, WORKER_DIED ${r.died}, other ${JSON.stringify(r.statuses)}, longest ${r.maxMs.toFixed(0)} ms; recovery ms ${sup.recoveries.map((x) => x.toFixed(0)).join(' ')}`,
  );
  if (failure) throw failure;
  assert.is(r.died, KILLS, 'one lost request per kill, never replayed');
  assert.is(r.other, 0);
}

const s = suite('supervisor: real devices killed mid-traffic, restarted with their state');
s.before(() => requireLab());

s(
  'NVMe: Identify passes after each restart, through the admin queues set up once',
  loud('nvme', async () => {
    const ram = new MemfdRegion('sup-nvme-ram', 1 << 20);
    const ctx = IommufdContext.open('sup-nvme');
    const a = ctx.attachPciDevice(labDevice('nvme'));
    const table = new GuestMemory();
    table.addBackend(ctx);
    table.addRegion({ name: 'ram', gpa: 0n, size: 1n << 20n, memory: memfdRegionSource(ram) });
    const h = await DeviceHandle.start({
      name: 'sup-nvme',
      device: a.device,
      faults: {},
      standby: true,
    });
    const sup = Supervisor.watch(h);
    try {
      const nvme = new NvmeAdmin(h.client(), {
        ram: ram.bytes,
        ramGpa: 0n,
        sqGpa: 0x10000n,
        cqGpa: 0x20000n,
      });
      nvme.enable(); // once
      const page = ram.bytes.subarray(0x30000, 0x31000);
      assert.is(nvme.identifyController(0x30000n), 0);
      const model = modelNumber(page);
      await killLoop(h, sup, 0x1c /* CSTS */, async () => {
        page.fill(0);
        assert.is(nvme.identifyController(0x30000n), 0, 'Identify after the restart');
        assert.is(modelNumber(page), model);
      });
      assert.is((await h.stats()).WORKER_STARTS, KILLS + 1);
    } finally {
      await sup.stop();
      await h.shutdown();
      a.detach();
      ctx.close();
      ram.close();
    }
  }),
);

s(
  'e1000e: the MSI-X interrupt arrives after each restart, on the vector programmed once',
  loud('e1000e', async () => {
    const o = openOnIommufd(labDevice('e1000e'));
    const events: InterruptEvent[] = [];
    const h = await DeviceHandle.start({
      name: 'sup-e1000e',
      device: o.dev,
      faults: {},
      standby: true,
      onInterrupt: (e) => events.push(e),
    });
    const sup = Supervisor.watch(h);
    try {
      const c = h.client();
      const gm = new GuestMsix(c, h.description);
      busMaster(c);
      gm.control(true, true);
      gm.program(2, MSI_ADDR, 0x42);
      gm.control(true, false);
      gm.mask(2, false);
      c.barWrite(0, E1000E.IVAR, 4, 0x8 | 2);
      c.barWrite(0, E1000E.IMS, 4, E1000E.RXQ0);
      const raise = async (): Promise<void> => {
        events.length = 0;
        e1000eRaise(c);
        await until('the interrupt on vector 2', () => events.length > 0);
        await sleep(50);
        // On vector 2 only. The count may be 2: the e1000e can raise a cause left pending
        // from before (seen once in CI, on the first raise, before any kill).
        assert.ok(
          events.length > 0 &&
            events.every((e) => e.kind === 'msix' && e.vector === 2 && e.count >= 1),
          `interrupts on MSI-X vector 2 only: ${JSON.stringify(events)}`,
        );
      };
      await raise();
      await killLoop(h, sup, 0x8 /* STATUS */, raise);
      assert.is((await h.irqStatus()).mode, 'msix', 'the mode survived');
    } finally {
      await sup.stop();
      await h.shutdown();
      o.close();
    }
  }),
);

s(
  `${RESTARTS} restarts of the NVMe's worker, then teardown: fds and threads of before, no IOAS mapping`,
  loud('leaks', async () => {
    const before = processState();
    const ram = new MemfdRegion('sup-leak-ram', 1 << 20);
    const ctx = IommufdContext.open('sup-leak');
    const a = ctx.attachPciDevice(labDevice('nvme'));
    const table = new GuestMemory();
    table.addBackend(ctx);
    const region = table.addRegion({
      name: 'ram',
      gpa: 0n,
      size: 1n << 20n,
      memory: memfdRegionSource(ram),
    });
    const h = await DeviceHandle.start({
      name: 'sup-leak',
      device: a.device,
      faults: {},
      standby: true,
    });
    const sup = Supervisor.watch(h, { maxRestarts: RESTARTS + 1, windowMs: 3_600_000 });
    const t = traffic(h.ring, 0x1c /* CSTS */);
    let r: TrafficResult | undefined;
    try {
      for (let i = 1; i <= RESTARTS; i++) {
        const served = t.done();
        await until('traffic', () => t.done() > served, 10_000);
        h.injectFault('kill');
        await until(`restart ${i}`, () => sup.restarts === i || sup.state === 'failed', 120_000);
        assert.is(sup.state, 'running', `restart ${i}: ${JSON.stringify(sup.events.at(-1))}`);
      }
    } finally {
      r = await t.stop();
      await sup.stop();
      await h.shutdown();
    }
    const ms = [...sup.recoveries].sort((x, y) => x - y);
    const pct = (p: number): string =>
      ms[Math.min(ms.length - 1, Math.floor(p * ms.length))]!.toFixed(0);
    console.log(
      `    ${RESTARTS} restarts under traffic (${r.ok} reads ok, ${r.died} WORKER_DIED): recovery p50 ${pct(0.5)} ms, p99 ${pct(0.99)} ms`,
    );
    assert.is(r.died, RESTARTS, 'one lost request per kill');
    assert.ok(ctx.mappings().length > 0, 'guest memory was mapped throughout');
    table.removeRegion(region);
    // The kernel's view, not the table's: unmapping the whole IOVA space finds nothing.
    const left = ioasUnmap(ctx.iommufd, ctx.ioasId!, 0n, U64_MAX);
    a.detach();
    ctx.close();
    table.close();
    ram.close();
    assert.is(left, 0n, 'IOMMU_IOAS_UNMAP of 0..U64_MAX found no mapping left in the IOAS');
    const after = await settledState(before);
    assert.equal(after.fds, before.fds, 'the fds of before');
    assert.is(after.threads, before.threads, 'the threads of before');
  }),
);

s.run();
