// INTx for an assigned device: VFIO's INTx trigger eventfd and its unmask eventfd. With KVM and
// a GSI from the VMM, KVM_IRQFD with KVM_IRQFD_FLAG_RESAMPLE binds them (KVM asserts the pin
// and, on the guest's EOI, signals the unmask eventfd so VFIO unmasks the line). Without,
// the poller reports each assertion to the VMM, which signals the unmask eventfd after EOI.
import { VFIO_C } from '../../native/vfio.js';
import { IRQ, reportToVmm, SRC } from './irq-state.js';
import type { IrqContext } from './vector-set.js';
import type { VfioIrqs } from './vfio-irqs.js';

const INDEX = VFIO_C.VFIO_PCI_INTX_IRQ_INDEX;
const S = SRC.INTX;

export class Intx {
  readonly #inflight = new Set<Promise<unknown>>();

  constructor(
    readonly ctx: IrqContext,
    readonly vfio: VfioIrqs,
    readonly gsi: number | undefined,
  ) {}

  get enabled(): boolean {
    return this.ctx.views.TRIGGER[S]! >= 0;
  }
  get routed(): boolean {
    return !!this.ctx.kvm && this.gsi !== undefined;
  }

  enable(): void {
    const { views: v, backend } = this.ctx;
    if (this.enabled) return;
    let unmask = Atomics.load(v.hdr, IRQ.INTX_UNMASK_FD);
    if (unmask < 0) {
      unmask = backend.newEventfd();
      Atomics.store(v.hdr, IRQ.INTX_UNMASK_FD, unmask);
    }
    let fd: number;
    if (this.routed) {
      if (v.KVM_FD[S]! < 0) v.KVM_FD[S] = backend.newEventfd();
      fd = v.KVM_FD[S]!;
    } else {
      if (v.USER_FD[S]! < 0) {
        v.USER_FD[S] = backend.newEventfd();
        this.ctx.publish();
      }
      fd = v.USER_FD[S]!;
    }
    try {
      this.vfio.setTriggers(INDEX, [fd]);
      this.vfio.setIntxUnmaskFd(unmask);
    } catch (e) {
      try {
        this.vfio.disable(INDEX);
      } catch {
        /* it was not enabled */
      }
      this.ctx.error(`enabling INTx: ${(e as Error).message}`);
      return;
    }
    v.TRIGGER[S] = fd;
    if (this.routed) {
      // KVM injects what fired before the irqfd existed when it is assigned: nothing is lost.
      this.#track(
        this.ctx
          .kvm!.route.update([{ key: S, fd, gsi: this.gsi!, resampleFd: unmask, on: true }])
          .then(() => {
            v.GSI[S] = this.gsi!;
          }),
      );
    } else Atomics.store(v.DIRECT, S, 1);
  }

  disable(): void {
    const v = this.ctx.views;
    if (!this.enabled) return;
    try {
      this.vfio.disable(INDEX);
    } catch (e) {
      this.ctx.error(`disabling INTx: ${(e as Error).message}`);
    }
    v.TRIGGER[S] = -1;
    Atomics.store(v.DIRECT, S, 0);
    if (this.routed)
      this.#track(
        this.ctx
          .kvm!.route.update([
            {
              key: S,
              fd: v.KVM_FD[S]!,
              gsi: this.gsi!,
              resampleFd: Atomics.load(v.hdr, IRQ.INTX_UNMASK_FD),
              on: false,
            },
          ])
          .then(() => {
            v.GSI[S] = -1;
          }),
      );
  }

  /** A firing the poller handed to the worker (not DIRECT): report it to the VMM. */
  fired(n: number): void {
    if (this.enabled) reportToVmm(this.ctx.views, S, n);
  }

  async settled(): Promise<void> {
    while (this.#inflight.size) await Promise.allSettled([...this.#inflight]);
  }

  #track(p: Promise<unknown>): void {
    const q = p.catch((e: unknown) =>
      this.ctx.error(`INTx route on GSI ${this.gsi}: ${(e as Error).message}`),
    );
    this.#inflight.add(q);
    void q.finally(() => this.#inflight.delete(q));
  }
}
