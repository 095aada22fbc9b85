// What a vCPU does with an I/O-port or MMIO exit: the 8250, the debug-exit port, the keyboard
// controller's reset line, PCI configuration and the assigned devices' BARs (through their
// rings). Anything else reads as all ones, drops writes and is counted.
import { OP, STATUS } from '../threads.js';
import { CMOS_DATA, CMOS_INDEX, cmosRead, cmosWrite } from './cmos.js';
import { callOrGone, countRefused, type PciBus } from './pci-bus.js';
import { END, endVm, STAT } from './shared.js';
import { UART_BASE, type Uart } from './uart.js';

/** QEMU's isa-debug-exit convention: the byte written is the VM's exit status. */
export const DEBUG_EXIT_PORT = 0x501;
/** i8042 command port; 0xfe pulses the CPU reset line (Linux's reboot=k). */
export const I8042_COMMAND = 0x64;
const I8042_RESET = 0xfe;
const ONES = [0, 0xff, 0xffff, 0, 0xffffffff, 0, 0, 0, 0];

export class ExitDevices {
  readonly #stats: Float64Array;
  readonly #s: number;
  /** Time this exit's ring calls (a sampled exit). */
  timing = false;
  /** Result of the last read() or mmio access (the high word for an 8-byte access). */
  hi = 0;
  /** Accesses to ports nothing answers, by port (this vCPU's), to see what a guest probes. */
  readonly unknownPorts = new Uint32Array(0x10000);

  constructor(
    readonly ctl: Int32Array,
    readonly uart: Uart,
    readonly pci: PciBus,
    stats: Float64Array,
    statBase: number,
  ) {
    this.#stats = stats;
    this.#s = statBase;
  }

  /** An OUT of `size` bytes. */
  outPort(port: number, size: number, value: number): void {
    if (port >= UART_BASE && port < UART_BASE + 8) {
      this.#stats[this.#s + STAT.UART]!++;
      this.uart.write(port - UART_BASE, value);
      return;
    }
    if (port >= 0xcf8 && port < 0xd00) {
      this.pci.write(port, size, value);
      return;
    }
    if (port === CMOS_INDEX || port === CMOS_DATA) {
      cmosWrite(this.ctl, port, value);
      return;
    }
    if (port === DEBUG_EXIT_PORT) {
      endVm(this.ctl, END.DEBUG_EXIT, value & 0xff);
      return;
    }
    if (port === I8042_COMMAND && (value & 0xff) === I8042_RESET) {
      endVm(this.ctl, END.RESET, 0);
      return;
    }
    if (this.pci.lookup(port, true)) {
      this.#bar(OP.BAR_WRITE, size, value, 0);
      return;
    }
    this.#stats[this.#s + STAT.UNKNOWN_PIO]!++;
    this.unknownPorts[port]!++;
  }

  /** An IN of `size` bytes. */
  inPort(port: number, size: number): number {
    if (port >= UART_BASE && port < UART_BASE + 8) {
      this.#stats[this.#s + STAT.UART]!++;
      return this.uart.read(port - UART_BASE);
    }
    if (port >= 0xcf8 && port < 0xd00) return this.pci.read(port, size);
    if (port === CMOS_INDEX || port === CMOS_DATA) return cmosRead(this.ctl, port);
    if (this.pci.lookup(port, true)) return this.#bar(OP.BAR_READ, size, 0, 0);
    this.#stats[this.#s + STAT.UNKNOWN_PIO]!++;
    this.unknownPorts[port]!++;
    return ONES[size]!;
  }

  /** An MMIO read (returns the low 32 bits, `hi` the rest) or write of `len` bytes at `addr`. */
  mmio(addr: number, len: number, write: boolean, lo: number, hi: number): number {
    if (this.pci.lookup(addr, false))
      return this.#bar(write ? OP.BAR_WRITE : OP.BAR_READ, len, lo, hi);
    this.#stats[this.#s + STAT.UNKNOWN_MMIO]!++;
    this.hi = len === 8 ? 0xffffffff : 0;
    return len >= 4 ? 0xffffffff : ONES[len]!;
  }

  /**
   * A BAR access through the device's ring; one the device refuses reads as all ones and is
   * counted, and so is one whose worker died with it or to a failed device (never retried: a
   * doorbell written twice is a bug).
   */
  #bar(op: number, size: number, lo: number, hi: number): number {
    const p = this.pci,
      c = p.clients[p.hitDevice];
    this.#stats[this.#s + STAT.DEVICE + p.hitDevice]!++;
    const t0 = this.timing ? performance.now() : 0;
    // A device unplugged (or surprise-removed) under this vCPU answers all ones.
    const status = c ? callOrGone(c, op, p.hitBar, p.hitOffset, size, lo | 0, hi | 0) : -1;
    if (this.timing) this.#stats[this.#s + STAT.RING_MS]! += performance.now() - t0;
    if (status !== STATUS.OK || !c) {
      countRefused(this.#stats, this.#s, status);
      this.hi = size === 8 ? 0xffffffff : 0;
      return size >= 4 ? 0xffffffff : ONES[size]!;
    }
    this.hi = c.hi >>> 0;
    return size >= 4 ? c.lo >>> 0 : c.lo & ONES[size]!;
  }
}

/** The most used of the ports nothing answers, as [port, count], most first. */
export function topPorts(counts: Uint32Array, n: number): [number, number][] {
  const out: [number, number][] = [];
  counts.forEach((c, port) => {
    if (c) out.push([port, c]);
  });
  return out.sort((a, b) => b[1] - a[1]).slice(0, n);
}
