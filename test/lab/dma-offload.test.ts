// Long map work offloaded to the piscina pool on the real kernel: 256 MiB pinned in chunks while
// the event loop keeps turning, progress reported, the kernel agreeing; and a cancel that leaves
// nothing mapped.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { SysError } from '../../native/errno.js';
import { memfdRegionSource } from '../../src/dma/backend.js';
import { GuestMemory } from '../../src/dma/guest-memory.js';
import { IommufdContext } from '../../src/dma/iommufd-context.js';
import { MapOffload } from '../../src/dma/map-offload.js';
import { MemfdRegion } from '../../src/memory/memfd-region.js';
import { loud } from '../support/hooks.js';
import { labDevice, requireLab } from '../support/lab.js';

const MiB = 1n << 20n;
const s = suite('DMA map work offloaded to a pool thread');
const st: { ctx?: IommufdContext; ram?: MemfdRegion; off?: MapOffload; detach?: () => void } = {};
s.before(
  loud('before', () => {
    requireLab();
    st.ram = new MemfdRegion('offload-ram', 256 << 20);
    st.ctx = IommufdContext.open('offload');
    st.detach = st.ctx.attachPciDevice(labDevice('nvme')).detach;
    st.off = new MapOffload();
  }),
);
s.after(
  loud('after', async () => {
    await st.off?.close();
    st.detach?.();
    st.ctx?.close();
    st.ram?.close();
  }),
);

s('256 MiB in 64 MiB chunks: progress, a free event loop, and the kernel agrees', async () => {
  const t = new GuestMemory();
  t.addBackend(st.ctx!);
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const progress: bigint[] = [];
  const t0 = performance.now();
  const r = await t.addRegionAsync(
    { name: 'ram', gpa: 0n, size: 256n * MiB, memory: memfdRegionSource(st.ram!) },
    { run: st.off!.run, chunkBytes: 64n * MiB, onProgress: (d) => progress.push(d / MiB) },
  );
  clearInterval(timer);
  console.log(
    `    mapped 256 MiB in ${(performance.now() - t0).toFixed(0)} ms; progress ${progress.join(',')} MiB; event-loop ticks meanwhile: ${ticks}`,
  );
  assert.equal(progress, [64n, 128n, 192n, 256n]);
  assert.ok(ticks > 0, 'the event loop turned while the pool pinned');
  assert.ok(t.isMapped(0n, 256n * MiB));
  try {
    st.ctx!.mapFixed(128n * MiB, 0x1000n, memfdRegionSource(st.ram!));
    assert.unreachable('the page should be mapped');
  } catch (e) {
    assert.is((e as SysError).code, 'EEXIST');
  }
  t.removeRegion(r);
  assert.equal(st.ctx!.mappings(), []);
  t.removeBackend(st.ctx!);
});

s('cancelled after the first chunk: nothing stays mapped', async () => {
  const t = new GuestMemory();
  t.addBackend(st.ctx!);
  const ac = new AbortController();
  let err: unknown;
  try {
    await t.addRegionAsync(
      { name: 'ram', gpa: 0n, size: 256n * MiB, memory: memfdRegionSource(st.ram!) },
      {
        run: st.off!.run,
        chunkBytes: 64n * MiB,
        signal: ac.signal,
        onProgress: () => ac.abort(new Error('cancelled by the operator')),
      },
    );
  } catch (e) {
    err = e;
  }
  assert.match(String(err), 'cancelled by the operator');
  assert.equal(st.ctx!.mappings(), [], 'the backend made nothing that stayed');
  assert.equal(t.regions(), []);
  assert.is(st.ctx!.unmapAll(), 0n, 'the kernel has nothing mapped either');
  t.removeBackend(st.ctx!);
});

s.run();
