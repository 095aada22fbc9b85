// The coordinator's handle on one device worker: it allocates the device's shared memory (ring,
// counters, restorable state), starts the worker and the device's interrupt poller, connects the
// worker to the VM's GsiRouter (KVM mode) or relays its interrupts to a callback (no KVM), and
// makes control calls that fail cleanly (instead of hanging, as a bare comlink call would) if
// the worker dies. Its lifecycle is explicit (state, onExit) and respawn() starts a new worker
// on the same ring, fd, shared state, eventfds, poller and router link: the seam a supervisor's
// restart policy builds on.
import { type MessagePort, Worker } from 'node:worker_threads';
import { close, type Target } from '../../native/libc.js';
import { Comlink, installErrorTransfer, nodeEndpoint } from '../control/comlink-node.js';
import type { DeviceDescription } from '../device/assigned-device.js';
import {
  armFault,
  closeHangFd,
  createFaultCtl,
  type FaultKind,
  type FaultSpec,
  parseFaultSpec,
  releaseHang,
} from '../device/faults.js';
import { createDeviceMemory, type DeviceMemory } from '../device/shared-state.js';
import type {
  DeviceControl,
  DeviceStats,
  DeviceWorkerData,
  InterruptOwner,
  SetIrqsRequest,
} from '../device/worker-contract.js';
import { DeviceFailedError, WorkerExitedError } from '../errors.js';
import type { IrqStatus } from '../irq/device-interrupts.js';
import { signalEventfd } from '../irq/eventfd.js';
import type { GsiRouter } from '../irq/gsi-router.js';
import { IRQ, type IrqKind, irqViews, SRC } from '../irq/irq-state.js';
import { type InterruptEvent, IrqPoller, VmmIrqListener } from '../irq/poller.js';
import { type CounterRow, readCounters } from '../metrics/read-counters.js';
import { RingClient, type RingClientOptions } from '../ring/client.js';
import { attentionSignal, createRingBuffer, type RingGeometry } from '../ring/protocol.js';
import { closeRing, type RingServeTuning } from '../ring/server.js';
import { standbyPool } from './standby.js';
import type { SupervisorOptions } from './supervisor.js';

const WORKER_URL = new URL('../../workers/device-worker.js', import.meta.url);

export interface DeviceHandleOptions {
  name: string;
  /** The device's VFIO fd; the caller keeps ownership (and closes it after shutdown). */
  device: Target;
  ring?: RingGeometry;
  /** How the worker serves the ring (spin budget, longest stretch without an event-loop turn); defaults in RingServeTuning. */
  serve?: RingServeTuning;
  /** KVM mode: the VM's GSI router (its VM fd is used for routes and KVM_SIGNAL_MSI). Absent: relay mode. */
  router?: GsiRouter;
  /** KVM mode: the GSI the VMM wired the device's INTx pin to (else INTx is relayed). */
  intxGsi?: number;
  /** Enable INTx while MSI/MSI-X are off (default true, as QEMU). */
  intx?: boolean;
  /** 'external': a client (vfio-user) drives the interrupts through setIrqs(); see DeviceWorkerData. */
  interrupts?: InterruptOwner;
  /** Relay mode: called (on this thread) for each interrupt the device raises on an unmasked vector. */
  onInterrupt?: (e: InterruptEvent) => void;
  /** The worker's entry (default workers/device-worker.js); tests start a synthetic device. */
  workerUrl?: URL;
  /**
   * How long shutdown() and respawn() wait for the worker to stop serving before terminating
   * it, in ms (default 2000): a worker stuck in a device call never answers.
   */
  stopGraceMs?: number;
  /**
   * Fault injection (src/device/faults.ts), off by default: a spec, or false for none even if
   * the VFR_FAULTS environment variable asks for some (it applies when this is absent).
   */
  faults?: FaultSpec | false;
  /**
   * Start and restart the worker from a warm standby (src/coordinator/standby.ts): a thread that
   * has loaded the worker's modules already, so a restart costs the device's setup, not a
   * worker's start-up. Default false: the standby costs a thread and its start-up CPU (~9 s in
   * the lab's TCG guest), which a VM booting beside it would feel.
   */
  standby?: boolean;
  /** Supervise the worker (src/coordinator/supervisor.ts); used by Runtime, not by the handle. */
  supervise?: SupervisorOptions | boolean;
}

