// The interrupt side of an assigned device, run by its worker: it follows the guest's MSI-X
// control word and table, its MSI capability and otherwise INTx, keeps exactly one of them
// enabled in VFIO (VFIO allows one at a time; QEMU switches the same way), and handles the
// firings the poller thread hands over (pending bits, or delivery). State: shared memory.
import * as kvm from '../../native/kvm.js';
import type { Target } from '../../native/libc.js';
import { PCI } from '../../native/pci-regs.js';
import * as vfio from '../../native/vfio.js';
import { signalEventfd } from './eventfd.js';
import type { MsiMessage } from './gsi-router.js';
import type {
  InterruptConfigHooks,
  InterruptConfigView,
  MsixTableListener,
  MsixTableView,
} from './guest-views.js';
import { Intx } from './intx.js';
import {
  IRQ,
  type IrqKind,
  type IrqViews,
  irqViews,
  MODE,
  SRC,
  sourceOf,
  takeBits,
} from './irq-state.js';
import { MsiVectors, MsixVectors } from './sources.js';
import { type IrqContext, type RouteClient, VectorSet } from './vector-set.js';
import { VfioIrqs } from './vfio-irqs.js';

const V = vfio.VFIO_C;
const MODE_NAMES = ['none', 'intx', 'msi', 'msix'] as const;
const MAX_ERRORS = 32;

export interface InterruptOptions {
  /** KVM mode: the GSI router (through its port) and the VM (for KVM_SIGNAL_MSI). Absent: relay. */
  route?: RouteClient;
  vm?: Target;
  /** KVM mode: the GSI the VMM wired this device's INTx pin to (else INTx is relayed). */
  intxGsi?: number;
  /** Enable INTx while MSI and MSI-X are off (default true, as QEMU does). */
  intx?: boolean;
}

/** What attach() needs of the device. */
export interface InterruptTarget {
  dev: Target;
  irqs: readonly vfio.IrqInfo[];
  config: InterruptConfigView;
  msix: MsixTableView | undefined;
}

export interface VectorStatus {
  kind: IrqKind;
  vector: number;
  /** Which eventfd VFIO signals: the poller's, KVM's irqfd, or none (not in use). */
  trigger: 'none' | 'user' | 'kvm';
  direct: boolean;
  gsi: number;
  route: MsiMessage | null;
  fired: number;
  delivered: number;
  pended: number;
}

export interface IrqStatus {
  mode: (typeof MODE_NAMES)[number];
  kvm: boolean;
  vfioVectors: { msix: number; msi: number };
  msixResizable: boolean;
  routeUpdates: number;
  vectors: VectorStatus[];
  errors: string[];
}

export class DeviceInterrupts implements MsixTableListener {
  readonly views: IrqViews;
  readonly errors: string[] = [];
  readonly hooks: InterruptConfigHooks;
  readonly #ctx: IrqContext;
  #vfio: VfioIrqs | undefined;
  #config: InterruptConfigView | undefined;
  #msix: VectorSet | undefined;
  #msi: VectorSet | undefined;
  #intx: Intx | undefined;
  #running = false;
  #loop: Promise<void> | undefined;

