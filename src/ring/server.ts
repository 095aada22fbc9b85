// The consumer side of a device ring, run by the device's worker: serve published requests in
// ticket order, complete each in its slot, and sleep with Atomics.waitAsync when idle so the
// worker's event loop stays free for control calls and interrupt relays. While busy it turns
// that event loop only when asked (the ring's attention word, or a watched word, moved) or every
// few ms, not every so many requests: each turn costs 7 µs typically and 100 µs at p90 here.
// A server that starts after one died mid-request completes that request as WORKER_DIED without
// serving it again (H_TAKEN, see #recover), and a server that finds HEAD moved under it (it was
// superseded while stuck in a handler) stops without touching the ring. While awake it beats a
// heartbeat (C_HEARTBEATS, once per clock read: every 256 idle polls or 64 requests) that the
// coordinator's supervisor watches.

import {
  C_HEARTBEATS,
  C_LOST,
  C_SERVED,
  C_SLEEPS,
  C_TURNS,
  C_WAKES,
  STATS_SLOTS,
} from '../metrics/schema.js';
import {
  bulkOffset,
  freeWord,
  H_ATTENTION,
  H_DOORBELL,
  H_EPOCH,
  H_HEAD,
  H_SLEEPING,
  H_STATE,
  H_TAKEN,
  INLINE_BYTES,
  RING_STATE,
  type RingGeometry,
  ringGeometry,
  ringU8,
  ringWords,
  S_DATA,
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
} from './protocol.js';
import { POLLS_PER_CLOCK, SpinBudget } from './spin.js';

/** One request, as the handler sees it. A single object is reused for every request. */
export interface Request {
  op: number;
  index: number;
  offset: number;
  size: number;
  /**
   * Where the payload is (writes) and where results go (reads): for up to 16 bytes, the server's
   * copy of the slot's inline data (copied back into the slot on completion); else the slot's
   * bulk block.
   */
  data: Uint8Array;
  /** The inline data as 32-bit words (undefined for bulk). */
  words: Int32Array | undefined;
}

/** Serves one request: reads/writes req.data, returns a STATUS code. Must not throw. */
export type Handler = (req: Request) => number;

/**
 * How a ring is served, the part a VMM may tune (plain numbers: a coordinator passes them to its
 * device worker, DeviceHandleOptions.serve). RingServerOptions is the full set the server takes.
 */
export interface RingServeTuning {
  /** Longest poll of an idle ring before sleeping, in µs (default 1000; adaptive, see SpinBudget). */
  spinUs?: number;
  /** The poll once spinning stops paying, in µs (default 5). */
  minSpinUs?: number;
  /**
   * Longest stretch of serving before the thread's event loop gets a turn, in ms (default 4).
   * Whoever bumps the ring's attention word (attentionSignal) or a `watch` word gets a turn
   * within 64 requests or 256 idle polls (~50 µs with 0.6-µs requests); this bounds the wait of
   * anything else (a message posted without a bump).
   */
  yieldMs?: number;
}

export interface RingServerOptions extends RingServeTuning {
  /**
   * Work that the thread's event loop must do, as [view, seq, seen] word pairs: while view[seq]
   * differs from view[seen] (the consumer stores the seq it has taken), the event loop is owed a
   * turn. (The worker's interrupt doorbell: WORKER_SEQ and WORKER_SEEN.)
   */
  watch?: ReadonlyArray<readonly [Int32Array, number, number]>;
  /**
   * The device's stats (slots declared in src/metrics/schema.ts): the server counts requests
   * served and lost, sleeps, wakes and event-loop turns there. Default: a private array.
   */
  counters?: Float64Array;
}