export type { InterruptEvent };

/**
 * starting: a worker is being started (start, respawn); running: it answered ready();
 * exited: it exited or crashed on its own (respawn() starts another); stopped: shutdown();
 * failed: given up (fail(), by its supervisor; a worker stuck in a kernel call is one): control
 * calls and respawn() reject with DeviceFailedError, shutdown() still releases what it can.
 */
export type DeviceHandleState = 'starting' | 'running' | 'exited' | 'stopped' | 'failed';

/** A worker's end, as onExit reports it. */
export interface DeviceWorkerExitEvent {
  /** The worker's exit code (1 after an uncaught error, also for terminate()). */
  code: number;
  /** The uncaught error that ended it, if one did. */
  error?: Error;
  /** true: shutdown() or respawn() ended it; false: it died on its own. */
  planned: boolean;
  /** The worker incarnation (1 for the first). */
  incarnation: number;
}

export class DeviceHandle {
  readonly name: string;
  readonly ring: SharedArrayBuffer;
  readonly memory: DeviceMemory;
  description!: DeviceDescription;
  #worker!: Worker;
  #api!: Comlink.Remote<DeviceControl>;
  #exit!: Promise<never>;
  #exitCode: number | undefined;
  #state: DeviceHandleState = 'starting';
  /** Set while shutdown() or respawn() ends the current worker on purpose. */
  #planned = false;
  #incarnation = 0;
  readonly #exitListeners = new Set<(e: DeviceWorkerExitEvent) => void>();
  #poller: IrqPoller | undefined;
  #listener: VmmIrqListener | undefined;
  #routerLink: { port: MessagePort; close: () => void } | undefined;
  /** Fault injection: the spec and the control words shared with each worker (undefined: off). */
  readonly #faults: { spec: FaultSpec; ctl: SharedArrayBuffer } | undefined;
  /** Set by fail(): why the device was given up. */
  #failure: DeviceFailedError | undefined;
  /** A worker that did not exit when terminated (stuck in a kernel call); it ends when the call returns. */
  #stuck: Worker | undefined;

  private constructor(readonly opts: DeviceHandleOptions) {
    this.name = opts.name;
    this.ring = createRingBuffer(opts.ring);
    this.memory = createDeviceMemory();
    const spec =
      opts.faults === false ? undefined : (opts.faults ?? parseFaultSpec(process.env.VFR_FAULTS));
    this.#faults = spec ? { spec, ctl: createFaultCtl() } : undefined;
  }

  static async start(opts: DeviceHandleOptions): Promise<DeviceHandle> {
    installErrorTransfer();
    const handle = new DeviceHandle(opts);
    handle.#poller = IrqPoller.start(handle.memory.irq, opts.name);
    handle.#listener = new VmmIrqListener(handle.memory.irq, (e) => handle.opts.onInterrupt?.(e));
    if (opts.standby) standbyPool.acquire(opts.workerUrl ?? WORKER_URL);
    try {
      await handle.#spawn();
    } catch (e) {
      await handle.#stopIrqs();
      await releaseStandby(opts);
      throw e;
    }
    return handle;
  }

  /** Workers started for this device so far (1 for the first; a respawn adds one). */
  get incarnation(): number {
    return this.#incarnation;
  }

  /** Where the worker's lifecycle is (see DeviceHandleState). */
  get state(): DeviceHandleState {
    return this.#state;
  }

  /**
   * Call `cb` whenever a worker of this device ends (planned or not), after its control calls
   * have been rejected. Returns a function that unsubscribes.
   */
  onExit(cb: (e: DeviceWorkerExitEvent) => void): () => void {
    this.#exitListeners.add(cb);
    return () => {
      this.#exitListeners.delete(cb);
    };
  }

