// The producer side of a device ring, usable from any thread holding the SharedArrayBuffer
// (a VMM's vCPU threads): claim a slot, publish a request, wait for its completion, release.
// Waiting spins (up to an adaptive budget in µs), then sleeps on the slot's sequence word, so a
// busy device costs sub-microsecond hops and an idle one no CPU. A full ring blocks the producer
// (back-pressure).
import { DeviceFailedError, RingClosedError, RingError } from '../errors.js';
import {
  bulkOffset,
  freeWord,
  H_DOORBELL,
  H_FULL_WAITERS,
  H_FULL_WAITS,
  H_SLEEPING,
  H_STATE,
  H_TAIL,
  INLINE_BYTES,
  LAT_BUCKETS,
  LAT_CONFIG,
  LAT_OTHER,
  LAT_SAMPLE_MASK,
  LAT_STRIDE,
  latencyWord,
  OP,
  type Op,
  RING_STATE,
  type RingGeometry,
  ringGeometry,
  ringU8,
  ringWords,
  S_DATA,
  S_ID,
  S_INDEX,
  S_OFF_HI,
  S_OFF_LO,
  S_OP,
  S_SEQ,
  S_SIZE,
  S_STATUS,
  S_WAITER,
  STATUS,
  slotWord,
  statusName,
  statusText,
} from './protocol.js';
import { POLLS_PER_CLOCK, SpinBudget } from './spin.js';

// Thrown to producers: a closed ring (VFR_ERR_RING_CLOSED), a request refused with a status
// (VFR_ERR_RING_REQUEST); both of the runtime's error kinds.
export { RingClosedError, RingError } from '../errors.js';

/** The RingError for `status` on `request` ("BAR_READ BAR0 offset 0x10 size 4"), naming the status. */
export function ringError(status: number, request: string): RingError {
  const name = statusName(status);
  return new RingError(`${request}: ${name} (${statusText(status)})`, status, name, request);
}

const OP_NAME: Record<number, string> = {
  [OP.NOP]: 'NOP',
  [OP.CFG_READ]: 'CFG_READ',
  [OP.CFG_WRITE]: 'CFG_WRITE',
  [OP.BAR_READ]: 'BAR_READ',
  [OP.BAR_WRITE]: 'BAR_WRITE',
};
const describe = (op: number, index: number, offset: number, size: number): string =>
  `${OP_NAME[op] ?? `op ${op}`}${op === OP.BAR_READ || op === OP.BAR_WRITE ? ` BAR${index}` : ''} offset 0x${offset.toString(16)} size ${size}`;

export interface RingClientOptions {
  /**
   * How long to poll for a completion before sleeping on it, in µs (default 2000; adaptive, see
   * SpinBudget). A request completes within a microsecond while the worker is busy, but a worker
   * that was asleep takes 80-190 µs to wake (p99: 2 ms), and one giving its event loop a turn may
   * take 100 µs. A producer that gave up spinning before that only added its own wake-up to the
   * wait, and a worker that then missed it went to sleep too: the two woke each other per request.
   */
  spinUs?: number;
  /** The poll once spinning stops paying (µs, default 5): more busy threads than cores. */
  minSpinUs?: number;
  /** How long one sleep lasts before the ring state is checked again (ms). */
  waitSliceMs?: number;
  /**
   * Sample request latency into the ring's histogram (1 in 64 tickets; default true). Off only
   * to measure its cost (bench ring): a sample costs two clock reads and three Atomics.add.
   */
  sampleLatency?: boolean;
}

export class RingClient {
  readonly geometry: RingGeometry;
  readonly #i32: Int32Array;
  readonly #u8: Uint8Array;
  readonly #mask: number;
  /** Word index of slot 0's free word. */
  readonly #free: number;
  readonly #await: SpinBudget;
  readonly #slice: number;
  /** Per slot: 1 if publishing its request had to wake the worker (the wait includes its wake-up). */
  readonly #woke: Uint8Array;
  /** Per slot: when a sampled ticket was published (performance.now(), ms); 0: not sampled. */
  readonly #t0: Float64Array;
  /** Whether this client samples latency (RingClientOptions.sampleLatency). */
  readonly #sample: boolean;
  readonly #lat: number;
  /** Results of the last completed call() (inline data words 0 and 1). */
  lo = 0;
  hi = 0;

