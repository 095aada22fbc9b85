// The interrupt half of a device's shared memory: every interrupt source's eventfds, GSI, VFIO
// trigger and committed route (so a restarted worker resumes from it), its counters (read by
// metrics), and the doorbells by which the poller thread reports firings to the worker and the VMM.
// Writers: the device worker (state, routes), the poller (FIRED), both (DELIVERED, bitmaps).

/** Source slots: MSI-X vectors, then MSI vectors, then INTx. */
export const SRC = { MSIX: 0, MSI: 2048, INTX: 2080, COUNT: 2112 } as const;
export type IrqKind = 'msix' | 'msi' | 'intx';

export function sourceOf(slot: number): { kind: IrqKind; vector: number } {
  if (slot >= SRC.INTX) return { kind: 'intx', vector: slot - SRC.INTX };
  if (slot >= SRC.MSI) return { kind: 'msi', vector: slot - SRC.MSI };
  return { kind: 'msix', vector: slot };
}

/** Interrupt mode the device is in (one at a time, as VFIO allows). */
export const MODE = { NONE: 0, INTX: 1, MSI: 2, MSIX: 3 } as const;

/** Header words (Int32 indexes); the two doorbells sit on their own cache lines. */
export const IRQ = {
  GEN: 0, // bumped by the worker when the set of polled eventfds changes
  ACK: 1, // the generation the poller has adopted
  STOP: 2, // 1: the poller exits
  CTL_FD: 3, // the poller's control eventfd (wakes it for GEN/STOP)
  MODE: 4,
  MSIX_COUNT: 5, // vectors enabled in VFIO for MSI-X (0: disabled)
  MSI_COUNT: 6,
  INTX_UNMASK_FD: 7, // eventfd VFIO unmasks INTx on (KVM's resamplefd, or the VMM's EOI)
  ROUTE_UPDATES: 8, // route changes committed by the GSI router for this device
  ERRORS: 9, // interrupt setup errors (the worker keeps their text)
  POLLER_ERRORS: 10,
  ROUTE_COMMITS: 11, // route updates the GSI router committed (one KVM_SET_GSI_ROUTING each)
  ROUTE_COMMIT_US: 12, // their summed latency, µs from staging to the router's answer
  WORKER_SEQ: 16, // poller → worker doorbell
  WORKER_SEEN: 17, // the WORKER_SEQ the worker has taken firings for (its ring server wants an event-loop turn while they differ)
  VMM_SEQ: 32, // poller/worker → VMM doorbell
  WORDS: 48,
} as const;

/** Per-source Int32 arrays, in this order after the header. */
const ARRAYS = [
  'USER_FD',
  'KVM_FD',
  'GSI',
  'TRIGGER',
  'DIRECT',
  'ROUTED',
  'R_LO',
  'R_HI',
  'R_DATA',
  'FIRED',
  'DELIVERED',
  'PENDED',
  'MASKS',
  'UNMASKS',
  'OPEN',
] as const;
const BITMAP_WORDS = SRC.COUNT / 32;

export interface IrqViews {
  hdr: Int32Array;
  /** eventfd the poller reads (VFIO's trigger while masked / not routed, or always in relay mode); -1: none. */
  USER_FD: Int32Array;
  /** eventfd bound to KVM by an irqfd (KVM mode); -1: none. */
  KVM_FD: Int32Array;
  GSI: Int32Array;
  /** The eventfd VFIO signals for this source now; -1: the source is not in use. */
  TRIGGER: Int32Array;
  /** 1: the poller may report a firing straight to the VMM (relay mode, vector deliverable). */
  DIRECT: Int32Array;
  /** 1: R_LO/R_HI/R_DATA is the route KVM has committed for this source. */
  ROUTED: Int32Array;
  R_LO: Int32Array;
  R_HI: Int32Array;
  R_DATA: Int32Array;
  /** Firings userspace saw on USER_FD (counter, wraps at 2^32). */
  FIRED: Int32Array;
  /** Interrupts delivered by userspace: reported to the VMM (relay) or injected by KVM_SIGNAL_MSI. */
  DELIVERED: Int32Array;
  /** Firings that arrived while the vector was masked (each set its pending bit). */
  PENDED: Int32Array;
  /** Times the vector went from deliverable to masked (guest mask, function mask, disable). */
  MASKS: Int32Array;
  /** Times it went from masked (or not in use) to deliverable. */
  UNMASKS: Int32Array;
  /** 1 while the last sync saw the vector deliverable (what MASKS/UNMASKS count changes of). */
  OPEN: Int32Array;
  TO_WORKER: Int32Array;
  TO_VMM: Int32Array;
}

export const IRQ_BYTES = 4 * (IRQ.WORDS + ARRAYS.length * SRC.COUNT + 2 * BITMAP_WORDS);

export function irqViews(sab: SharedArrayBuffer): IrqViews {
  let at = IRQ.WORDS * 4;
  const next = (n: number): Int32Array => {
    const a = new Int32Array(sab, at, n);
    at += 4 * n;
    return a;
  };
  const v = { hdr: new Int32Array(sab, 0, IRQ.WORDS) } as Partial<IrqViews> &
    Record<string, Int32Array>;
  for (const name of ARRAYS) v[name] = next(SRC.COUNT);
  v.TO_WORKER = next(BITMAP_WORDS);
  v.TO_VMM = next(BITMAP_WORDS);
  return v as IrqViews;
}

export function createIrqState(): SharedArrayBuffer {
  const sab = new SharedArrayBuffer(IRQ_BYTES);
  const v = irqViews(sab);
  for (const a of [v.USER_FD, v.KVM_FD, v.GSI, v.TRIGGER]) a.fill(-1);
  v.hdr[IRQ.CTL_FD] = -1;
  v.hdr[IRQ.INTX_UNMASK_FD] = -1;
  return sab;
}

/** Report `n` interrupts on `slot` to the VMM (from the poller or the worker). */
export function reportToVmm(v: IrqViews, slot: number, n: number): void {
  Atomics.add(v.DELIVERED, slot, n);
  Atomics.or(v.TO_VMM, slot >> 5, 1 << (slot & 31));
  Atomics.add(v.hdr, IRQ.VMM_SEQ, 1);
  Atomics.notify(v.hdr, IRQ.VMM_SEQ);
}

/** Hand a firing on `slot` to the device worker (it decides: pending bit, or deliver). */
export function reportToWorker(v: IrqViews, slot: number): void {
  Atomics.or(v.TO_WORKER, slot >> 5, 1 << (slot & 31));
  Atomics.add(v.hdr, IRQ.WORKER_SEQ, 1);
  Atomics.notify(v.hdr, IRQ.WORKER_SEQ);
}

/** Take every slot set in a bitmap (clearing it), calling fn for each. */
export function takeBits(bitmap: Int32Array, fn: (slot: number) => void): void {
  for (let w = 0; w < bitmap.length; w++) {
    if (Atomics.load(bitmap, w) === 0) continue;
    let bits = Atomics.exchange(bitmap, w, 0);
    while (bits !== 0) {
      const b = 31 - Math.clz32(bits & -bits);
      bits &= bits - 1;
      fn(w * 32 + b);
    }
  }
}
