// The vectors of one VFIO IRQ index (MSI-X or MSI) in the device worker, after QEMU's
// vfio_msix_vector_use/release: the guest's enable, masks and messages become VFIO triggers and
// KVM routes. Each vector in use has a userspace eventfd (read by the poller) and, with KVM, an
// irqfd eventfd. VFIO signals the irqfd one only while the vector is deliverable and KVM has
// committed its current message; otherwise the userspace one, so a masked vector's firing sets
// its pending bit and is delivered on unmask. All state lives in shared memory (IrqViews), so a
// restarted worker resumes from it.
import type { MsiMessage, RouteChange, RouteResult } from './gsi-router.js';
import { IRQ, type IrqViews, reportToVmm } from './irq-state.js';

/** The guest's view of an index's vectors: the MSI-X table + control word, or the MSI capability. */
export interface VectorSource {
  readonly kind: 'msix' | 'msi';
  readonly vfioIndex: number;
  /** First shared-state slot. */
  readonly base: number;
  /** Vectors there can be (MSI-X table size, MSI capable count, bounded by VFIO's count). */
  readonly size: number;
  /** MSI: every enabled vector is set up at once (VFIO cannot grow MSI). */
  readonly allAtOnce: boolean;
  enabled(): boolean;
  /** Vectors the guest enabled (MSI: multiple message enable; MSI-X: size). */
  active(): number;
  /** Enabled, not function-masked, and the vector itself not masked. */
  deliverable(v: number): boolean;
  message(v: number, out: MsiMessage): void;
  pending(v: number): boolean;
  setPending(v: number, on: boolean): void;
}

/** VFIO_DEVICE_SET_IRQS and eventfds, as the vector logic needs them (fakes in unit tests). */
export interface IrqBackend {
  canResize(index: number): boolean;
  /** Point one vector at an eventfd (-1: detach it). */
  setTrigger(index: number, vector: number, fd: number): void;
  /** Enable the index with vectors 0..fds.length-1 (-1: vector allocated but unused). */
  setTriggers(index: number, fds: readonly number[]): void;
  disable(index: number): void;
  newEventfd(): number;
  /** Non-blocking read of an eventfd's count (0: none). */
  take(fd: number): number;
}

export interface RouteClient {
  update(changes: RouteChange[]): Promise<RouteResult[]>;
}

export interface IrqContext {
  views: IrqViews;
  backend: IrqBackend;
  /** KVM mode: the GSI router and KVM_SIGNAL_MSI on the VM. Absent: relay mode. */
  kvm?: { route: RouteClient; signalMsi(m: MsiMessage): void };
  /** The poller must re-read the set of userspace eventfds. */
  publish(): void;
  error(message: string): void;
}

const NAMES = { msix: 'MSI-X', msi: 'MSI' } as const;

export class VectorSet {
  readonly #msg: MsiMessage = { lo: 0, hi: 0, data: 0 };
  readonly #dirty = new Set<number>();
  readonly #inflight = new Set<Promise<void>>();
  readonly #countWord: number;
  #scheduled = false;

  constructor(
    readonly src: VectorSource,
    readonly ctx: IrqContext,
  ) {
    this.#countWord = src.kind === 'msix' ? IRQ.MSIX_COUNT : IRQ.MSI_COUNT;
  }

