// Runtime.removeDevice on the real kernel: a device removed while producer threads hammer its
// ring; every pending request completes (answer or error) and none hangs, the process holds the
// fds it held before the device came, its context's IOAS is gone with its mappings, and the same
// device can be added again and answers.

import { Worker } from 'node:worker_threads';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Runtime } from '../../src/coordinator/runtime.js';
import type { HammerResult } from '../support/hammer.js';
import { labDevice, requireLab } from '../support/lab.js';
import { openFds } from '../support/process-state.js';
import { supportUrl } from '../support/threads.js';

const t = suite('runtime: removing a device under load');
const NVME_VS = 0x10400;

function hammer(
  ring: SharedArrayBuffer,
  count: SharedArrayBuffer,
): { worker: Worker; done: Promise<HammerResult> } {
  const worker = new Worker(supportUrl('hammer.js'), {
    workerData: { ring, count, bar: 0, offset: 8, expect: NVME_VS },
  });
  const done = new Promise<HammerResult>((resolve, reject) => {
    worker.once('message', (m) => resolve(m as HammerResult));
    worker.once('error', reject);
  });
  return { worker, done };
}

t.before(() => requireLab());

t(
  'removeDevice while 2 producers hammer the NVMe ring: all complete, fds and IOAS back, re-add answers VS',
  async () => {
    const bdf = labDevice('nvme');
    const rt = await Runtime.start({
      iommu: [{ id: 'ctx0' }],
      vfio: [],
      memory: [{ size: 16n << 20n, gpa: 0n }],
    });
    try {
      const ctx = rt.contexts.get('ctx0')!;
      const before = openFds(),
        mappingsBefore = ctx.mappings().length;
      const d = await rt.addDevice({ port: 'nvme0', bdf, iommu: 'ctx0' });
      assert.ok(ctx.mappings().length > 0, 'guest memory is mapped once a device is attached');
      const count = new SharedArrayBuffer(4);
      const hammers = [hammer(d.handle.ring, count), hammer(d.handle.ring, count)];
      const start = Date.now();
      while (Atomics.load(new Int32Array(count), 0) < 200 && Date.now() - start < 60_000)
        await new Promise((r) => setTimeout(r, 20));
      const removedAt = Date.now();
      await rt.removeDevice('nvme0');
      const removeMs = Date.now() - removedAt;
      const results = await Promise.race([
        Promise.all(hammers.map((h) => h.done)),
        new Promise<never>((_, reject) =>
          setTimeout(
            () => reject(new Error('a producer still waits 10 s after removeDevice')),
            10_000,
          ),
        ),
      ]);
      for (const h of hammers) await h.worker.terminate();
      const lastMs = Math.max(...results.map((r) => r.endedAt)) - removedAt;
      console.log(
        `    ${results.map((r) => r.ok).join(' + ')} reads answered; removeDevice took ${removeMs} ms; last pending request ended ${lastMs} ms after removal began: ${results[0]!.error}: ${results[0]!.message}`,
      );
      for (const r of results) {
        assert.is(r.wrong, 0, 'every answered read was VS');
        assert.is(r.error, 'RingClosedError', 'pending requests end with RingClosedError');
      }
      assert.ok(
        lastMs < 1000,
        `every pending request completed within 1 s of removal (${lastMs} ms)`,
      );
      assert.equal(openFds(), before, 'the process holds the fds it held before the device came');
      assert.is(
        ctx.mappings().length,
        mappingsBefore,
        'the IOAS mappings are back to their count before the device',
      );
      assert.is(ctx.ioasId, undefined, 'the IOAS went with its last device');
      assert.equal(rt.describe().devices, []);

      const again = await rt.addDevice({ port: 'nvme0', bdf, iommu: 'ctx0' });
      assert.is(
        again.handle.client().barRead(0, 8, 4),
        NVME_VS,
        'the device answers VS after it is added again',
      );
      await rt.removeDevice('nvme0');
      assert.equal(openFds(), before, 'and its fds are closed again');
    } finally {
      await rt.shutdown();
    }
  },
);

t.run();