export class RingServer {
  readonly geometry: RingGeometry;
  readonly #i32: Int32Array;
  readonly #mask: number;
  /**
   * Inline requests are served through this private copy of the slot's 16 data bytes, not in the
   * slot: the producer spins on the slot's cache line, so a device read (the kernel's copy_to_user)
   * straight into it would bounce the line once more. The copy goes back with the status and the
   * completing store, all in one write burst.
   */
  readonly #stage = new Int32Array(INLINE_BYTES / 4);
  readonly #stageBytes = new Uint8Array(this.#stage.buffer);
  readonly #bulk: Uint8Array[];
  readonly #req: Request = {
    op: 0,
    index: 0,
    offset: 0,
    size: 0,
    data: new Uint8Array(0),
    words: undefined,
  };
  readonly #spin: SpinBudget;
  readonly #yieldMs: number;
  readonly #watch: ReadonlyArray<readonly [Int32Array, number, number]>;
  /** The attention word as of the last time the event loop got its turn. */
  #seenAttention = 0;
  /** When an idle stretch interrupted by an event-loop turn ends (0: not idle). */
  #idleUntil = 0;
  #running = false;
  /** Next ticket to serve (mirrored in the ring's HEAD word). */
  #head = 0;
  #stopped: Promise<void> | undefined;
  /** Counters (schema slots C_SERVED...); SERVED as of this server's construction. */
  readonly #c: Float64Array;
  readonly #servedBefore: number;
  #lost = 0;
  #gone = false;

  constructor(
    readonly sab: SharedArrayBuffer,
    readonly handler: Handler,
    opts: RingServerOptions = {},
  ) {
    this.geometry = ringGeometry(sab);
    this.#i32 = ringWords(sab);
    this.#mask = this.geometry.capacity - 1;
    this.#spin = new SpinBudget(opts.spinUs ?? 1000, opts.minSpinUs ?? 5);
    this.#yieldMs = opts.yieldMs ?? 4;
    this.#watch = opts.watch ?? [];
    this.#c = opts.counters ?? new Float64Array(STATS_SLOTS);
    this.#servedBefore = this.#c[C_SERVED]!;
    const n = this.geometry.capacity;
    const u8 = ringU8(sab);
    this.#bulk = Array.from({ length: n }, (_, i) =>
      u8.subarray(
        bulkOffset(this.geometry, i),
        bulkOffset(this.geometry, i) + this.geometry.bulkBytes,
      ),
    );
  }

  /** Requests this server completed (a lost one it completed for a dead predecessor included). */
  get served(): number {
    return this.#c[C_SERVED]! - this.#servedBefore;
  }

  /** Requests a dead predecessor had taken that this server completed as WORKER_DIED. */
  get lost(): number {
    return this.#lost;
  }

  /** true once another server took the ring over while this one's handler ran (see #serveNext). */
  get superseded(): boolean {
    return this.#gone;
  }

  #superseded(): void {
    this.#gone = true;
    this.#running = false;
  }

  /** Serve every request that is ready now; returns how many. Synchronous. */
  drain(limit = Infinity): number {
    this.#recover();
    let n = 0;
    while (n < limit && this.#serveNext()) n++;
    return n;
  }

  /**
   * Serve the request at #head if it is published; false if it is not. The hot path: one atomic
   * load to look, one atomic store to mark it taken, one to complete. HEAD is the server's own
   * word (a successor server starts from it), so it is kept in #head and stored without a fence.
   * TAKEN shares HEAD's cache line, which only this thread writes and producers never read.
   */
  #serveNext(): boolean {
    const h = this.#i32,
      req = this.#req;
    const t = this.#head;
    const slot = t & this.#mask;
    const w = slotWord(slot);
    if (Atomics.load(h, w + S_SEQ) !== ((t + 1) | 0)) return false;
    // Taken, before anything reaches the device: a successor completes it as lost (#recover).
    Atomics.store(h, H_TAKEN, (t + 1) | 0);
    const size = h[w + S_SIZE]!;
    req.op = h[w + S_OP]!;
    req.index = h[w + S_INDEX]!;
    req.size = size;
    req.offset = (h[w + S_OFF_HI]! >>> 0) * 0x100000000 + (h[w + S_OFF_LO]! >>> 0);
    let status: number,
      inline = false;
    const d = w + S_DATA,
      st = this.#stage;
    if (size >= 0 && size <= INLINE_BYTES) {
      st[0] = h[d]!;
      st[1] = h[d + 1]!;
      st[2] = h[d + 2]!;
      st[3] = h[d + 3]!;
      req.data = this.#stageBytes;
      req.words = st;
      try {
        status = this.handler(req);
      } catch {
        status = STATUS.IO_ERROR;
      }
      inline = true;
    } else if (size > 0 && size <= this.geometry.bulkBytes) {
      req.data = this.#bulk[slot]!;
      req.words = undefined;
      try {
        status = this.handler(req);
      } catch {
        status = STATUS.IO_ERROR;
      }
    } else status = STATUS.BAD_WIDTH;
    // HEAD is the completion fence: moving it claims the completion. A server that finds it
    // moved was superseded while its handler ran (stuck in a kernel call, the supervisor gave
    // the ring to another server, which completed this request as WORKER_DIED): it must not
    // touch the ring again, so it stops here. One lock cmpxchg on a line only this thread
    // writes: a few ns against a ~0.6 µs round trip.
    if (Atomics.compareExchange(h, H_HEAD, t, (t + 1) | 0) !== t) {
      this.#superseded();
      return false;
    }
    if (inline) {
      h[d] = st[0]!;
      h[d + 1] = st[1]!;
      h[d + 2] = st[2]!;
      h[d + 3] = st[3]!;
    }
    h[w + S_STATUS] = status;
    this.#head = (t + 1) | 0;
    Atomics.store(h, w + S_SEQ, (t + 2) | 0);
    if (Atomics.load(h, w + S_WAITER) !== 0) Atomics.notify(h, w + S_SEQ, 1);
    this.#c[C_SERVED]!++;
    return true;
  }

  /**
   * Before serving, and idempotent: if the ticket TAKEN names is still published but not
   * completed, the server that took it died in its handler (or before completing it). Its effect
   * on the device is unknown, so it is completed as WORKER_DIED, not served again; HEAD moves
   * past it (a server that died after storing HEAD left HEAD there already). Then serving goes
   * on from HEAD: untaken requests are served once each.
   */
  #recover(): void {
    const h = this.#i32;
    const taken = Atomics.load(h, H_TAKEN),
      t = (taken - 1) | 0;
    const w = slotWord(t & this.#mask),
      head = Atomics.load(h, H_HEAD);
    if (Atomics.load(h, w + S_SEQ) !== taken) {
      this.#head = head;
      return;
    }
    // Claimed by moving HEAD (the fence #serveNext respects): a predecessor still alive in its
    // handler (stuck in a kernel call) then finds HEAD moved and never completes it itself.
    const claimed = head === t && Atomics.compareExchange(h, H_HEAD, t, taken) === t;
    // HEAD already past it: its server claimed it and died before the completing store, or is
    // alive and a few stores from it. Give a live one 5 ms, then complete it here.
    if (!claimed && head === taken)
      for (const until = performance.now() + 5; performance.now() < until; )
        if (Atomics.load(h, w + S_SEQ) !== taken) break;
    if ((claimed || head === taken) && Atomics.load(h, w + S_SEQ) === taken) {
      h[w + S_STATUS] = STATUS.WORKER_DIED;
      Atomics.store(h, w + S_SEQ, (t + 2) | 0);
      Atomics.notify(h, w + S_SEQ);
      this.#lost++;
      this.#c[C_LOST]!++;
      this.#c[C_SERVED]!++;
    }
    this.#head = Atomics.load(h, H_HEAD);
  }

  /** Serve until stop(): spin while busy, sleep on the doorbell when idle. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    Atomics.add(this.#i32, H_EPOCH, 1);
    this.#stopped = this.#loop();
  }

  /**
   * Serve and poll until the ring has been idle for the spin budget (false: time to sleep), or
   * the event loop is owed a turn (true). Each idle stretch that ends in a request tells the
   * budget spinning paid; one that runs out tells it spinning did not.
   */
  #busy(): boolean {
    const spin = this.#spin;
    const turnAt = performance.now() + this.#yieldMs;
    // An idle stretch goes on across event-loop turns: turns asked for every few hundred µs
    // must not keep an idle ring's server awake for good.
    let served = 0,
      polls = 0,
      idleUntil = this.#idleUntil;
    while (this.#running) {
      if (this.#serveNext()) {
        if (polls !== 0 || idleUntil !== 0) {
          spin.hit();
          polls = 0;
          idleUntil = 0;
        }
        if ((++served & 63) === 0) {
          this.#c[C_HEARTBEATS]!++;
          if (this.#attention() || performance.now() >= turnAt) {
            this.#idleUntil = 0;
            return true;
          }
        }
      } else if ((++polls & (POLLS_PER_CLOCK - 1)) === 0) {
        this.#c[C_HEARTBEATS]!++;
        const now = performance.now();
        if (idleUntil === 0) idleUntil = now + spin.ms;
        else if (now >= idleUntil) {
          spin.miss();
          this.#idleUntil = 0;
          return false;
        }
        if (this.#attention() || now >= turnAt) {
          this.#idleUntil = idleUntil;
          return true;
        }
      }
    }
    return false;
  }

  /** Has anyone asked for an event-loop turn since the last one? */
  #attention(): boolean {
    if (Atomics.load(this.#i32, H_ATTENTION) !== this.#seenAttention) return true;
    for (let i = 0; i < this.#watch.length; i++) {
      const [v, seq, seen] = this.#watch[i]!;
      if (Atomics.load(v, seq) !== Atomics.load(v, seen)) return true;
    }
    return false;
  }

  async #loop(): Promise<void> {
    const h = this.#i32,
      c = this.#c;
    this.#recover();
    this.#seenAttention = Atomics.load(h, H_ATTENTION);
    while (this.#running) {
      c[C_HEARTBEATS]!++;
      if (this.#busy()) {
        // Posts flagged before this point are in the event loop's queue: this turn reads them.
        // Node 24 emits a MessagePort's messages from a native immediate that its poll phase
        // queues behind ours, so a turn someone asked for also takes the next loop iteration's
        // check phase (measured: a flagged post is read after 2 immediates on Node 24, 1 on 20).
        const asked = Atomics.load(h, H_ATTENTION) !== this.#seenAttention;
        this.#seenAttention = Atomics.load(h, H_ATTENTION);
        c[C_TURNS]!++;
        await new Promise<void>((r) => setImmediate(asked ? () => setImmediate(r) : r));
        continue;
      }
      if (!this.#running) break;
      // Idle: read the doorbell before the last check, then sleep only if it has not moved.
      const bell = Atomics.load(h, H_DOORBELL);
      Atomics.store(h, H_SLEEPING, 1);
      if (!this.#ready() && this.#running) {
        const w = Atomics.waitAsync(h, H_DOORBELL, bell);
        if (w.async) {
          this.#seenAttention = Atomics.load(h, H_ATTENTION);
          c[C_SLEEPS]!++;
          await w.value;
          if (this.#ready()) c[C_WAKES]!++;
        }
      }
      Atomics.store(h, H_SLEEPING, 0);
    }
  }

  #ready(): boolean {
    const t = this.#head;
    return Atomics.load(this.#i32, slotWord(t & this.#mask) + S_SEQ) === ((t + 1) | 0);
  }

  /** Stop serving (requests stay queued for the next server on this ring). */
  async stop(): Promise<void> {
    this.#running = false;
    if (this.#gone) return; // superseded: the ring is another server's now
    Atomics.add(this.#i32, H_DOORBELL, 1);
    Atomics.notify(this.#i32, H_DOORBELL);
    await this.#stopped;
  }
}

/** Mark a ring closed (from any thread): waiting producers wake and throw RingClosedError. */
export function closeRing(sab: SharedArrayBuffer): void {
  const h = ringWords(sab),
    g = ringGeometry(sab);
  Atomics.store(h, H_STATE, RING_STATE.CLOSED);
  for (let i = 0; i < g.capacity; i++) {
    Atomics.notify(h, slotWord(i) + S_SEQ);
    Atomics.notify(h, freeWord(g, i));
  }
}
