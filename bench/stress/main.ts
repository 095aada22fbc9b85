// npm run stress [-- --seconds 60 --producers 4 --devices 4 --requests 2000000 --rate 0.0002
//   --kinds kill+throw+crash+errno+delay+corrupt --seed 1 --watchdog-ms 1000 --max-restarts N
//   --hung-ms 10000 --standby 1]:
// M producer threads × N simulated devices (memfd-backed config and BAR0, supervised workers
// with faults injected at `rate` per request) × up to K requests each, bounded in time. It ends
// with one JSON line: requests, ok, errored, lost, duplicated, hung (all three must be 0),
// restarts, recovery_ms_p50/p99 (failure detected → successor ready, which is when it serves its
// first request), and whether each device's final state is one the outcomes allow.
import { Worker } from 'node:worker_threads';
import { C, check, raw } from '../../native/libc.js';
import { DeviceHandle } from '../../src/coordinator/device-handle.js';
import { Supervisor } from '../../src/coordinator/supervisor.js';
import type { FaultKind } from '../../src/device/faults.js';
import { FAULT_KINDS } from '../../src/metrics/schema.js';
import type { ProducerJob, ProducerResult } from './producer.js';
import {
  BAR_BASE,
  BITMAP_BASE,
  bitmapBytes,
  CFG_BASE,
  CFG_SCRATCH,
  DATA,
  MAX_PRODUCERS,
  memfdBytes,
  SIM_DUPS,
  simWords,
} from './sim-device.js';

interface Flags {
  seconds: number;
  producers: number;
  devices: number;
  requests: number;
  rate: number;
  kinds: FaultKind[];
  seed: number;
  watchdogMs: number;
  maxRestarts: number;
  /** A request in flight longer than this is hung, ms. */
  hungMs: number;
  /** Restart from warm standby workers (1) or cold (0). */
  standby: number;
}

function parseFlags(argv: string[]): Flags {
  const f: Flags = {
    seconds: 60,
    producers: 4,
    devices: 4,
    requests: 2_000_000,
    rate: 0.0002,
    kinds: ['kill', 'throw', 'crash', 'errno', 'delay', 'corrupt'],
    seed: 1,
    watchdogMs: 1000,
    maxRestarts: 1_000_000,
    hungMs: 10_000,
    standby: 1,
  };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i]!.replace(/^--/, ''),
      v = argv[i + 1] ?? '';
    const key = k.replace(/-(\w)/g, (_, c: string) => c.toUpperCase()) as keyof Flags;
    if (!(key in f)) {
      console.error(`stress: unknown flag --${k} (flags: ${Object.keys(f).join(', ')})`);
      process.exit(2);
    }
    if (key === 'kinds') {
      f.kinds = v.split('+').filter(Boolean) as FaultKind[];
      for (const kind of f.kinds)
        if (!(FAULT_KINDS as readonly string[]).includes(kind)) {
          console.error(`stress: unknown fault kind ${kind} (${FAULT_KINDS.join(', ')})`);
          process.exit(2);
        }
    } else if (!Number.isFinite(Number(v)) || v === '') {
      console.error(`stress: --${k} needs a number, got '${v}'`);
      process.exit(2);
    } else (f as unknown as Record<string, number>)[key] = Number(v);
  }
  if (f.producers < 1 || f.producers > MAX_PRODUCERS) {
    console.error(`stress: --producers must be 1..${MAX_PRODUCERS}`);
    process.exit(2);
  }
  return f;
}

const pct = (xs: number[], q: number): number => {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return Math.round(s[Math.min(s.length - 1, Math.floor(q * s.length))]! * 10) / 10;
};

function readU32(fd: number, at: number): number {
  const b = new Uint8Array(4);
  check(raw.pread(fd, b, 4, at), 'pread', 'sim memfd');
  return new DataView(b.buffer).getUint32(0, true);
}

