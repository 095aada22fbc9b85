// The coordinator's handle on one device worker: it allocates the device's shared memory (ring,
// counters, restorable state), starts the worker and the device's interrupt poller, connects the
// worker to the VM's GsiRouter (KVM mode) or relays its interrupts to a callback (no KVM), and
// makes control calls that fail cleanly (instead of hanging, as a bare comlink call would) if
// the worker dies.
import { Worker, type MessagePort } from 'node:worker_threads';
import { close, type Target } from '../../native/libc.js';
import type { DeviceControl, DeviceWorkerData } from '../../workers/device-worker.js';
import { Comlink, installErrorTransfer, nodeEndpoint } from '../control/comlink-node.js';
import type { DeviceDescription } from '../device/assigned-device.js';
import type { IrqStatus } from '../device/interrupts.js';
import { signalEventfd } from '../irq/eventfd.js';
import type { GsiRouter } from '../irq/gsi-router.js';
import { IRQ, SRC, irqViews, type IrqKind } from '../irq/irq-state.js';
import { HostIrqListener, IrqPoller, type InterruptEvent } from '../irq/poller.js';
import { createDeviceMemory, type DeviceMemory } from '../device/shared-state.js';
import { RingClient, type RingClientOptions } from '../ring/client.js';
import { attentionSignal, createRingBuffer, type RingGeometry } from '../ring/protocol.js';
import { closeRing, type RingServeOptions } from '../ring/server.js';
import { WorkerExitedError } from '../errors.js';

const WORKER_URL = new URL('../../workers/device-worker.js', import.meta.url);

export interface DeviceHostOptions {
  name: string;
  /** The device's VFIO fd; the caller keeps ownership (and closes it after shutdown). */
  device: Target;
  ring?: RingGeometry;
  /** How the worker serves the ring (spin budget, longest stretch without an event-loop turn); defaults in RingServeOptions. */
  serve?: RingServeOptions;
  /** KVM mode: the VM's GSI router (its VM fd is used for routes and KVM_SIGNAL_MSI). Absent: relay mode. */
  router?: GsiRouter;
  /** KVM mode: the GSI the VMM wired the device's INTx pin to (else INTx is relayed). */
  intxGsi?: number;
  /** Enable INTx while MSI/MSI-X are off (default true, as QEMU). */
  intx?: boolean;
  /** Relay mode: called (on this thread) for each interrupt the device raises on an unmasked vector. */
  onInterrupt?: (e: InterruptEvent) => void;
}

export type { InterruptEvent };

/** The error a control call to a dead worker rejects with (VFR_ERR_WORKER_EXITED); the old name stays. */
export { WorkerExitedError as DeviceWorkerExit } from '../errors.js';

export class DeviceHost {
  readonly name: string;
  readonly ring: SharedArrayBuffer;
  readonly memory: DeviceMemory;
  description!: DeviceDescription;
  #worker!: Worker;
  #api!: Comlink.Remote<DeviceControl>;
  #exit!: Promise<never>;
  #exitCode: number | undefined;
  #poller: IrqPoller | undefined;
  #listener: HostIrqListener | undefined;
  #routerLink: { port: MessagePort; close: () => void } | undefined;

  private constructor(readonly opts: DeviceHostOptions) {
    this.name = opts.name;
    this.ring = createRingBuffer(opts.ring);
    this.memory = createDeviceMemory();
  }

