// An 8250/16450 UART at 0x3f8 (COM1, ISA IRQ 4), transmit only: what the guest's serial console
// needs. Any vCPU may touch it, so its registers live in the VM's shared control words and each
// access holds a spin lock (accesses are a few loads and stores; the IRQ line ioctl is made
// under the lock so level changes reach KVM in order). Modelled on QEMU's hw/char/serial.c
// without the FIFO: the guest's 8250 driver then sees a 16450 and sends a byte per interrupt.
import { CTL } from './shared.js';

export const UART_BASE = 0x3f8;
export const UART_IRQ = 4;

const W = {
  LOCK: 0,
  IER: 1,
  LCR: 2,
  MCR: 3,
  LSR: 4,
  MSR: 5,
  SCR: 6,
  DLL: 7,
  DLM: 8,
  THR_IPENDING: 9,
  LEVEL: 10,
} as const;
const LCR_DLAB = 0x80;
const IER_THRI = 0x02,
  IER_MASK = 0x0f;
const IIR_NO_INT = 0x01,
  IIR_THRI = 0x02;
const LSR_THRE = 0x20,
  LSR_TEMT = 0x40;
const MCR_LOOP = 0x10;
const MSR_DCD = 0x80,
  MSR_DSR = 0x20,
  MSR_CTS = 0x10;

export function initUart(ctl: Int32Array): void {
  const b = CTL.UART;
  ctl.fill(0, b, b + 12);
  ctl[b + W.LSR] = LSR_TEMT | LSR_THRE;
  ctl[b + W.MSR] = MSR_DCD | MSR_DSR | MSR_CTS;
  ctl[b + W.DLL] = 0x0c; // 9600 baud, as after reset
}

export class Uart {
  readonly #c: Int32Array;
  readonly #b = CTL.UART;

  /** `setIrq(level)` drives ISA IRQ 4; `out(byte)` takes each transmitted byte. */
  constructor(
    ctl: Int32Array,
    private readonly setIrq: (level: number) => void,
    private readonly out: (byte: number) => void,
  ) {
    this.#c = ctl;
  }

  /** Run `f` holding the UART's lock (the console's last flush). */
  locked(f: () => void): void {
    this.#lock();
    try {
      f();
    } finally {
      this.#unlock();
    }
  }

  #lock(): void {
    while (Atomics.compareExchange(this.#c, this.#b + W.LOCK, 0, 1) !== 0) {
      /* held for a few µs at most */
    }
  }
  #unlock(): void {
    Atomics.store(this.#c, this.#b + W.LOCK, 0);
  }
  #r(w: number): number {
    return this.#c[this.#b + w]!;
  }
  #w(w: number, v: number): void {
    this.#c[this.#b + w] = v;
  }

  /** Interrupt identification now (QEMU's priority order, only THRE is ever pending here). */
  #iir(): number {
    return this.#r(W.IER) & IER_THRI && this.#r(W.THR_IPENDING) ? IIR_THRI : IIR_NO_INT;
  }

  #update(): void {
    const level = this.#iir() === IIR_NO_INT ? 0 : 1;
    if (level !== this.#r(W.LEVEL)) {
      this.#w(W.LEVEL, level);
      this.setIrq(level);
    }
  }

  read(off: number): number {
    this.#lock();
    try {
      const dlab = this.#r(W.LCR) & LCR_DLAB;
      switch (off) {
        case 0:
          return dlab ? this.#r(W.DLL) : 0; // no input
        case 1:
          return dlab ? this.#r(W.DLM) : this.#r(W.IER);
        case 2: {
          const iir = this.#iir();
          if (iir === IIR_THRI) {
            this.#w(W.THR_IPENDING, 0);
            this.#update();
          }
          return iir;
        }
        case 3:
          return this.#r(W.LCR);
        case 4:
          return this.#r(W.MCR);
        case 5:
          return this.#r(W.LSR);
        case 6: {
          const mcr = this.#r(W.MCR);
          // Loopback: the modem outputs come back as inputs (the driver's UART probe checks this).
          if (mcr & MCR_LOOP)
            return ((mcr & 0x0c) << 4) | ((mcr & 0x02) << 3) | ((mcr & 0x01) << 5);
          return this.#r(W.MSR);
        }
        default:
          return this.#r(W.SCR);
      }
    } finally {
      this.#unlock();
    }
  }

  write(off: number, v: number): void {
    v &= 0xff;
    this.#lock();
    try {
      const dlab = this.#r(W.LCR) & LCR_DLAB;
      switch (off) {
        case 0:
          if (dlab) {
            this.#w(W.DLL, v);
            break;
          }
          // Transmit at once: THR empties immediately, which is an edge on the IRQ line.
          this.#w(W.THR_IPENDING, 0);
          this.#update();
          if (!(this.#r(W.MCR) & MCR_LOOP)) this.out(v);
          this.#w(W.THR_IPENDING, 1);
          this.#update();
          break;
        case 1: {
          if (dlab) {
            this.#w(W.DLM, v);
            break;
          }
          const changed = (this.#r(W.IER) ^ v) & IER_THRI;
          this.#w(W.IER, v & IER_MASK);
          // Enabling the THRE interrupt while THR is empty raises it (the driver relies on it).
          if (changed) this.#w(W.THR_IPENDING, v & IER_THRI && this.#r(W.LSR) & LSR_THRE ? 1 : 0);
          this.#update();
          break;
        }
        case 2:
          break; // FCR: no FIFO
        case 3:
          this.#w(W.LCR, v);
          break;
        case 4:
          this.#w(W.MCR, v & 0x1f);
          break;
        case 5:
        case 6:
          break; // read-only
        default:
          this.#w(W.SCR, v);
      }
    } finally {
      this.#unlock();
    }
  }
}
