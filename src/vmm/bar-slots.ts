// The BAR fast path's KVM memory slots: each mappable area of an assigned device's BAR (an mmap
// of the device fd, bar-mapping.ts) becomes a slot at the BAR's guest address + the area's
// offset, so the guest's accesses there (the NVMe doorbells) reach the device without an exit.
// The slot table lives in shared memory: the vCPU that made a guest's command or BAR write
// re-syncs every slot with the BAR map (pci-bus.ts refresh) while the other vCPUs run; a lock
// word keeps two vCPUs from syncing at once. KVM takes KVM_SET_USER_MEMORY_REGION from any thread.
import * as kvm from '../../native/kvm.js';
import { encodeInto } from '../../native/layout.js';
import { errno, raw } from '../../native/libc.js';
import { BAR, BAR_IO, BARS, CTL, MAX_AREAS, SLOT, SLOT_NONE, SLOT_ROWS } from './shared.js';

/** Slot numbers from here: the RAM takes slots 0 and 1 (below and above the 4 GiB hole). */
export const FIRST_BAR_SLOT = 8;
const PAGE = 4096;
const NONE = SLOT_NONE;

/** One KVM_SET_USER_MEMORY_REGION: size 0 deletes the slot. */
export interface SlotRegion {
  slot: number;
  gpa: number;
  size: number;
  hva: number;
}

export class BarSlots {
  readonly #ctl: Int32Array;
  readonly #slots: Float64Array;
  readonly #buf = Buffer.alloc(kvm.kvm_userspace_memory_region.size);

  /** `setRegion`: KVM_SET_USER_MEMORY_REGION on `vmFd` (a test passes its own); returns errno or 0. */
  constructor(
    ctl: Int32Array,
    slots: Float64Array,
    readonly vmFd: number,
    private readonly setRegion: (r: SlotRegion) => number = (r) => this.#kvmSet(r),
  ) {
    this.#ctl = ctl;
    this.#slots = slots;
  }

  /** Make every slot match the BAR map (`bars`: rows of shared.ts BAR). Deletes first, then adds. */
  sync(bars: Float64Array): void {
    this.#locked(() => {
      const want = new Float64Array(SLOT_ROWS).fill(NONE);
      for (let r = 0; r < SLOT_ROWS; r++) {
        const row = r * SLOT.WORDS,
          size = this.#slots[row + SLOT.SIZE]!;
        if (size === 0) continue;
        const b = Math.floor(r / MAX_AREAS) * BAR.WORDS;
        if (bars[b + BAR.ACTIVE] !== 1 || bars[b + BAR.KIND] === BAR_IO) continue;
        const gpa = bars[b + BAR.BASE]! + this.#slots[row + SLOT.OFFSET]!;
        if (gpa % PAGE === 0 && gpa + size <= 2 ** 52) want[r] = gpa;
      }
      for (let r = 0; r < SLOT_ROWS; r++) {
        const row = r * SLOT.WORDS,
          at = this.#slots[row + SLOT.GPA]!;
        if (at !== NONE && at !== want[r]) this.#set(r, NONE);
      }
      for (let r = 0; r < SLOT_ROWS; r++)
        if (want[r] !== NONE && this.#slots[r * SLOT.WORDS + SLOT.GPA] === NONE)
          this.#set(r, want[r]!);
    });
  }

  /** Delete every installed slot (before the mappings go). */
  clear(): void {
    this.#locked(() => {
      for (let r = 0; r < SLOT_ROWS; r++)
        if (this.#slots[r * SLOT.WORDS + SLOT.GPA] !== NONE) this.#set(r, NONE);
    });
  }

  /** Guest addresses of the installed slots, per row: what the guest reaches without exits. */
  installed(): { device: number; bar: number; gpa: number; offset: number; size: number }[] {
    const out = [];
    for (let r = 0; r < SLOT_ROWS; r++) {
      const row = r * SLOT.WORDS,
        gpa = this.#slots[row + SLOT.GPA]!;
      if (gpa === NONE) continue;
      const b = Math.floor(r / MAX_AREAS);
      out.push({
        device: Math.floor(b / BARS),
        bar: b % BARS,
        gpa,
        offset: this.#slots[row + SLOT.OFFSET]!,
        size: this.#slots[row + SLOT.SIZE]!,
      });
    }
    return out;
  }

  /**
   * Add (gpa) or delete (NONE: size 0) slot row `r`. A refused add leaves the area trapped (its
   * accesses still reach the device through the ring) and keeps the errno in the row.
   */
  #set(r: number, gpa: number): void {
    const row = r * SLOT.WORDS,
      s = this.#slots;
    const t0 = performance.now();
    const e = this.setRegion({
      slot: FIRST_BAR_SLOT + r,
      gpa: gpa === NONE ? 0 : gpa,
      size: gpa === NONE ? 0 : s[row + SLOT.SIZE]!,
      hva: gpa === NONE ? 0 : s[row + SLOT.HVA]!,
    });
    Atomics.add(this.#ctl, CTL.SLOT_OPS, 1);
    Atomics.add(this.#ctl, CTL.SLOT_US, Math.round((performance.now() - t0) * 1000));
    s[row + SLOT.ERRNO] = e;
    if (e === 0 || gpa !== NONE) s[row + SLOT.GPA] = e === 0 ? gpa : NONE;
  }

  #kvmSet(r: SlotRegion): number {
    encodeInto(kvm.kvm_userspace_memory_region, this.#buf, {
      slot: r.slot,
      flags: 0,
      guest_phys_addr: BigInt(r.gpa),
      memory_size: BigInt(r.size),
      userspace_addr: BigInt(r.hva),
    });
    return raw.ioctlPtr(this.vmFd, kvm.KVM.KVM_SET_USER_MEMORY_REGION, this.#buf) === 0
      ? 0
      : errno();
  }

  #locked(f: () => void): void {
    const c = this.#ctl;
    while (Atomics.compareExchange(c, CTL.SLOT_LOCK, 0, 1) !== 0)
      Atomics.wait(c, CTL.SLOT_LOCK, 1, 1);
    try {
      f();
    } finally {
      Atomics.store(c, CTL.SLOT_LOCK, 0);
      Atomics.notify(c, CTL.SLOT_LOCK, 1);
    }
  }
}