  /** Vectors enabled in VFIO (0: the index is disabled). */
  get vfioCount(): number {
    return Atomics.load(this.ctx.views.hdr, this.#countWord);
  }

  /** The guest enabled the index: enable it in VFIO with the vectors it can already use. */
  enable(): void {
    const { views: v, backend } = this.ctx,
      src = this.src;
    let n = 0;
    for (let i = 0; i < src.size; i++)
      if (src.allAtOnce ? i < src.active() : src.deliverable(i)) n = i + 1;
    const fds: number[] = [];
    for (let i = 0; i < Math.max(n, 1); i++) {
      const s = src.base + i;
      if (i < n && (src.allAtOnce || src.deliverable(i))) {
        this.#ensureFds(i);
        v.TRIGGER[s] = v.USER_FD[s]!;
      }
      fds.push(v.TRIGGER[s]!);
    }
    // No vector usable yet: enable with one unused vector, so the device is in MSI-X mode as the guest sees it (QEMU does the same).
    try {
      backend.setTriggers(src.vfioIndex, fds);
    } catch (e) {
      for (let i = 0; i < fds.length; i++) v.TRIGGER[src.base + i] = -1;
      this.ctx.error(
        `enabling ${NAMES[src.kind]} with ${fds.length} vector(s): ${(e as Error).message}`,
      );
      return;
    }
    Atomics.store(v.hdr, this.#countWord, fds.length);
    this.syncAll();
  }

  /** The guest disabled the index (or the device is being reset). */
  disable(): void {
    const { views: v } = this.ctx;
    if (this.vfioCount === 0) return;
    try {
      this.ctx.backend.disable(this.src.vfioIndex);
    } catch (e) {
      this.ctx.error(`disabling ${NAMES[this.src.kind]}: ${(e as Error).message}`);
    }
    Atomics.store(v.hdr, this.#countWord, 0);
    for (let i = 0; i < this.src.size; i++) {
      const s = this.src.base + i;
      if (v.OPEN[s] === 1) {
        v.OPEN[s] = 0;
        Atomics.add(v.MASKS, s, 1);
      }
      if (v.TRIGGER[s]! >= 0) {
        v.TRIGGER[s] = -1;
        Atomics.store(v.DIRECT, s, 0);
      }
      if (v.ROUTED[s] === 1) this.#stage(i);
    }
  }

  syncAll(): void {
    const v = this.ctx.views;
    for (let i = 0; i < this.src.size; i++) {
      const s = this.src.base + i;
      if (v.TRIGGER[s]! >= 0 || v.ROUTED[s] === 1 || this.src.deliverable(i)) this.sync(i);
    }
  }

  /** Vector i's mask or message changed (or the control word did): bring VFIO and KVM in line. */
  sync(i: number): void {
    const { views: v, kvm } = this.ctx,
      src = this.src,
      s = src.base + i;
    if (this.vfioCount === 0) return;
    const want = src.enabled() && src.deliverable(i);
    if ((want ? 1 : 0) !== v.OPEN[s]) {
      v.OPEN[s] = want ? 1 : 0;
      Atomics.add(want ? v.UNMASKS : v.MASKS, s, 1);
    }
    if (want && v.TRIGGER[s]! < 0) this.#use(i);
    const trig = v.TRIGGER[s]!;
    if (kvm) {
      const kfd = v.KVM_FD[s]!;
      let ok: boolean;
      if (want) {
        src.message(i, this.#msg);
        ok = v.ROUTED[s] === 1 && this.#routeIs(s, this.#msg);
      } else ok = v.ROUTED[s] === 0;
      if ((!want || !ok) && trig === kfd && trig >= 0) this.#trigger(i, v.USER_FD[s]!);
      if (!ok) this.#stage(i);
      else if (want && trig >= 0 && trig !== kfd) this.#trigger(i, kfd);
    } else if (trig >= 0) Atomics.store(v.DIRECT, s, want ? 1 : 0);
    if (want && src.pending(i)) {
      src.setPending(i, false);
      this.#deliver(i, 1);
    }
  }

  /** The poller saw vector i's userspace eventfd fire `n` times. */
  fired(i: number, n = 1): void {
    const v = this.ctx.views,
      s = this.src.base + i;
    if (v.TRIGGER[s]! < 0) return; // stale: the index was disabled since
    if (this.src.enabled() && this.src.deliverable(i)) this.#deliver(i, n);
    else {
      this.src.setPending(i, true);
      Atomics.add(v.PENDED, s, 1);
    }
  }

  /** Read the userspace eventfds of masked vectors now (a PBA read must see what already fired). */
  pollMasked(): void {
    const { views: v, backend } = this.ctx;
    for (let i = 0; i < this.src.size; i++) {
      const s = this.src.base + i,
        fd = v.USER_FD[s]!;
      if (fd < 0 || v.TRIGGER[s] !== fd || (this.src.enabled() && this.src.deliverable(i)))
        continue;
      const k = backend.take(fd);
      if (k > 0) {
        Atomics.add(v.FIRED, s, k);
        this.fired(i, k);
      }
    }
  }

  /** After a worker restart: re-send every route (the router may have missed the last ones). */
  resume(): void {
    const v = this.ctx.views;
    for (let i = 0; i < this.src.size; i++) {
      const s = this.src.base + i;
      if (this.ctx.kvm && (v.TRIGGER[s]! >= 0 || v.ROUTED[s] === 1)) {
        Atomics.store(v.ROUTED, s, 0);
        this.#stage(i);
      }
    }
    this.syncAll();
  }

  /** Resolves when no route change is queued or on its way. */
  async settled(): Promise<void> {
    for (;;) {
      if (this.#scheduled) {
        await new Promise<void>((r) => setImmediate(r));
        continue;
      }
      if (this.#inflight.size === 0) return;
      await Promise.allSettled([...this.#inflight]);
    }
  }

  // ---- internals

  #routeIs(s: number, m: MsiMessage): boolean {
    const v = this.ctx.views;
    return v.R_LO[s] === (m.lo | 0) && v.R_HI[s] === (m.hi | 0) && v.R_DATA[s] === (m.data | 0);
  }

  #ensureFds(i: number): void {
    const { views: v, backend } = this.ctx,
      s = this.src.base + i;
    if (v.USER_FD[s]! < 0) {
      v.USER_FD[s] = backend.newEventfd();
      this.ctx.publish();
    }
    if (this.ctx.kvm && v.KVM_FD[s]! < 0) v.KVM_FD[s] = backend.newEventfd();
  }

  /** First use of vector i: give VFIO its userspace eventfd, growing the index if needed. */
  #use(i: number): void {
    const { views: v, backend } = this.ctx,
      src = this.src,
      s = src.base + i;
    this.#ensureFds(i);
    const fd = v.USER_FD[s]!,
      count = this.vfioCount;
    try {
      if (i < count || backend.canResize(src.vfioIndex)) {
        backend.setTrigger(src.vfioIndex, i, fd);
        v.TRIGGER[s] = fd;
        if (i >= count) Atomics.store(v.hdr, this.#countWord, i + 1);
      } else {
        // VFIO_IRQ_INFO_NORESIZE: disable and enable again with more vectors, as QEMU does.
        backend.disable(src.vfioIndex);
        v.TRIGGER[s] = fd;
        const fds = Array.from({ length: i + 1 }, (_, k) => v.TRIGGER[src.base + k]!);
        backend.setTriggers(src.vfioIndex, fds);
        Atomics.store(v.hdr, this.#countWord, i + 1);
      }
    } catch (e) {
      v.TRIGGER[s] = -1;
      this.ctx.error(
        `${NAMES[src.kind]} vector ${i}: giving VFIO eventfd ${fd}: ${(e as Error).message}`,
      );
    }
  }

  #trigger(i: number, fd: number): void {
    const s = this.src.base + i;
    try {
      this.ctx.backend.setTrigger(this.src.vfioIndex, i, fd);
      this.ctx.views.TRIGGER[s] = fd;
    } catch (e) {
      this.ctx.error(
        `${NAMES[this.src.kind]} vector ${i}: switching VFIO to eventfd ${fd}: ${(e as Error).message}`,
      );
    }
  }

  #deliver(i: number, n: number): void {
    const v = this.ctx.views,
      s = this.src.base + i;
    if (this.ctx.kvm) {
      this.src.message(i, this.#msg);
      try {
        this.ctx.kvm.signalMsi(this.#msg);
        Atomics.add(v.DELIVERED, s, 1);
      } catch (e) {
        this.ctx.error(
          `${NAMES[this.src.kind]} vector ${i}: KVM_SIGNAL_MSI: ${(e as Error).message}`,
        );
      }
    } else reportToVmm(v, s, n);
  }

  #stage(i: number): void {
    if (!this.ctx.kvm) return;
    this.#dirty.add(i);
    if (!this.#scheduled) {
      this.#scheduled = true;
      queueMicrotask(() => this.#flush());
    }
  }

  /** Send the staged vectors' routes to the router in one update (one KVM commit). */
  #flush(): void {
    this.#scheduled = false;
    const kvm = this.ctx.kvm!,
      v = this.ctx.views,
      src = this.src;
    const list = [...this.#dirty];
    this.#dirty.clear();
    const changes = list.map((i): RouteChange => {
      const s = src.base + i;
      const want = this.vfioCount > 0 && v.TRIGGER[s]! >= 0 && src.enabled() && src.deliverable(i);
      let msi: MsiMessage | null = null;
      if (want) {
        msi = { lo: 0, hi: 0, data: 0 };
        src.message(i, msi);
      }
      return { key: s, fd: v.KVM_FD[s]!, msi };
    });
    const t0 = performance.now();
    const p = kvm.route.update(changes).then(
      (results) => {
        Atomics.add(v.hdr, IRQ.ROUTE_COMMITS, 1);
        Atomics.add(v.hdr, IRQ.ROUTE_COMMIT_US, Math.round((performance.now() - t0) * 1000));
        changes.forEach((c, k) => {
          const s = c.key;
          if ('msi' in c && c.msi) {
            v.R_LO[s] = c.msi.lo;
            v.R_HI[s] = c.msi.hi;
            v.R_DATA[s] = c.msi.data;
            v.GSI[s] = results[k]?.gsi ?? -1;
            Atomics.store(v.ROUTED, s, 1);
          } else Atomics.store(v.ROUTED, s, 0);
        });
        Atomics.add(v.hdr, IRQ.ROUTE_UPDATES, changes.length);
        for (const i of list) if (!this.#dirty.has(i)) this.sync(i);
      },
      (e: unknown) =>
        this.ctx.error(
          `routing ${NAMES[src.kind]} vector(s) ${list.join(',')}: ${(e as Error).message}`,
        ),
    );
    this.#inflight.add(p);
    void p.finally(() => this.#inflight.delete(p));
  }
}