  /**
   * Start a new worker on the same ring, device fd, shared state, eventfds, poller and router
   * (a new router port). A running worker is stopped first, interrupts left on (its successor
   * resumes them). Requests it had taken but not completed are completed as
   * STATUS.WORKER_DIED by the new worker's ring server; queued ones are served once each.
   */
  async respawn(opts: { graceMs?: number } = {}): Promise<DeviceDescription> {
    if (this.#failure) throw this.#failure;
    if (this.#state === 'stopped')
      throw new Error(`device ${this.name} is shut down; add it again to start a new worker`);
    if (this.#state === 'starting')
      throw new Error(`device ${this.name}'s worker is starting; await start() or respawn() first`);
    if (this.#exitCode === undefined) await this.#endWorker(false, opts.graceMs);
    this.#state = 'starting';
    try {
      await this.#spawn();
    } catch (e) {
      if (!this.#failure) this.#state = 'exited';
      throw e;
    }
    return this.description;
  }

  /**
   * End the current worker on purpose: a shutdown call (if it answers within `graceMs`; 0 skips
   * it), then terminate. A worker that has not exited `stopGraceMs` after terminate() is stuck in
   * a kernel call (terminate() cannot interrupt one): DeviceFailedError 'stuck'; it ends by itself
   * when the call returns (its requests are fenced off the ring: see RingServer #serveNext).
   */
  async #endWorker(quiesce: boolean, graceMs = this.opts.stopGraceMs ?? 2000): Promise<void> {
    this.#planned = true;
    const worker = this.#worker;
    try {
      if (graceMs > 0)
        await within(
          this.#call(() => this.#api.shutdown(quiesce)).catch(() => {}),
          graceMs,
        );
      const exited = await within(
        worker.terminate().then(() => true),
        this.opts.stopGraceMs ?? 2000,
      );
      if (exited !== true) {
        this.#stuck = worker;
        this.#state = 'failed';
        throw (this.#failure = new DeviceFailedError(
          `device worker ${this.name} did not end when terminated: it is stuck in a kernel call ` +
            '(a hung device); it ends when the call returns. Remove the device, then reset or ' +
            'unbind the function',
          this.name,
          'stuck',
        ));
      }
    } finally {
      this.#planned = false;
    }
  }

  /**
   * Give the device up (its supervisor does, after too many restarts or a stuck worker): state
   * failed, control calls and respawn() reject with `error`, a live worker is terminated
   * (resolves when it ended, or stopGraceMs later). The ring is the supervisor's to answer (it
   * completes requests as DEVICE_FAILED); shutdown() still releases everything.
   */
  async fail(error: DeviceFailedError): Promise<void> {
    if (this.#state === 'stopped') return;
    this.#failure = error;
    this.#state = 'failed';
    if (this.#exitCode === undefined && !this.#stuck) {
      // Resolves once it exited, or after stopGraceMs (then it is stuck and fenced off the ring).
      this.#planned = true;
      await within(this.#worker.terminate(), this.opts.stopGraceMs ?? 2000);
      this.#planned = false;
    }
  }

  /** Why the device was given up (fail()), if it was. */
  get failure(): DeviceFailedError | undefined {
    return this.#failure;
  }

  /** Fault injection is on for this device (DeviceHandleOptions.faults or VFR_FAULTS). */
  get faultsEnabled(): boolean {
    return this.#faults !== undefined;
  }

  /** Inject `kind` into the worker's next request (needs fault injection on: faults option). */
  injectFault(kind: FaultKind): void {
    if (!this.#faults)
      throw new Error(
        `${this.name}: fault injection is off; start the device with the faults option (or VFR_FAULTS)`,
      );
    armFault(this.#faults.ctl, kind);
  }

  /** Is a loaded standby worker waiting for this device's restart (standby option)? */
  get standbyWarm(): boolean {
    return this.opts.standby === true && standbyPool.warm(this.opts.workerUrl ?? WORKER_URL);
  }

  /** Let a worker blocked by a hang fault return from its kernel call (true if one was). */
  releaseHang(): boolean {
    return this.#faults ? releaseHang(this.#faults.ctl) : false;
  }

  async #spawn(): Promise<void> {
    const data: DeviceWorkerData = {
      name: this.name,
      fd: this.opts.device.fd,
      path: this.opts.device.path,
      ring: this.ring,
      memory: this.memory,
    };
    if (this.opts.intxGsi !== undefined) data.intxGsi = this.opts.intxGsi;
    if (this.opts.intx !== undefined) data.intx = this.opts.intx;
    if (this.opts.interrupts) data.interrupts = this.opts.interrupts;
    if (this.opts.serve) data.serve = { ...this.opts.serve };
    if (this.#faults) data.faults = { spec: { ...this.#faults.spec }, ctl: this.#faults.ctl };
    const transfer: MessagePort[] = [];
    if (this.opts.router) {
      this.#routerLink?.close();
      this.#routerLink = this.opts.router.connect(this.name, attentionSignal(this.ring));
      data.routerPort = this.#routerLink.port;
      data.vmFd = this.opts.router.vm.fd;
      transfer.push(this.#routerLink.port);
    }
    const url = this.opts.workerUrl ?? WORKER_URL;
    const warm = this.opts.standby ? standbyPool.take(url) : undefined;
    const worker =
      warm ??
      new Worker(url, { workerData: data, name: `device:${this.name}`, transferList: transfer });
    warm?.postMessage({ activate: data }, transfer);
    const incarnation = ++this.#incarnation;
    this.#worker = worker;
    this.#exitCode = undefined;
    let error: Error | undefined;
    this.#exit = new Promise<never>((_, reject) => {
      const fail = (why: string, code?: number): void =>
        reject(new WorkerExitedError(`device worker ${this.name} ${why}`, this.name, code));
      worker.once('exit', (code) => {
        if (this.#faults) closeHangFd(this.#faults.ctl);
        if (this.#stuck === worker) this.#stuck = undefined;
        this.#exitCode = code;
        fail(`exited (code ${code})`, code);
        this.#exited({ code, ...(error ? { error } : {}), planned: this.#planned, incarnation });
      });
      worker.once('error', (e) => {
        error = e;
        fail(`crashed: ${e.message}`);
      });
    });
    this.#exit.catch(() => {}); // observed by #call; never unhandled
    this.#api = Comlink.wrap<DeviceControl>(nodeEndpoint(worker, attentionSignal(this.ring)));
    try {
      this.description = await this.#call(() => this.#api.ready());
    } catch (e) {
      this.#planned = true;
      try {
        await worker.terminate();
      } finally {
        this.#planned = false;
      }
      throw e;
    }
    if (!this.#failure) this.#state = 'running';
  }

  /** A worker's 'exit': its state, then the listeners (after #call's rejections are queued). */
  #exited(e: DeviceWorkerExitEvent): void {
    if (this.#state === 'running') this.#state = 'exited';
    for (const cb of this.#exitListeners) {
      try {
        cb(e);
      } catch (err) {
        console.error(`${this.name}: an onExit listener threw: ${(err as Error).message}`);
      }
    }
  }

  /** A control call that rejects if the worker exits before answering. */
  #call<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#failure) return Promise.reject(this.#failure);
    if (this.#exitCode !== undefined)
      return Promise.reject(
        new WorkerExitedError(
          `device worker ${this.name} is not running`,
          this.name,
          this.#exitCode,
        ),
      );
    return Promise.race([fn(), this.#exit]);
  }

  get worker(): Worker {
    return this.#worker;
  }

  /** A ring client for this thread; other threads build their own from `ring`. */
  client(opts?: RingClientOptions): RingClient {
    return new RingClient(this.ring, opts);
  }

  describe(): Promise<DeviceDescription> {
    return this.#call(() => this.#api.describe());
  }
  stats(): Promise<DeviceStats> {
    return this.#call(() => this.#api.stats());
  }

  /** Every declared counter (src/metrics/schema.ts), straight from shared memory (no call to the worker). */
  counters(): CounterRow[] {
    return readCounters(this.memory);
  }
  async reset(): Promise<DeviceDescription> {
    return (this.description = await this.#call(() => this.#api.reset()));
  }

  /** 'external' interrupts: VFIO_DEVICE_SET_IRQS with the client's eventfds, by the worker. */
  setIrqs(req: SetIrqsRequest): Promise<void> {
    return this.#call(() => this.#api.setIrqs(req));
  }

  /** Interrupt mode, per-vector VFIO triggers, committed routes and counters (from the worker). */
  irqStatus(): Promise<IrqStatus> {
    return this.#call(() => this.#api.irqStatus());
  }
  /** Resolves once every route change the guest's programming caused so far is committed in KVM. */
  irqSettled(): Promise<void> {
    return this.#call(() => this.#api.irqSettled());
  }

  /** Relay mode, INTx: the guest has EOId the line; let VFIO unmask it. */
  intxEoi(): void {
    const fd = Atomics.load(irqViews(this.memory.irq).hdr, IRQ.INTX_UNMASK_FD);
    if (fd < 0) throw new Error(`${this.name}: INTx is not enabled`);
    signalEventfd(fd);
  }

  /** Counters of one source, straight from shared memory (no call to the worker). */
  interruptCounts(
    kind: IrqKind,
    vector: number,
  ): { fired: number; delivered: number; pended: number } {
    const v = irqViews(this.memory.irq),
      s = (kind === 'msix' ? SRC.MSIX : kind === 'msi' ? SRC.MSI : SRC.INTX) + vector;
    return {
      fired: Atomics.load(v.FIRED, s) >>> 0,
      delivered: Atomics.load(v.DELIVERED, s) >>> 0,
      pended: Atomics.load(v.PENDED, s) >>> 0,
    };
  }

  /**
   * Close the ring now: every producer waiting on it (for a completion or a free slot) wakes with
   * RingClosedError, as does any later request not completed at once; the worker is left as it
   * is. A VMM whose guest is over ends its vCPUs' waits on a device that no longer answers so.
   */
  abortRequests(): void {
    closeRing(this.ring);
  }

  /** Stop the worker (interrupts off in VFIO and KVM), the poller, and close the ring (producers still waiting get RingClosedError). */
  async shutdown(): Promise<void> {
    if (this.#state === 'stopped') return;
    if (this.#exitCode === undefined && !this.#stuck && !this.#failure)
      await this.#endWorker(true).catch((e: unknown) => {
        if (!(e instanceof DeviceFailedError)) throw e;
      });
    else if (this.#exitCode === undefined) await within(this.#worker.terminate(), 100);
    this.#state = 'stopped';
    await releaseStandby(this.opts);
    await this.#stopIrqs();
    closeRing(this.ring);
  }

  async #stopIrqs(): Promise<void> {
    this.#routerLink?.close();
    this.#routerLink = undefined;
    await this.opts.router
      ?.release(this.name)
      .catch((e: unknown) =>
        console.error(`${this.name}: releasing routes: ${(e as Error).message}`),
      );
    this.#listener?.stop();
    await this.#poller?.stop();
    // The eventfds outlive workers (a restarted worker reuses them); they go with the device.
    const v = irqViews(this.memory.irq);
    for (const a of [v.USER_FD, v.KVM_FD])
      for (let s = 0; s < SRC.COUNT; s++)
        if (a[s]! >= 0) {
          close(a[s]!);
          a[s] = -1;
        }
    const unmask = v.hdr[IRQ.INTX_UNMASK_FD]!;
    if (unmask >= 0) {
      close(unmask);
      v.hdr[IRQ.INTX_UNMASK_FD] = -1;
    }
    this.#poller = undefined;
    this.#listener = undefined;
  }
}

/**
 * How long a shutdown waits for the last standby to end. A standby still loading ends once it
 * has loaded (standby.ts): ~150 ms on a host, 3-5 s (up to ~9 s) in the lab's TCG guest, where a
 * 2 s bound let a lab test's shutdown return while its standby still held 5 module files open.
 */
const STANDBY_END_MS = 30_000;

/** A handle with `standby` on is done with the pool: the last one's standby ends (bounded). */
async function releaseStandby(opts: DeviceHandleOptions): Promise<void> {
  if (opts.standby) await within(standbyPool.release(opts.workerUrl ?? WORKER_URL), STANDBY_END_MS);
}

/** `p`'s value, or undefined if it takes longer than `ms`. */
async function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((r) => {
    timer = setTimeout(() => r(undefined), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}
