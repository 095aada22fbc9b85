// PCI bus 0 as each vCPU sees it: configuration mechanism #1 (0xcf8 address latch, 0xcfc-0xcff
// data), an emulated host bridge at 00:00.0 and the assigned devices at 00:01.0, 00:02.0...,
// whose config space and BARs are reached through their rings, from the vCPU thread itself. The
// BAR map (shared.ts) follows the guest: a config write to the command register or a BAR makes
// the writing vCPU read them back through the ring and republish that device's rows, then move
// the BAR fast path's KVM slots to match (bar-slots.ts): a moved BAR's slots follow it, memory
// decoding off deletes them.
// Functions come and go while the guest runs (hot-plug, vm.ts): an empty slot reads as all ones,
// and a device whose ring closed under a vCPU (a surprise removal) answers all ones too.

import { OP, type RingClient, RingClosedError, STATUS } from '../threads.js';
import type { BarSlots } from './bar-slots.js';
import { BAR, BAR_IO, BAR_MEM, BARS, CTL, STAT } from './shared.js';

export const PCI_CONFIG_ADDRESS = 0xcf8;
export const PCI_CONFIG_DATA = 0xcfc;
export const KIND_MEM32 = BAR_MEM,
  KIND_IO = BAR_IO,
  KIND_MEM64 = 3;

/** 00:00.0, an Intel 440FX host bridge: id, command, class 0x0600 (rev 2), header type 0. */
const HOST_BRIDGE = [0x12378086, 0x00000006, 0x06000002, 0x00000000];
const ONES = [0, 0xff, 0xffff, 0, 0xffffffff];

/**
 * Count a device access that did not complete OK (the caller reads all ones or drops the
 * write): REFUSED, and LOST or FAILED for a worker that died with it or a failed device.
 */
export function countRefused(stats: Float64Array, base: number, status: number): void {
  stats[base + STAT.REFUSED]!++;
  if (status === STATUS.WORKER_DIED) stats[base + STAT.LOST]!++;
  else if (status === STATUS.DEVICE_FAILED) stats[base + STAT.FAILED]!++;
}

export class PciBus {
  readonly #ctl: Int32Array;
  readonly #bars: Float64Array;
  readonly #stats: Float64Array;
  readonly #statBase: number;
  /** Time this exit's ring calls (a sampled exit). */
  timing = false;
  /** The BAR hit by the last lookup. */
  hitDevice = -1;
  hitBar = -1;
  hitOffset = 0;

  constructor(
    ctl: Int32Array,
    bars: Float64Array,
    /** Per slot (index = slot - 1); undefined: nothing plugged there. */
    readonly clients: (RingClient | undefined)[],
    stats: Float64Array,
    statBase: number,
    /** The BAR fast path's slots (absent: every BAR access traps). */
    readonly slots?: BarSlots,
  ) {
    this.#ctl = ctl;
    this.#bars = bars;
    this.#stats = stats;
    this.#statBase = statBase;
  }

  // ---- configuration mechanism #1