  constructor(
    readonly sab: SharedArrayBuffer,
    opts: RingClientOptions = {},
  ) {
    this.geometry = ringGeometry(sab);
    this.#i32 = ringWords(sab);
    this.#u8 = ringU8(sab);
    this.#mask = this.geometry.capacity - 1;
    this.#free = freeWord(this.geometry, 0);
    this.#await = new SpinBudget(opts.spinUs ?? 2000, opts.minSpinUs ?? 5, false);
    this.#slice = opts.waitSliceMs ?? 100;
    this.#woke = new Uint8Array(this.geometry.capacity);
    this.#t0 = new Float64Array(this.geometry.capacity);
    this.#sample = opts.sampleLatency ?? true;
    this.#lat = latencyWord(this.geometry);
  }

  // ---- the three steps, public for pipelining (several requests in flight from one thread)

  /** Claim a slot and publish a request; returns its ticket. Blocks while the ring is full. */
  submit(
    op: Op | number,
    index: number,
    offset: number,
    size: number,
    lo = 0,
    hi = 0,
    id = 0,
  ): number {
    const t = this.#claim();
    const w = this.#fill(t, op, index, offset, size, id);
    this.#i32[w + S_DATA] = lo;
    this.#i32[w + S_DATA + 1] = hi;
    this.#publish(t);
    return t;
  }

  /** Submit with a payload copied into the slot (inline up to 16 bytes, else its bulk block). */
  submitBulk(
    op: Op,
    index: number,
    offset: number,
    src: Uint8Array | undefined,
    size: number,
  ): number {
    const t = this.#claim();
    if (src) this.#u8.set(src.subarray(0, size), this.#dataAt(t, size));
    this.#fill(t, op, index, offset, size, 0);
    this.#publish(t);
    return t;
  }

  #claim(): number {
    const h = this.#i32;
    for (let spins = 0, until = 0; ; ) {
      const t = Atomics.load(h, H_TAIL);
      const f = this.#free + (t & this.#mask);
      const free = Atomics.load(h, f);
      const diff = (free - t) | 0;
      if (diff === 0) {
        if (Atomics.compareExchange(h, H_TAIL, t, (t + 1) | 0) === t) return t;
      } else if (diff < 0) {
        // Full: this slot still holds the request from one lap ago. Wait for its release.
        if ((++spins & (POLLS_PER_CLOCK - 1)) !== 0) continue;
        const now = performance.now();
        if (until === 0) until = now + this.#await.ms;
        if (now < until) continue;
        this.#checkOpen();
        Atomics.add(h, H_FULL_WAITERS, 1);
        Atomics.add(h, H_FULL_WAITS, 1);
        if (Atomics.load(h, f) === free) Atomics.wait(h, f, free, this.#slice);
        Atomics.sub(h, H_FULL_WAITERS, 1);
        until = 0;
      }
    }
  }

  #fill(t: number, op: number, index: number, offset: number, size: number, id: number): number {
    const h = this.#i32;
    const w = slotWord(t & this.#mask);
    h[w + S_OP] = op;
    h[w + S_INDEX] = index;
    h[w + S_SIZE] = size;
    // Offsets outside [0, 4 GiB) are rare (a large 64-bit BAR, or a malformed negative one, which
    // must stay huge so the server refuses it); the division is kept off the common path.
    const hi = offset >= 0 && offset <= 0xffffffff ? 0 : Math.floor(offset / 0x100000000);
    h[w + S_OFF_LO] = offset - hi * 0x100000000;
    h[w + S_OFF_HI] = hi;
    h[w + S_ID] = id;
    return w;
  }

