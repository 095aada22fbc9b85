// The consumer side of a device ring, run by the device's worker: serve published requests in
// ticket order, complete each in its slot, and sleep with Atomics.waitAsync when idle so the
// worker's event loop stays free for control calls and interrupt relays.
import { SpinBudget } from './spin.js';
import { H, INLINE_BYTES, RING_STATE, S, STATUS, bulkOffset, ringGeometry, ringU8, ringWords, slotWord, type RingGeometry } from './protocol.js';

/** One request, as the handler sees it. A single object is reused for every request. */
export interface Request {
  op: number;
  index: number;
  offset: number;
  size: number;
  /** Where the payload is (writes) and where results go (reads): the slot's inline or bulk area. */
  data: Uint8Array;
  /** The same area as 32-bit words (inline only; undefined for bulk). */
  words: Int32Array | undefined;
}

/** Serves one request: reads/writes req.data, returns a STATUS code. Must not throw. */
export type Handler = (req: Request) => number;

export interface RingServerOptions {
  /** Loads of the next slot's sequence word before going to sleep. */
  spin?: number;
  /** Requests served in one go before yielding to the event loop. */
  batch?: number;
}

export class RingServer {
  readonly geometry: RingGeometry;
  readonly #i32: Int32Array;
  readonly #mask: number;
  readonly #inline: Uint8Array[];
  readonly #inlineWords: Int32Array[];
  readonly #bulk: Uint8Array[];
  readonly #req: Request = { op: 0, index: 0, offset: 0, size: 0, data: new Uint8Array(0), words: undefined };
  readonly #spin: SpinBudget;
  readonly #batch: number;
  #running = false;
  #stopped: Promise<void> | undefined;
  /** Requests served since this server started. */
  served = 0;

  constructor(readonly sab: SharedArrayBuffer, readonly handler: Handler, opts: RingServerOptions = {}) {
    this.geometry = ringGeometry(sab);
    this.#i32 = ringWords(sab);
    this.#mask = this.geometry.capacity - 1;
    this.#spin = new SpinBudget(opts.spin ?? 4000);
    this.#batch = opts.batch ?? 1024;
    const n = this.geometry.capacity;
    const u8 = ringU8(sab);
    const words = ringWords(sab);
    this.#inline = Array.from({ length: n }, (_, i) => u8.subarray((slotWord(i) + S.DATA) * 4, (slotWord(i) + S.DATA) * 4 + INLINE_BYTES));
    this.#inlineWords = Array.from({ length: n }, (_, i) => words.subarray(slotWord(i) + S.DATA, slotWord(i) + S.DATA + INLINE_BYTES / 4));
    this.#bulk = Array.from({ length: n }, (_, i) => u8.subarray(bulkOffset(this.geometry, i), bulkOffset(this.geometry, i) + this.geometry.bulkBytes));
  }

  /** Serve every request that is ready now; returns how many. Synchronous. */
  drain(limit = Infinity): number {
    const h = this.#i32, req = this.#req;
    let n = 0;
    while (n < limit) {
      const t = Atomics.load(h, H.HEAD);
      const slot = t & this.#mask;
      const w = slotWord(slot);
      if (Atomics.load(h, w + S.SEQ) !== ((t + 1) | 0)) break;
      req.op = h[w + S.OP]!;
      req.index = h[w + S.INDEX]!;
      req.size = h[w + S.SIZE]!;
      req.offset = (h[w + S.OFF_HI]! >>> 0) * 0x100000000 + (h[w + S.OFF_LO]! >>> 0);
      if (req.size >= 0 && req.size <= INLINE_BYTES) { req.data = this.#inline[slot]!; req.words = this.#inlineWords[slot]; }
      else { req.data = this.#bulk[slot]!; req.words = undefined; }
      let status: number;
      if (req.size < 0 || req.size > this.geometry.bulkBytes) status = STATUS.BAD_WIDTH;
      else {
        try { status = this.handler(req); } catch { status = STATUS.IO_ERROR; }
      }
      h[w + S.STATUS] = status;
      Atomics.store(h, H.HEAD, (t + 1) | 0);
      Atomics.store(h, w + S.SEQ, (t + 2) | 0);
      if (Atomics.load(h, w + S.WAITER) !== 0) Atomics.notify(h, w + S.SEQ, 1);
      n++;
    }
    this.served += n;
    return n;
  }

  #ready(): boolean {
    const h = this.#i32;
    const t = Atomics.load(h, H.HEAD);
    return Atomics.load(h, slotWord(t & this.#mask) + S.SEQ) === ((t + 1) | 0);
  }

  /** Serve until stop(): spin while busy, sleep on the doorbell when idle. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    Atomics.add(this.#i32, H.EPOCH, 1);
    this.#stopped = this.#loop();
  }

  async #loop(): Promise<void> {
    const h = this.#i32;
    while (this.#running) {
      let served = this.drain(this.#batch);
      // Busy: keep polling the next slot for a short while before sleeping.
      const spin = this.#spin;
      let caught = false;
      for (let i = 0; served < this.#batch && i < spin.n && this.#running; i++) {
        if (this.#ready()) { served += this.drain(this.#batch - served); i = 0; caught = true; }
      }
      if (caught) spin.hit(); else spin.miss();

      if (served >= this.#batch) { await new Promise<void>((r) => setImmediate(r)); continue; }
      // Idle: read the doorbell before the last check, then sleep only if it has not moved.
      const bell = Atomics.load(h, H.DOORBELL);
      Atomics.store(h, H.SLEEPING, 1);
      if (!this.#ready() && this.#running) {
        const w = Atomics.waitAsync(h, H.DOORBELL, bell);
        if (w.async) await w.value;
      }
      Atomics.store(h, H.SLEEPING, 0);
    }
  }

  /** Stop serving (requests stay queued for the next server on this ring). */
  async stop(): Promise<void> {
    this.#running = false;
    Atomics.add(this.#i32, H.DOORBELL, 1);
    Atomics.notify(this.#i32, H.DOORBELL);
    await this.#stopped;
  }
}

/** Mark a ring closed (from any thread): waiting producers wake and throw RingClosedError. */
export function closeRing(sab: SharedArrayBuffer): void {
  const h = ringWords(sab);
  Atomics.store(h, H.STATE, RING_STATE.CLOSED);
  for (let i = 0; i < h[H.CAPACITY]!; i++) Atomics.notify(h, slotWord(i) + S.SEQ);
}
