// bench config: 2 M config-space reads (vendor id, passed through to the device's config
// region, here a memfd), counting GCs: first on this thread straight through ConfigSpace and
// the configIo an AssignedDevice uses (allocation per read shows as scavenges: an error string
// built per access made 36-58 of them), then through the ring (the serving worker's GCs; its
// sleeps allocate a promise each, so an overloaded machine shows some there).
import { once } from 'node:events';
import { PerformanceObserver } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { raw } from '../native/libc.js';
import { configIo } from '../src/device/assigned-device.js';
import { ConfigSpace } from '../src/device/config-space.js';
import { MemfdRegion } from '../src/memory/memfd-region.js';
import { RingClient } from '../src/ring/client.js';
import { createRingBuffer } from '../src/ring/protocol.js';

const WORKER = new URL('./config-worker.js', import.meta.url);
const READS = Number(process.env.CONFIG_READS ?? 2_000_000);

export async function benchConfig(): Promise<Record<string, number>> {
  const mem = new MemfdRegion('bench-config', 4096);
  const phys = new Uint8Array(256);
  phys[0] = 0x36;
  phys[1] = 0x1b; // vendor 0x1b36
  raw.pwrite(mem.fd.fd, phys, 256, 0);
  const direct = await directGcs(mem.fd.fd, phys);
  const ring = createRingBuffer({ capacity: 16, bulkBytes: 64 });
  const w = new Worker(WORKER, { workerData: { ring, fd: mem.fd.fd, phys } });
  const ask = async (m: string): Promise<unknown> => {
    const p = once(w, 'message');
    w.postMessage(m);
    return (await p)[0];
  };
  try {
    await once(w, 'message');
    const c = new RingClient(ring);
    for (let i = 0; i < 100_000; i++) c.cfgRead(0, 2); // warm up (JIT)
    await ask('reset');
    const t0 = performance.now();
    let bad = 0;
    for (let i = 0; i < READS; i++) if (c.cfgRead(0, 2) !== 0x1b36) bad++;
    const ms = performance.now() - t0;
    const gcs = (await ask('gcs')) as number;
    if (bad) throw new Error(`${bad} config reads returned the wrong vendor id`);
    console.log(`${READS / 1e6} M config reads on this thread: ${direct} GCs`);
    console.log(
      `${READS / 1e6} M config reads through the ring in ${ms.toFixed(0)} ms (${((ms * 1000) / READS).toFixed(3)} µs each): ${gcs} GCs in the serving worker`,
    );
    return {
      config_reads: READS,
      config_direct_gcs: direct,
      config_worker_gcs: gcs,
      config_read_us: Number(((ms * 1000) / READS).toFixed(3)),
    };
  } finally {
    await w.terminate();
    mem.close();
  }
}

/** GCs on this thread during READS config reads through ConfigSpace and configIo. */
async function directGcs(fd: number, phys: Uint8Array): Promise<number> {
  const cfg = new ConfigSpace(configIo(fd, 0, 'memfd:config'), phys, []);
  for (let i = 0; i < 100_000; i++) cfg.read(0, 2);
  let gcs = 0;
  const obs = new PerformanceObserver((list) => {
    gcs += list.getEntries().length;
  });
  obs.observe({ entryTypes: ['gc'] });
  // (Not a running sum: past 2^30 it is a heap number, allocated per add.)
  let bad = 0;
  for (let i = 0; i < READS; i++) if (cfg.read(0, 2) !== 0x1b36) bad++;
  if (bad) throw new Error(`${bad} config reads returned the wrong vendor id`);
  // The observer's entries are delivered on the event loop, after this turn.
  await new Promise((r) => setTimeout(r, 100));
  obs.disconnect();
  return gcs;
}
