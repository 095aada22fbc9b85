// The guest's serial console output, in the order the guest wrote it, whichever vCPU wrote each
// byte. The UART (uart.ts) calls put() under its lock, so the bytes go into one shared line
// buffer in order; the vCPU that completes a line (or fills the buffer) posts it with a sequence
// number, and the main thread's ConsoleSink delivers chunks by that number (messages from two
// worker threads may arrive in either order). Per-vCPU line buffers lost that order: the guest
// moved its console writer between vCPUs mid-line, and a line's first byte sat in the other
// vCPU's buffer until the VM ended (measured: 13 lines of one boot lost their leading 'G').

/** The shared buffer: LEN and SEQ words, then the bytes. */
const LEN = 0,
  SEQ = 1,
  HEAD = 8;
export const CONSOLE_BYTES = 4096;

export function createConsoleBuffer(): SharedArrayBuffer {
  return new SharedArrayBuffer(HEAD + CONSOLE_BYTES);
}

export interface ConsoleChunk {
  seq: number;
  bytes: Uint8Array;
}

/** A vCPU's side: put() and flush() must run under the UART's lock (Uart.locked). */
export class ConsoleWriter {
  readonly #words: Int32Array;
  readonly #bytes: Uint8Array;

  constructor(
    sab: SharedArrayBuffer,
    private readonly post: (c: ConsoleChunk) => void,
  ) {
    this.#words = new Int32Array(sab, 0, 2);
    this.#bytes = new Uint8Array(sab, HEAD, CONSOLE_BYTES);
  }

  put(b: number): void {
    const n = this.#words[LEN]!;
    this.#bytes[n] = b;
    this.#words[LEN] = n + 1;
    if (b === 10 || n + 1 === CONSOLE_BYTES) this.flush();
  }

  flush(): void {
    const n = this.#words[LEN]!;
    if (n === 0) return;
    const seq = this.#words[SEQ]!;
    this.#words[SEQ] = seq + 1;
    this.#words[LEN] = 0;
    this.post({ seq, bytes: this.#bytes.slice(0, n) });
  }
}

/** The main thread's side: chunks in, bytes out in sequence order. */
export class ConsoleSink {
  #next = 0;
  readonly #early = new Map<number, Uint8Array>();

  constructor(private readonly out: (bytes: Uint8Array) => void) {}

  take(c: ConsoleChunk): void {
    this.#early.set(c.seq, c.bytes);
    for (let b = this.#early.get(this.#next); b; b = this.#early.get(this.#next)) {
      this.#early.delete(this.#next++);
      this.out(b);
    }
  }
}
