// VFIO_DEVICE_SET_IRQS as the interrupt logic uses it, on a real device fd: one reused buffer
// for the single-vector trigger switches that masking and unmasking make (no allocation on
// that path), whole-index enable/disable, the INTx unmask eventfd; and eventfd creation/reads.

import { errnoNumber } from '../../native/errno.js';
import { offsetOf } from '../../native/layout.js';
import { check, errno, raw, type Target } from '../../native/libc.js';
import * as vfio from '../../native/vfio.js';
import { createEventfd } from './eventfd.js';
import type { IrqBackend } from './vector-set.js';

const V = vfio.VFIO_C;
const EAGAIN = errnoNumber('EAGAIN');
const INDEX_NAMES = ['INTx', 'MSI', 'MSI-X', 'ERR', 'REQ'];
/** Where the eventfd goes in vfio_irq_set (offsetOf splits its path: an array per call). */
const DATA_OFFSET = offsetOf(vfio.vfio_irq_set, 'data');

export class VfioIrqs implements IrqBackend {
  readonly #one = Buffer.alloc(vfio.vfio_irq_set.size + 4);
  readonly #count = Buffer.alloc(8);

  constructor(
    readonly dev: Target,
    readonly infos: readonly vfio.IrqInfo[],
  ) {}

  count(index: number): number {
    return this.infos[index]?.count ?? 0;
  }
  flags(index: number): number {
    return this.infos[index]?.flags ?? 0;
  }
  canResize(index: number): boolean {
    return (this.flags(index) & V.VFIO_IRQ_INFO_NORESIZE) === 0;
  }

  setTrigger(index: number, vector: number, fd: number): void {
    const b = this.#one;
    b.writeUInt32LE(b.length, 0);
    b.writeUInt32LE(V.VFIO_IRQ_SET_DATA_EVENTFD | V.VFIO_IRQ_SET_ACTION_TRIGGER, 4);
    b.writeUInt32LE(index, 8);
    b.writeUInt32LE(vector, 12);
    b.writeUInt32LE(1, 16);
    b.writeInt32LE(fd, DATA_OFFSET);
    // The target text is built only on failure (this runs in MMIO writes: mask, unmask).
    const r = raw.ioctlPtr(this.dev.fd, vfio.VFIO.VFIO_DEVICE_SET_IRQS, b);
    if (r < 0)
      check(
        r,
        'VFIO_DEVICE_SET_IRQS',
        `${this.dev.path} (${INDEX_NAMES[index]} vector ${vector} → fd ${fd})`,
      );
  }

  setTriggers(index: number, fds: readonly number[]): void {
    this.#call(`${INDEX_NAMES[index]} enable, ${fds.length} vector(s)`, () =>
      vfio.deviceSetIrqs(
        this.dev,
        index,
        0,
        fds.length,
        V.VFIO_IRQ_SET_DATA_EVENTFD | V.VFIO_IRQ_SET_ACTION_TRIGGER,
        fds,
      ),
    );
  }

  disable(index: number): void {
    this.#call(`${INDEX_NAMES[index]} disable`, () =>
      vfio.deviceSetIrqs(
        this.dev,
        index,
        0,
        0,
        V.VFIO_IRQ_SET_DATA_NONE | V.VFIO_IRQ_SET_ACTION_TRIGGER,
      ),
    );
  }

  /** INTx: VFIO unmasks the line when `fd` is signalled (KVM's resamplefd, or the VMM's EOI). */
  setIntxUnmaskFd(fd: number): void {
    this.#call('INTx unmask eventfd', () =>
      vfio.deviceSetIrqs(
        this.dev,
        V.VFIO_PCI_INTX_IRQ_INDEX,
        0,
        1,
        V.VFIO_IRQ_SET_DATA_EVENTFD | V.VFIO_IRQ_SET_ACTION_UNMASK,
        [fd],
      ),
    );
  }

  newEventfd(): number {
    return createEventfd().fd;
  }

  take(fd: number): number {
    const r = raw.read(fd, this.#count, 8);
    if (r === 8) return this.#count.readUInt32LE(0) || 1;
    if (r < 0 && errno() !== EAGAIN) check(r, 'read', `eventfd ${fd}`);
    return 0;
  }

  #call(what: string, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      throw Object.assign(new Error(`${(e as Error).message} (${what})`), {
        code: (e as { code?: string }).code,
      });
    }
  }
}