  constructor(
    irq: SharedArrayBuffer,
    readonly opts: InterruptOptions = {},
  ) {
    this.views = irqViews(irq);
    const vm = opts.vm;
    this.#ctx = {
      views: this.views,
      backend: undefined as unknown as VfioIrqs, // set by attach()
      publish: () => {
        Atomics.add(this.views.hdr, IRQ.GEN, 1);
        const ctl = Atomics.load(this.views.hdr, IRQ.CTL_FD);
        if (ctl >= 0) signalEventfd(ctl);
      },
      error: (m) => {
        Atomics.add(this.views.hdr, IRQ.ERRORS, 1);
        if (this.errors.length < MAX_ERRORS) this.errors.push(m);
      },
    };
    if (opts.route && vm)
      this.#ctx.kvm = {
        route: opts.route,
        signalMsi: (m) => {
          kvm.signalMsi(vm, { address_lo: m.lo, address_hi: m.hi, data: m.data });
        },
      };
    this.hooks = { msixControl: () => this.#reconcile(), msiChanged: () => this.#reconcile() };
  }

  get mode(): number {
    return Atomics.load(this.views.hdr, IRQ.MODE);
  }

  /** Bind to a (new or restored) device. `restored`: a restarted worker resumes the shared state. */
  attach(d: InterruptTarget, restored: boolean): void {
    this.#vfio = new VfioIrqs(d.dev, d.irqs);
    this.#ctx.backend = this.#vfio;
    this.#config = d.config;
    const count = (i: number): number => this.#vfio!.count(i);
    this.#msix =
      d.msix && count(V.VFIO_PCI_MSIX_IRQ_INDEX) > 0
        ? new VectorSet(
            new MsixVectors(d.msix, d.config, count(V.VFIO_PCI_MSIX_IRQ_INDEX)),
            this.#ctx,
          )
        : undefined;
    if (d.msix) d.msix.listener = this;
    this.#msi =
      d.config.msi && count(V.VFIO_PCI_MSI_IRQ_INDEX) > 0
        ? new VectorSet(new MsiVectors(d.config, count(V.VFIO_PCI_MSI_IRQ_INDEX)), this.#ctx)
        : undefined;
    const pin = d.config.io.read(PCI.PCI_INTERRUPT_PIN, 1);
    this.#intx =
      this.opts.intx !== false && pin !== 0 && count(V.VFIO_PCI_INTX_IRQ_INDEX) > 0
        ? new Intx(this.#ctx, this.#vfio, this.opts.intxGsi)
        : undefined;
    if (restored) {
      const m = this.mode;
      if (m === MODE.MSIX) this.#msix?.resume();
      else if (m === MODE.MSI) this.#msi?.resume();
    } else this.#reconcile();
    this.#start();
  }

  // ---- MsixTableListener (called from the ring handler)

  vectorChanged(v: number): void {
    if (this.mode === MODE.MSIX) this.#msix?.sync(v);
  }

  pbaRead(): void {
    this.#takeFirings();
    if (this.mode === MODE.MSIX) this.#msix?.pollMasked();
  }

  // ---- mode

  #reconcile(): void {
    const c = this.#config;
    if (!c) return;
    const want =
      this.#msix && c.msixEnabled
        ? MODE.MSIX
        : this.#msi?.src.enabled()
          ? MODE.MSI
          : this.#intx
            ? MODE.INTX
            : MODE.NONE;
    const cur = this.mode;
    if (want === cur) {
      if (want === MODE.MSIX) this.#msix!.syncAll();
      else if (want === MODE.MSI) {
        const msi = this.#msi!;
        if (msi.vfioCount !== Math.max(msi.src.active(), 1)) {
          msi.disable();
          msi.enable();
        } else msi.syncAll();
      }
      return;
    }
    this.#leave(cur);
    Atomics.store(this.views.hdr, IRQ.MODE, want);
    if (want === MODE.MSIX) this.#msix!.enable();
    else if (want === MODE.MSI) this.#msi!.enable();
    else if (want === MODE.INTX) this.#intx!.enable();
  }

  #leave(mode: number): void {
    if (mode === MODE.MSIX) this.#msix?.disable();
    else if (mode === MODE.MSI) this.#msi?.disable();
    else if (mode === MODE.INTX) this.#intx?.disable();
  }

  /** Everything off in VFIO and KVM (before a reset, or at shutdown). */
  async quiesce(): Promise<void> {
    this.#takeFirings();
    this.#leave(this.mode);
    Atomics.store(this.views.hdr, IRQ.MODE, MODE.NONE);
    await this.settled();
  }

  /** Resolves once every route change made so far has been committed (or refused). */
  async settled(): Promise<void> {
    await Promise.all([this.#msix?.settled(), this.#msi?.settled(), this.#intx?.settled()]);
  }

  // ---- firings the poller handed to the worker

  #takeFirings(): void {
    takeBits(this.views.TO_WORKER, (s) => {
      if (s >= SRC.INTX) this.#intx?.fired(1);
      else if (s >= SRC.MSI) this.#msi?.fired(s - SRC.MSI);
      else this.#msix?.fired(s);
    });
  }

  #start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#loop = (async () => {
      const hdr = this.views.hdr;
      while (this.#running) {
        const seq = Atomics.load(hdr, IRQ.WORKER_SEQ);
        Atomics.store(hdr, IRQ.WORKER_SEEN, seq);
        this.#takeFirings();
        const w = Atomics.waitAsync(hdr, IRQ.WORKER_SEQ, seq);
        if (w.async) await w.value;
      }
    })();
  }

  async stop(): Promise<void> {
    this.#running = false;
    const seq = Atomics.add(this.views.hdr, IRQ.WORKER_SEQ, 1) + 1;
    Atomics.notify(this.views.hdr, IRQ.WORKER_SEQ);
    await this.#loop;
    Atomics.store(this.views.hdr, IRQ.WORKER_SEEN, seq); // this wake-up was for the loop only
  }

  status(): IrqStatus {
    const v = this.views,
      hdr = v.hdr;
    const vectors: VectorStatus[] = [];
    for (let s = 0; s < SRC.COUNT; s++) {
      if (v.USER_FD[s]! < 0 && v.KVM_FD[s]! < 0) continue;
      const t = v.TRIGGER[s]!;
      vectors.push({
        ...sourceOf(s),
        trigger: t < 0 ? 'none' : t === v.KVM_FD[s] ? 'kvm' : 'user',
        direct: Atomics.load(v.DIRECT, s) === 1,
        gsi: v.GSI[s]!,
        route:
          Atomics.load(v.ROUTED, s) === 1
            ? { lo: v.R_LO[s]! >>> 0, hi: v.R_HI[s]! >>> 0, data: v.R_DATA[s]! >>> 0 }
            : null,
        fired: Atomics.load(v.FIRED, s) >>> 0,
        delivered: Atomics.load(v.DELIVERED, s) >>> 0,
        pended: Atomics.load(v.PENDED, s) >>> 0,
      });
    }
    return {
      mode: MODE_NAMES[this.mode] ?? 'none',
      kvm: !!this.#ctx.kvm,
      vfioVectors: {
        msix: Atomics.load(hdr, IRQ.MSIX_COUNT),
        msi: Atomics.load(hdr, IRQ.MSI_COUNT),
      },
      msixResizable: this.#vfio?.canResize(V.VFIO_PCI_MSIX_IRQ_INDEX) ?? false,
      routeUpdates: Atomics.load(hdr, IRQ.ROUTE_UPDATES),
      vectors,
      errors: [...this.errors],
    };
  }
}
