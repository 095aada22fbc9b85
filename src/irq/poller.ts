// The coordinator's side of a device's interrupt poller: starts the poller thread
// (workers/irq-poller.ts) with its control eventfd, and stops it (it is blocked in poll(), so it
// is woken, not terminated). VmmIrqListener turns the VMM doorbell into interrupt callbacks.
import { Worker } from 'node:worker_threads';
import type { OwnedFd } from '../fd.js';
import { createEventfd, signalEventfd } from './eventfd.js';
import {
  IRQ,
  type IrqKind,
  type IrqViews,
  irqViews,
  SRC,
  sourceOf,
  takeBits,
} from './irq-state.js';

const POLLER_URL = new URL('../../workers/irq-poller.js', import.meta.url);

export class IrqPoller {
  readonly #ctl: OwnedFd;
  readonly #views: IrqViews;
  readonly #exited: Promise<void>;

  private constructor(
    readonly irq: SharedArrayBuffer,
    readonly name: string,
    readonly worker: Worker,
    ctl: OwnedFd,
  ) {
    this.#ctl = ctl;
    this.#views = irqViews(irq);
    this.#exited = new Promise((resolve) => worker.once('exit', () => resolve()));
    worker.on('error', (e) => console.error(`irq poller ${name}: ${e.message}`));
  }

  static start(irq: SharedArrayBuffer, name: string): IrqPoller {
    const v = irqViews(irq);
    const ctl = createEventfd();
    Atomics.store(v.hdr, IRQ.STOP, 0);
    Atomics.store(v.hdr, IRQ.CTL_FD, ctl.fd);
    Atomics.add(v.hdr, IRQ.GEN, 1); // a new thread adopts the current set first thing
    const worker = new Worker(POLLER_URL, { workerData: { irq, name }, name: `irq:${name}` });
    worker.unref();
    return new IrqPoller(irq, name, worker, ctl);
  }

  /** Has the poller adopted the current set of eventfds? */
  get current(): boolean {
    return Atomics.load(this.#views.hdr, IRQ.ACK) === Atomics.load(this.#views.hdr, IRQ.GEN);
  }

  async stop(): Promise<void> {
    this.worker.ref(); // keep the process alive until the thread has gone
    Atomics.store(this.#views.hdr, IRQ.STOP, 1);
    signalEventfd(this.#ctl.fd);
    await this.#exited;
    Atomics.store(this.#views.hdr, IRQ.CTL_FD, -1);
    this.#ctl.close();
  }
}

export interface InterruptEvent {
  kind: IrqKind;
  vector: number;
  count: number;
}

/** Calls `onInterrupt` for each source the poller or worker reported to the VMM. */
export class VmmIrqListener {
  readonly #v: IrqViews;
  readonly #seen = new Int32Array(SRC.COUNT);
  #running = true;
  readonly #done: Promise<void>;

  constructor(
    irq: SharedArrayBuffer,
    readonly onInterrupt: (e: InterruptEvent) => void,
  ) {
    this.#v = irqViews(irq);
    this.#seen.set(this.#v.DELIVERED);
    this.#done = this.#loop();
  }

  /** Hand out everything reported so far (also called by the loop on each doorbell). */
  drain(): void {
    const v = this.#v;
    takeBits(v.TO_VMM, (s) => {
      const now = Atomics.load(v.DELIVERED, s);
      const count = (now - this.#seen[s]!) >>> 0;
      this.#seen[s] = now;
      if (count === 0) return;
      const { kind, vector } = sourceOf(s);
      try {
        this.onInterrupt({ kind, vector, count });
      } catch (e) {
        console.error(`interrupt callback threw: ${(e as Error).stack}`);
      }
    });
  }

  async #loop(): Promise<void> {
    const hdr = this.#v.hdr;
    while (this.#running) {
      const seq = Atomics.load(hdr, IRQ.VMM_SEQ);
      this.drain();
      if (!this.#running) break;
      const w = Atomics.waitAsync(hdr, IRQ.VMM_SEQ, seq);
      if (w.async) await w.value;
    }
  }

  /** Stop listening (what was reported until now is handed out first). */
  stop(): void {
    if (!this.#running) return;
    this.drain();
    this.#running = false;
    // A pending waitAsync does not keep the process alive, so this does not wait for the loop to notice.
    Atomics.add(this.#v.hdr, IRQ.VMM_SEQ, 1);
    Atomics.notify(this.#v.hdr, IRQ.VMM_SEQ);
  }

  /** Resolves when the loop has ended (after stop(), once the event loop runs it). */
  get done(): Promise<void> {
    return this.#done;
  }
}