async function main(): Promise<void> {
  const f = parseFlags(process.argv.slice(2));
  const perDev = f.requests; // a producer's SEQ values on one device stay below its request count
  const fds: number[] = [],
    handles: DeviceHandle[] = [],
    sups: Supervisor[] = [];
  for (let d = 0; d < f.devices; d++) {
    const fd = check(raw.memfd_create(`sim${d}`, C.MFD_CLOEXEC), 'memfd_create', `sim${d}`);
    check(raw.ftruncate(fd, memfdBytes(perDev)), 'ftruncate', `sim${d}`);
    fds.push(fd);
    const h = await DeviceHandle.start({
      name: `sim${d}`,
      device: { fd, path: `sim:${bitmapBytes(perDev)}` },
      workerUrl: new URL('./sim-worker.js', import.meta.url),
      ring: { capacity: 64, bulkBytes: 64 },
      faults: { rate: f.rate, kinds: f.kinds, seed: f.seed * 1000 + d },
      stopGraceMs: 500,
      standby: f.standby !== 0,
    });
    handles.push(h);
    sups.push(
      Supervisor.watch(h, {
        watchdogMs: f.watchdogMs,
        maxRestarts: f.maxRestarts,
        windowMs: 60_000,
      }),
    );
  }
  const progress = new SharedArrayBuffer(f.producers * 2 * 8);
  const started = Date.now();
  const until = started + f.seconds * 1000;
  const results: (ProducerResult | undefined)[] = [];
  const producers = Array.from({ length: f.producers }, (_, p) => {
    const job: ProducerJob = {
      p,
      rings: handles.map((h) => h.ring),
      states: handles.map((h) => h.memory.state),
      until,
      maxRequests: f.requests,
      seed: f.seed,
      progress,
    };
    const w = new Worker(new URL('./producer.js', import.meta.url), { workerData: job });
    return new Promise<void>((resolve, reject) => {
      w.once('message', (m: ProducerResult) => {
        results[p] = m;
        resolve();
      });
      w.once('error', reject);
    });
  });
  // Hung requests: one in flight longer than hungMs; the harness gives up hungMs past the end.
  const prog = new Float64Array(progress);
  let hung = 0;
  const hungSeen = new Set<number>();
  const watch = setInterval(() => {
    const now = performance.now();
    for (let p = 0; p < f.producers; p++) {
      const t = prog[2 * p]!;
      if (t > 0 && now - t > f.hungMs && !hungSeen.has(p)) {
        hungSeen.add(p);
        hung++;
      }
    }
  }, 200);
  const giveUp = new Promise<'timeout'>((r) =>
    setTimeout(() => r('timeout'), f.seconds * 1000 + f.hungMs + 5000).unref(),
  );
  const outcome = await Promise.race([Promise.all(producers).then(() => 'done' as const), giveUp]);
  clearInterval(watch);
  const elapsed = (Date.now() - started) / 1000;
  for (const s of sups) await s.settled();
  const failedDevices = sups.filter((s) => s.state === 'failed').length;
  for (const s of sups) await s.stop();

  let requests = 0,
    ok = 0,
    errored = 0,
    died = 0,
    failedReq = 0,
    wrong = 0,
    lost = 0,
    effectDespiteError = 0,
    irqMissed = 0,
    maxRequestMs = 0;
  const statuses: Record<string, number> = {};
  const finalState: Record<string, boolean> = {};
  for (const r of results) {
    if (!r) continue;
    requests += r.requests;
    ok += r.ok;
    errored += r.errored;
    died += r.died;
    failedReq += r.failed;
    wrong += r.wrong;
    maxRequestMs = Math.max(maxRequestMs, r.maxRequestMs);
    for (const [k, v] of Object.entries(r.statuses)) statuses[k] = (statuses[k] ?? 0) + v;
  }
  let duplicated = 0;
  for (let d = 0; d < f.devices; d++) {
    const fd = fds[d]!,
      bmp = bitmapBytes(perDev);
    duplicated += Atomics.load(simWords(handles[d]!.memory.state), SIM_DUPS);
    let good = true;
    const bits = new Uint8Array(bmp);
    for (let p = 0; p < f.producers; p++) {
      const r = results[p];
      if (!r) {
        good = false;
        continue;
      }
      const dev = r.devices[d]!;
      irqMissed += dev.irqMissed;
      check(raw.pread(fd, bits, bmp, BITMAP_BASE + p * bmp), 'pread', 'sim bitmap');
      for (let v = 0; v < dev.seqs; v++) {
        const set = (bits[v >>> 3]! >> (v & 7)) & 1,
          o = dev.outcomes[v];
        if (o === 1 && !set) lost++;
        if (o === 3 && set) effectDespiteError++;
      }
      const data = readU32(fd, BAR_BASE + DATA(p)),
        cfg = readU32(fd, CFG_BASE + CFG_SCRATCH(p));
      const allowed = (e: { value: number; maybe: number[] }, got: number): boolean =>
        got === e.value >>> 0 || e.maybe.some((v) => v >>> 0 === got);
      if (!allowed(dev.data, data) || !allowed(dev.cfg, cfg)) good = false;
    }
    finalState[`sim${d}`] = good;
  }
  const recoveries = sups.flatMap((s) => s.recoveries);
  const faults: Record<string, number> = {};
  for (const h of handles)
    for (const row of h.counters())
      if (row.name === 'vfio_runtime_faults_injected')
        faults[row.labels.kind!] = (faults[row.labels.kind!] ?? 0) + row.value;
  const restarts = sups.reduce((n, s) => n + s.restarts, 0);
  for (const h of handles) await h.shutdown();
  for (const fd of fds) raw.close(fd);
  console.log(
    JSON.stringify({
      seconds: Math.round(elapsed * 10) / 10,
      producers: f.producers,
      devices: f.devices,
      fault_rate: f.rate,
      standby: f.standby !== 0,
      requests,
      ok,
      errored,
      lost: lost + (outcome === 'timeout' ? 1 : 0),
      duplicated,
      hung,
      worker_died: died,
      device_failed: failedReq,
      wrong_reads: wrong,
      effect_despite_error: effectDespiteError,
      irq_missed: irqMissed,
      restarts,
      recovery_ms_p50: pct(recoveries, 0.5),
      recovery_ms_p99: pct(recoveries, 0.99),
      request_ms_max: Math.round(maxRequestMs),
      faults,
      statuses,
      devices_failed: failedDevices,
      final_state_ok: finalState,
    }),
  );
  process.exit(lost || duplicated || hung || wrong || outcome === 'timeout' ? 1 : 0);
}

await main();
