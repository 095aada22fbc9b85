// node dist/bench/stress/restart-cost.js [devices=16] [rounds=32]: the cost of restarting a
// device worker on the host, with `devices` simulated devices up: each round ends one worker
// (terminate, as a crash would) and times respawn() to ready(), cold (a new worker thread) and
// from a warm standby (src/coordinator/standby.ts), loaded before each round. One JSON line.
import { C, check, raw } from '../../native/libc.js';
import { DeviceHandle } from '../../src/coordinator/device-handle.js';
import { OP, STATUS } from '../../src/ring/protocol.js';
import { bitmapBytes, memfdBytes } from './sim-device.js';

const devices = Number(process.argv[2] ?? 16),
  rounds = Number(process.argv[3] ?? 32);
const pct = (xs: number[], q: number): number =>
  Math.round(
    [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))]! * 10,
  ) / 10;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function measure(standby: boolean): Promise<{ p50: number; p99: number; first: number }> {
  const fds: number[] = [],
    handles: DeviceHandle[] = [];
  const t0 = performance.now();
  for (let d = 0; d < devices; d++) {
    const fd = check(raw.memfd_create(`rc${d}`, C.MFD_CLOEXEC), 'memfd_create', 'rc');
    check(raw.ftruncate(fd, memfdBytes(8)), 'ftruncate', 'rc');
    fds.push(fd);
    handles.push(
      await DeviceHandle.start({
        name: `rc${d}`,
        device: { fd, path: `sim:${bitmapBytes(8)}` },
        workerUrl: new URL('./sim-worker.js', import.meta.url),
        standby,
      }),
    );
  }
  const first = (performance.now() - t0) / devices;
  const times: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const h = handles[r % devices]!;
    // With standbys: the pool's next one is loaded first (what a restart after a quiet spell finds).
    for (const t = Date.now(); standby && !h.standbyWarm && Date.now() - t < 60_000; )
      await sleep(20);
    await h.worker.terminate();
    await sleep(20);
    const t = performance.now();
    await h.respawn();
    times.push(performance.now() - t);
    if (h.client().call(OP.NOP, 0, 0, 0) !== STATUS.OK) throw new Error('not serving');
  }
  for (const h of handles) await h.shutdown();
  for (const fd of fds) raw.close(fd);
  return { p50: pct(times, 0.5), p99: pct(times, 0.99), first: Math.round(first) };
}

const cold = await measure(false);
const warm = await measure(true);
console.log(
  JSON.stringify({
    devices,
    rounds,
    restart_ms_cold_p50: cold.p50,
    restart_ms_cold_p99: cold.p99,
    restart_ms_standby_p50: warm.p50,
    restart_ms_standby_p99: warm.p99,
    start_ms_per_device: cold.first,
  }),
);
