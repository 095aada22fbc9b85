// The guest's console, in the order the UART took its bytes, from the vCPU threads to the main
// thread: a byte ring in shared memory, written under the UART's lock and drained by the main
// thread on a timer and when the VM ends. Per-thread batches posted as messages lost that order:
// Linux's 8250 driver sends a line's first byte from the CPU that writes and the rest from its
// interrupt handler, often on the other vCPU, so lines came out as "UEST-CHECK ... G".
const HEAD = 0; // next byte the main thread reads (only it writes HEAD)
const TAIL = 1; // next byte a writer stores (writers hold the UART lock)
const DROPPED = 2; // bytes dropped because the ring was full
const HEADER = 16;
export const CONSOLE_BYTES = 1 << 18; // 256 KiB: ~10 s of a busy console between drains

export function createConsoleRing(): SharedArrayBuffer {
  return new SharedArrayBuffer(HEADER + CONSOLE_BYTES);
}

/** A vCPU thread's side; `put` must be called under the UART's lock (one writer at a time). */
export class ConsoleWriter {
  readonly #w: Int32Array;
  readonly #b: Uint8Array;
  constructor(sab: SharedArrayBuffer) {
    this.#w = new Int32Array(sab, 0, HEADER / 4);
    this.#b = new Uint8Array(sab, HEADER);
  }

  put(byte: number): void {
    const tail = Atomics.load(this.#w, TAIL);
    if ((tail - Atomics.load(this.#w, HEAD)) >>> 0 >= CONSOLE_BYTES) {
      Atomics.add(this.#w, DROPPED, 1);
      return;
    }
    this.#b[tail & (CONSOLE_BYTES - 1)] = byte;
    Atomics.store(this.#w, TAIL, (tail + 1) | 0); // publishes the byte
  }
}

/** The main thread's side: the bytes written since the last drain (undefined if none). */
export function drainConsole(sab: SharedArrayBuffer): Uint8Array | undefined {
  const w = new Int32Array(sab, 0, HEADER / 4),
    b = new Uint8Array(sab, HEADER);
  const head = Atomics.load(w, HEAD),
    tail = Atomics.load(w, TAIL);
  const n = (tail - head) >>> 0;
  if (n === 0) return undefined;
  const out = new Uint8Array(n),
    from = head & (CONSOLE_BYTES - 1),
    first = Math.min(n, CONSOLE_BYTES - from);
  out.set(b.subarray(from, from + first));
  if (first < n) out.set(b.subarray(0, n - first), first);
  Atomics.store(w, HEAD, tail);
  return out;
}

/** Bytes the guest wrote while the ring was full. */
export const consoleDropped = (sab: SharedArrayBuffer): number =>
  Atomics.load(new Int32Array(sab, 0, HEADER / 4), DROPPED);