  #publish(t: number): void {
    const h = this.#i32;
    Atomics.store(h, slotWord(t & this.#mask) + S_SEQ, (t + 1) | 0);
    // Ring only a sleeping consumer. No wake-up is lost: a consumer announces SLEEPING before
    // its last look at the queue, and that look sees this slot if this load missed the flag.
    if (Atomics.load(h, H_SLEEPING) !== 0) {
      Atomics.add(h, H_DOORBELL, 1);
      Atomics.notify(h, H_DOORBELL, 1);
      this.#woke[t & this.#mask] = 1;
    } else this.#woke[t & this.#mask] = 0;
    // Only sampled tickets store a start time, and only they read one back (release): a slot
    // whose sampled request was never released (the ring closed under it) passes nothing on,
    // since the next sampled ticket in that slot stores its own first. Storing 0 for the other
    // tickets cost ~1% of the cross-thread ring's throughput (bench metrics).
    if ((t & LAT_SAMPLE_MASK) === 0 && this.#sample) this.#t0[t & this.#mask] = performance.now();
  }

  /** A sampled ticket's latency into the ring's histogram (its class from the slot's op/BAR). */
  #record(slot: number, w: number): void {
    const us = (performance.now() - this.#t0[slot]!) * 1000;
    this.#t0[slot] = 0;
    const h = this.#i32,
      op = h[w + S_OP]!,
      bar = h[w + S_INDEX]!;
    const cls =
      op === OP.BAR_READ || op === OP.BAR_WRITE
        ? bar >= 0 && bar < LAT_CONFIG
          ? bar
          : LAT_OTHER
        : op === OP.CFG_READ || op === OP.CFG_WRITE
          ? LAT_CONFIG
          : LAT_OTHER;
    const base = this.#lat + cls * LAT_STRIDE;
    // Bucket k: (2^(k-1), 2^k] µs, from the bit length of ceil(us) - 1.
    const k = Math.min(32 - Math.clz32(Math.max(Math.ceil(us), 1) - 1), LAT_BUCKETS - 1);
    Atomics.add(h, base + k, 1);
    const ns = Math.min(Math.round(us * 1000), 0x7fffffff);
    const before = Atomics.add(h, base + LAT_BUCKETS, ns) >>> 0;
    if (before + ns > 0xffffffff) Atomics.add(h, base + LAT_BUCKETS + 1, 1);
  }

  /** Wait for a ticket's completion; returns its status (data stays readable until release). */
  await(t: number): number {
    const h = this.#i32;
    const w = slotWord(t & this.#mask);
    const done = (t + 2) | 0;
    const budget = this.#await;
    // The clock is read only every POLLS_PER_CLOCK polls: most requests complete before the first
    // read. Spinning paid if the completion came within the budget's minimum: a later one means
    // the worker needed a CPU this thread was holding (more busy threads than cores), so it counts
    // against spinning, and the budget drops once that is the rule. A request that had to wake
    // the worker is not counted: its wait is the worker's wake-up (80-190 µs here), which the
    // budget is there to cover.
    const counted = this.#woke[t & this.#mask] === 0;
    for (let i = 1, first = 0; ; i++) {
      if (Atomics.load(h, w + S_SEQ) === done) {
        if (counted) {
          if (first === 0 || performance.now() - first <= budget.min / 1000) budget.hit();
          else budget.miss();
        }
        return h[w + S_STATUS]!;
      }
      if ((i & (POLLS_PER_CLOCK - 1)) !== 0) continue;
      const now = performance.now();
      if (first === 0) first = now;
      else if (now - first >= budget.ms) break;
    }
    if (counted) budget.miss();
    for (;;) {
      Atomics.store(h, w + S_WAITER, 1);
      const seq = Atomics.load(h, w + S_SEQ);
      if (seq === done) break;
      Atomics.wait(h, w + S_SEQ, seq, this.#slice);
      if (Atomics.load(h, w + S_SEQ) !== done) this.#checkOpen();
    }
    Atomics.store(h, w + S_WAITER, 0);
    return h[w + S_STATUS]!;
  }

  /** Copy a completed ticket's inline result into lo/hi and hand the slot back. */
  release(t: number): void {
    const h = this.#i32;
    const slot = t & this.#mask;
    const w = slotWord(slot);
    this.lo = h[w + S_DATA]!;
    this.hi = h[w + S_DATA + 1]!;
    if ((t & LAT_SAMPLE_MASK) === 0 && this.#t0[slot] !== 0) this.#record(slot, w);
    const f = this.#free + slot;
    Atomics.store(h, f, (t + this.#mask + 1) | 0);
    if (Atomics.load(h, H_FULL_WAITERS) !== 0) Atomics.notify(h, f);
  }

  /** One request, start to finish. Returns the status; inline results land in lo/hi. */
  call(
    op: Op | number,
    index: number,
    offset: number,
    size: number,
    lo = 0,
    hi = 0,
    id = 0,
  ): number {
    const t = this.submit(op, index, offset, size, lo, hi, id);
    const status = this.await(t);
    this.release(t);
    return status;
  }

  // ---- typed accessors (throw RingError on a non-OK status)

  cfgRead(offset: number, size: 1 | 2 | 4): number {
    this.#ok(this.call(OP.CFG_READ, 0, offset, size), OP.CFG_READ, 0, offset, size);
    return size === 4 ? this.lo >>> 0 : this.lo & (size === 2 ? 0xffff : 0xff);
  }

  cfgWrite(offset: number, size: 1 | 2 | 4, value: number): void {
    this.#ok(this.call(OP.CFG_WRITE, 0, offset, size, value | 0), OP.CFG_WRITE, 0, offset, size);
  }

  barRead(bar: number, offset: number, size: 1 | 2 | 4): number {
    this.#ok(this.call(OP.BAR_READ, bar, offset, size), OP.BAR_READ, bar, offset, size);
    return size === 4 ? this.lo >>> 0 : this.lo & (size === 2 ? 0xffff : 0xff);
  }

  barRead64(bar: number, offset: number): bigint {
    this.#ok(this.call(OP.BAR_READ, bar, offset, 8), OP.BAR_READ, bar, offset, 8);
    return (BigInt(this.hi >>> 0) << 32n) | BigInt(this.lo >>> 0);
  }

  barWrite(bar: number, offset: number, size: 1 | 2 | 4, value: number): void {
    this.#ok(
      this.call(OP.BAR_WRITE, bar, offset, size, value | 0),
      OP.BAR_WRITE,
      bar,
      offset,
      size,
    );
  }

  barWrite64(bar: number, offset: number, value: bigint): void {
    const lo = Number(value & 0xffffffffn) | 0,
      hi = Number((value >> 32n) & 0xffffffffn) | 0;
    this.#ok(this.call(OP.BAR_WRITE, bar, offset, 8, lo, hi), OP.BAR_WRITE, bar, offset, 8);
  }

  /** Read dst.length bytes (up to the ring's bulk size) starting at offset. */
  barReadBulk(bar: number, offset: number, dst: Uint8Array): void {
    this.#bulk(OP.BAR_READ, bar, offset, dst, false);
  }

  barWriteBulk(bar: number, offset: number, src: Uint8Array): void {
    this.#bulk(OP.BAR_WRITE, bar, offset, src, true);
  }

  #bulk(op: Op, bar: number, offset: number, data: Uint8Array, write: boolean): void {
    const n = data.length;
    if (n > this.geometry.bulkBytes)
      throw ringError(
        STATUS.BAD_WIDTH,
        `${describe(op, bar, offset, n)} (ring bulk limit ${this.geometry.bulkBytes})`,
      );
    const t = this.submitBulk(op, bar, offset, write ? data : undefined, n);
    const status = this.await(t);
    if (status === STATUS.OK && !write) {
      const at = this.#dataAt(t, n);
      data.set(this.#u8.subarray(at, at + n));
    }
    this.release(t);
    this.#ok(status, op, bar, offset, n);
  }

  /** Byte offset of a ticket's data: inline in the slot, or its bulk block. */
  #dataAt(t: number, size: number): number {
    const slot = t & this.#mask;
    return size <= INLINE_BYTES ? (slotWord(slot) + S_DATA) * 4 : bulkOffset(this.geometry, slot);
  }

  #ok(status: number, op: number, index: number, offset: number, size: number): void {
    if (status === STATUS.OK) return;
    if (status === STATUS.DEVICE_FAILED)
      throw new DeviceFailedError(
        `${describe(op, index, offset, size)}: ${statusText(status)}`,
        '',
        'unknown',
      );
    throw ringError(status, describe(op, index, offset, size));
  }

  #checkOpen(): void {
    if (Atomics.load(this.#i32, H_STATE) === RING_STATE.CLOSED)
      throw new RingClosedError('device ring is closed (device shut down)');
  }
}
