// The ring's own numbers, read from its header and its latency area at scrape time: depth (the
// requests published but not yet served), producers waiting on a full ring, back-pressure sleeps,
// and the request latency histogram producers pre-bucket in shared memory (src/ring/client.ts).
import {
  H_FULL_WAITERS,
  H_FULL_WAITS,
  H_HEAD,
  H_TAIL,
  LAT_BOUNDS_US,
  LAT_BUCKETS,
  LAT_CLASSES,
  LAT_CONFIG,
  LAT_STRIDE,
  latencyWord,
  ringGeometry,
  ringWords,
} from '../ring/protocol.js';
import type { Labels, Sample } from './family.js';

export interface RingReading {
  capacity: number;
  /** Requests claimed but not yet taken by the server (TAIL - HEAD). */
  depth: number;
  fullWaiters: number;
  fullWaits: number;
  /** Histogram samples (buckets cumulative, _sum in seconds, _count), labels {bar}. */
  latency: Sample[];
}

/** The label of a latency class: BAR index, `config`, or `other` (NOPs, refused ops). */
export const latencyClass = (cls: number): string =>
  cls < LAT_CONFIG ? String(cls) : cls === LAT_CONFIG ? 'config' : 'other';

const LE = [...LAT_BOUNDS_US.map((us) => String(us / 1e6)), '+Inf'];

export function readRing(ring: SharedArrayBuffer, base: Labels): RingReading {
  const h = ringWords(ring);
  const g = ringGeometry(ring);
  const lat = latencyWord(g);
  const latency: Sample[] = [];
  for (let cls = 0; cls < LAT_CLASSES; cls++) {
    const w = lat + cls * LAT_STRIDE;
    let count = 0;
    for (let k = 0; k < LAT_BUCKETS; k++) count += Atomics.load(h, w + k) >>> 0;
    if (count === 0) continue;
    const labels = { ...base, bar: latencyClass(cls) };
    let cum = 0;
    for (let k = 0; k < LAT_BUCKETS; k++) {
      cum += Atomics.load(h, w + k) >>> 0;
      latency.push({ labels: { ...labels, le: LE[k]! }, value: cum, suffix: '_bucket' });
    }
    const ns =
      (Atomics.load(h, w + LAT_BUCKETS + 1) >>> 0) * 2 ** 32 +
      (Atomics.load(h, w + LAT_BUCKETS) >>> 0);
    latency.push({ labels, value: ns / 1e9, suffix: '_sum' });
    latency.push({ labels, value: cum, suffix: '_count' });
  }
  return {
    capacity: g.capacity,
    depth: Math.max(0, (Atomics.load(h, H_TAIL) - Atomics.load(h, H_HEAD)) | 0),
    fullWaiters: Atomics.load(h, H_FULL_WAITERS),
    fullWaits: Atomics.load(h, H_FULL_WAITS) >>> 0,
    latency,
  };
}
