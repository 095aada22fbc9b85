// The device worker's contract, shared by the worker (src/device/worker-main.ts) and the
// coordinator (src/coordinator/device-handle.ts): what the worker is started with and what the
// coordinator may ask of it. Types (and one constant) only: importing it starts nothing.
import type { MessagePort } from 'node:worker_threads';
import type { IrqStatus } from '../irq/device-interrupts.js';
import type { StatKey } from '../metrics/schema.js';
import type { RingServeTuning } from '../ring/server.js';
import type { DeviceDescription } from './assigned-device.js';
import type { FaultSpec } from './faults.js';
import type { DeviceMemory } from './shared-state.js';

/** The workerData of a warm standby worker (src/coordinator/standby.ts): activated by a message. */
export const STANDBY = 'vfio-runtime:standby';

export interface DeviceWorkerData {
  name: string;
  /** The VFIO device fd (opened, bound and attached by the coordinator; fds are process-wide). */
  fd: number;
  path: string;
  ring: SharedArrayBuffer;
  memory: DeviceMemory;
  /** KVM mode: a port to the coordinator's GsiRouter and the VM fd. Absent: interrupts are relayed to the VMM. */
  routerPort?: MessagePort;
  vmFd?: number;
  intxGsi?: number;
  /** Enable INTx while MSI/MSI-X are off (default true). */
  intx?: boolean;
  /** How the ring is served: spin budget and the longest stretch without an event-loop turn. */
  serve?: RingServeTuning;
  /** Fault injection (src/device/faults.ts): what to inject and the shared control words. */
  faults?: { spec: FaultSpec; ctl: SharedArrayBuffer };
  /**
   * Who drives the device's interrupts: 'runtime' (default) the worker, from the MSI/MSI-X
   * capability and table it emulates; 'external' a client that emulates them itself (a
   * vfio-user client, as QEMU's vfio-user-pci) and asks for VFIO_DEVICE_SET_IRQS with its own
   * eventfds through DeviceControl.setIrqs, the worker only passing them on.
   */
  interrupts?: InterruptOwner;
}

export type InterruptOwner = 'runtime' | 'external';

/** One VFIO_DEVICE_SET_IRQS as a client asks for it: `data` its eventfds or booleans. */
export interface SetIrqsRequest {
  index: number;
  start: number;
  count: number;
  /** VFIO_IRQ_SET_DATA_* | VFIO_IRQ_SET_ACTION_*, as the uAPI's vfio_irq_set.flags. */
  flags: number;
  data?: readonly number[] | readonly boolean[];
}

/**
 * The stats record: every counter declared in STATS (src/metrics/schema.ts) by key (an array's
 * slots as KEY_<index>), and `served`, the requests this worker incarnation served.
 */
export type DeviceStats = Record<StatKey, number> & { served: number };

/** What the coordinator can ask of a device worker. */
export interface DeviceControl {
  /** Resolves once the device is set up (throws its setup error); returns its description. */
  ready(): DeviceDescription;
  describe(): DeviceDescription;
  stats(): DeviceStats;
  /** VFIO_DEVICE_RESET, then the emulated state back to power-on values. */
  reset(): Promise<DeviceDescription>;
  /** Interrupt mode, per-vector triggers, routes and counters, and setup errors. */
  irqStatus(): IrqStatus;
  /** Resolves once every route change so far is committed (or refused). */
  irqSettled(): Promise<void>;
  /**
   * 'external' interrupts only: VFIO_DEVICE_SET_IRQS as the client asked (the kernel keeps its
   * own reference to each eventfd, so the caller may close its copies once this resolves).
   */
  setIrqs(req: SetIrqsRequest): void;
  /** Stop serving the ring; queued requests stay for a successor. `quiesce`: turn interrupts off first. */
  shutdown(quiesce?: boolean): Promise<void>;
}