  read(port: number, size: number): number {
    if (port === PCI_CONFIG_ADDRESS)
      return size === 4 ? Atomics.load(this.#ctl, CTL.PCI_LATCH) >>> 0 : ONES[size]!;
    if (port < PCI_CONFIG_DATA) return ONES[size]!;
    this.#stats[this.#statBase + STAT.CONFIG]!++;
    const dev = this.#target(),
      reg = this.#reg(port);
    if (dev < 0) return ONES[size]!;
    if (dev === 0)
      return reg < 16 ? ((HOST_BRIDGE[reg >> 2]! >>> ((reg & 3) * 8)) & ONES[size]!) >>> 0 : 0;
    const c = this.clients[dev - 1]!;
    const status = this.#ring(c, OP.CFG_READ, reg, size, 0);
    if (status === STATUS.OK) return (c.lo & ONES[size]!) >>> 0;
    if (status === STATUS.WORKER_DIED || status === STATUS.DEVICE_FAILED)
      countRefused(this.#stats, this.#statBase, status);
    return ONES[size]!;
  }

  write(port: number, size: number, value: number): void {
    if (port === PCI_CONFIG_ADDRESS) {
      if (size === 4) Atomics.store(this.#ctl, CTL.PCI_LATCH, value | 0);
      return;
    }
    if (port < PCI_CONFIG_DATA) return; // byte writes to 0xcfb etc.: a type 2 probe, not ours
    this.#stats[this.#statBase + STAT.CONFIG]!++;
    const dev = this.#target(),
      reg = this.#reg(port);
    if (dev <= 0) return; // the host bridge is read-only; absent functions ignore writes
    const c = this.clients[dev - 1]!;
    const status = this.#ring(c, OP.CFG_WRITE, reg, size, value);
    if (status !== STATUS.OK) countRefused(this.#stats, this.#statBase, status);
    // Command register or a BAR changed: the decoding addresses may have moved.
    if ((reg < 0x06 && reg + size > 0x04) || (reg < 0x28 && reg + size > 0x10))
      this.refresh(dev - 1);
  }

  /** 0 for the host bridge, 1.. for device slots, -1 if nothing answers there. */
  #target(): number {
    const a = Atomics.load(this.#ctl, CTL.PCI_LATCH);
    if (a >= 0) return -1; // bit 31 (enable) clear
    const bus = (a >> 16) & 0xff,
      slot = (a >> 11) & 0x1f,
      fn = (a >> 8) & 7;
    if (bus !== 0 || fn !== 0) return -1;
    if (slot === 0) return 0;
    return this.clients[slot - 1] ? slot : -1;
  }

  #reg(port: number): number {
    return (Atomics.load(this.#ctl, CTL.PCI_LATCH) & 0xfc) + (port - PCI_CONFIG_DATA);
  }

  #ring(c: RingClient, op: number, reg: number, size: number, value: number): number {
    const t0 = this.timing ? performance.now() : 0;
    const s = callOrGone(c, op, 0, reg, size, value | 0, 0);
    if (this.timing) this.#stats[this.#statBase + STAT.RING_MS]! += performance.now() - t0;
    return s;
  }

  /** Read device `i`'s command register and BARs back through its ring and republish its BAR rows. */
  refresh(i: number): void {
    const c = this.clients[i],
      b = this.#bars;
    if (!c) return;
    try {
      this.#refresh(i, c, b);
    } catch (e) {
      if (!(e instanceof RingClosedError)) throw e; // removed under us: its rows go with it
    }
  }

  #refresh(i: number, c: RingClient, b: Float64Array): void {
    const cmd = c.call(OP.CFG_READ, 0, 0x04, 2) === STATUS.OK ? c.lo & 0xffff : 0;
    for (let n = 0; n < BARS; n++) {
      const row = (i * BARS + n) * BAR.WORDS,
        kind = b[row + BAR.KIND]!;
      if (kind === 0) continue;
      const lo = c.call(OP.CFG_READ, 0, 0x10 + 4 * n, 4) === STATUS.OK ? c.lo >>> 0 : 0;
      let base = kind === KIND_IO ? lo & ~0x3 : (lo & ~0xf) >>> 0;
      if (kind === KIND_IO) base &= 0xffff;
      if (kind === KIND_MEM64 && c.call(OP.CFG_READ, 0, 0x14 + 4 * n, 4) === STATUS.OK)
        base += (c.lo >>> 0) * 2 ** 32;
      const on = kind === KIND_IO ? cmd & 0x1 : cmd & 0x2;
      b[row + BAR.ACTIVE] = 0; // never half-updated: off, move, then on
      b[row + BAR.BASE] = base;
      b[row + BAR.ACTIVE] = on && base !== 0 ? 1 : 0;
    }
    this.slots?.sync(b);
    Atomics.add(this.#ctl, CTL.BAR_GEN, 1);
    Atomics.notify(this.#ctl, CTL.BAR_GEN);
  }

  // ---- BAR dispatch: the exit paths look up, then call the ring with hit*

  /** Is `addr` inside an active BAR of `kind` (memory, or I/O)? Sets hitDevice/hitBar/hitOffset. */
  lookup(addr: number, io: boolean): boolean {
    const b = this.#bars,
      n = this.clients.length;
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < BARS; j++) {
        const row = (i * BARS + j) * BAR.WORDS;
        if (b[row + BAR.ACTIVE] !== 1) continue;
        const kind = b[row + BAR.KIND]!;
        if ((kind === KIND_IO) !== io) continue;
        const off = addr - b[row + BAR.BASE]!;
        if (off >= 0 && off < b[row + BAR.SIZE]!) {
          this.hitDevice = i;
          this.hitBar = j;
          this.hitOffset = off;
          return true;
        }
      }
    }
    return false;
  }
}

/** A ring call whose device may have been removed under the vCPU: a closed ring is a refusal. */
export function callOrGone(
  c: RingClient,
  op: number,
  bar: number,
  offset: number,
  size: number,
  lo: number,
  hi: number,
): number {
  try {
    return c.call(op, bar, offset, size, lo, hi);
  } catch (e) {
    if (e instanceof RingClosedError) return STATUS.IO_ERROR;
    throw e;
  }
}