  static async start(opts: DeviceHostOptions): Promise<DeviceHost> {
    installErrorTransfer();
    const host = new DeviceHost(opts);
    host.#poller = IrqPoller.start(host.memory.irq, opts.name);
    host.#listener = new HostIrqListener(host.memory.irq, (e) => host.opts.onInterrupt?.(e));
    try { await host.#spawn(); } catch (e) { await host.#stopIrqs(); throw e; }
    return host;
  }

  async #spawn(): Promise<void> {
    const data: DeviceWorkerData = { name: this.name, fd: this.opts.device.fd, path: this.opts.device.path, ring: this.ring, memory: this.memory };
    if (this.opts.intxGsi !== undefined) data.intxGsi = this.opts.intxGsi;
    if (this.opts.intx !== undefined) data.intx = this.opts.intx;
    if (this.opts.serve) data.serve = { ...this.opts.serve };
    const transfer: MessagePort[] = [];
    if (this.opts.router) {
      this.#routerLink?.close();
      this.#routerLink = this.opts.router.connect(this.name, attentionSignal(this.ring));
      data.routerPort = this.#routerLink.port;
      data.vmFd = this.opts.router.vm.fd;
      transfer.push(this.#routerLink.port);
    }
    this.#worker = new Worker(WORKER_URL, { workerData: data, name: `device:${this.name}`, transferList: transfer });
    this.#exitCode = undefined;
    this.#exit = new Promise<never>((_, reject) => {
      const fail = (why: string, code?: number): void => reject(new WorkerExitedError(`device worker ${this.name} ${why}`, this.name, code));
      this.#worker.once('exit', (code) => { this.#exitCode = code; fail(`exited (code ${code})`, code); });
      this.#worker.once('error', (e) => fail(`crashed: ${e.message}`));
    });
    this.#exit.catch(() => {}); // observed by #call; never unhandled
    this.#api = Comlink.wrap<DeviceControl>(nodeEndpoint(this.#worker, attentionSignal(this.ring)));
    try {
      this.description = await this.#call(() => this.#api.ready());
    } catch (e) {
      await this.#worker.terminate();
      throw e;
    }
  }

  /** A control call that rejects if the worker exits before answering. */
  #call<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#exitCode !== undefined) return Promise.reject(new WorkerExitedError(`device worker ${this.name} is not running`, this.name, this.#exitCode));
    return Promise.race([fn(), this.#exit]);
  }

  get worker(): Worker { return this.#worker; }

  /** A ring client for this thread; other threads build their own from `ring`. */
  client(opts?: RingClientOptions): RingClient { return new RingClient(this.ring, opts); }

  describe(): Promise<DeviceDescription> { return this.#call(() => this.#api.describe()); }
  stats(): Promise<Awaited<ReturnType<DeviceControl['stats']>>> { return this.#call(() => this.#api.stats()); }
  async reset(): Promise<DeviceDescription> { return (this.description = await this.#call(() => this.#api.reset())); }

  /** Interrupt mode, per-vector VFIO triggers, committed routes and counters (from the worker). */
  irqStatus(): Promise<IrqStatus> { return this.#call(() => this.#api.irqStatus()); }
  /** Resolves once every route change the guest's programming caused so far is committed in KVM. */
  irqSettled(): Promise<void> { return this.#call(() => this.#api.irqSettled()); }

  /** Relay mode, INTx: the guest has EOId the line; let VFIO unmask it. */
  intxEoi(): void {
    const fd = Atomics.load(irqViews(this.memory.irq).hdr, IRQ.INTX_UNMASK_FD);
    if (fd < 0) throw new Error(`${this.name}: INTx is not enabled`);
    signalEventfd(fd);
  }

  /** Counters of one source, straight from shared memory (no call to the worker). */
  interruptCounts(kind: IrqKind, vector: number): { fired: number; delivered: number; pended: number } {
    const v = irqViews(this.memory.irq), s = (kind === 'msix' ? SRC.MSIX : kind === 'msi' ? SRC.MSI : SRC.INTX) + vector;
    return { fired: Atomics.load(v.FIRED, s) >>> 0, delivered: Atomics.load(v.DELIVERED, s) >>> 0, pended: Atomics.load(v.PENDED, s) >>> 0 };
  }

  /** Stop the worker (interrupts off in VFIO and KVM), the poller, and close the ring (producers still waiting get RingClosedError). */
  async shutdown(): Promise<void> {
    if (this.#exitCode === undefined) {
      await this.#call(() => this.#api.shutdown()).catch(() => {});
      await this.#worker.terminate();
    }
    await this.#stopIrqs();
    closeRing(this.ring);
  }

  async #stopIrqs(): Promise<void> {
    this.#routerLink?.close();
    this.#routerLink = undefined;
    await this.opts.router?.release(this.name).catch((e: unknown) => console.error(`${this.name}: releasing routes: ${(e as Error).message}`));
    this.#listener?.stop();
    await this.#poller?.stop();
    // The eventfds outlive workers (a restarted worker reuses them); they go with the device.
    const v = irqViews(this.memory.irq);
    for (const a of [v.USER_FD, v.KVM_FD]) for (let s = 0; s < SRC.COUNT; s++) if (a[s]! >= 0) { close(a[s]!); a[s] = -1; }
    const unmask = v.hdr[IRQ.INTX_UNMASK_FD]!;
    if (unmask >= 0) { close(unmask); v.hdr[IRQ.INTX_UNMASK_FD] = -1; }
    this.#poller = undefined;
    this.#listener = undefined;
  }
}
