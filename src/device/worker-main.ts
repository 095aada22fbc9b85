// The device worker's body: set up the device, its interrupts and the ring server, and answer the
// coordinator's control calls (DeviceControl) on `port`. One call per worker incarnation; a
// restarted worker resumes from the shared state its predecessor left (AssignedDevice.restored).
// workers/device-worker.ts calls it in a worker thread; tests call it with their own port and a
// synthetic device (`deps`).
import type { MessagePort } from 'node:worker_threads';
import * as vfio from '../../native/vfio.js';
import { Comlink, installErrorTransfer, nodeEndpoint } from '../control/comlink-node.js';
import { DeviceInterrupts, type InterruptOptions } from '../irq/device-interrupts.js';
import type { RouterPort } from '../irq/gsi-router.js';
import { IRQ, irqViews } from '../irq/irq-state.js';
import { statsRecord } from '../metrics/read-counters.js';
import { C_WORKER_STARTS } from '../metrics/schema.js';
import { STATUS } from '../ring/protocol.js';
import { type Handler, RingServer } from '../ring/server.js';
import { AssignedDevice, type DeviceDescription } from './assigned-device.js';
import type { ConfigHooks } from './config-space.js';
import { faultyHandler } from './faults.js';
import { RESTORE, restoreViews } from './shared-state.js';
import {
  type DeviceControl,
  type DeviceWorkerData,
  type SetIrqsRequest,
  STANDBY,
} from './worker-contract.js';

/** What the worker serves: an AssignedDevice, or a synthetic one in tests. */
export interface WorkerDevice {
  handle: Handler;
  describe(): DeviceDescription;
  readonly restored: boolean;
}

/** How the worker makes its device; the default opens the VFIO device (AssignedDevice). */
export interface WorkerDeps {
  open(data: DeviceWorkerData, hooks: ConfigHooks): WorkerDevice;
  /** VFIO_DEVICE_RESET (before the device is made again with its state at power-on values). */
  reset(data: DeviceWorkerData): void;
  /** VFIO_DEVICE_SET_IRQS for a client that owns the interrupts ('external'); absent: no interrupts. */
  setIrqs?(data: DeviceWorkerData, req: SetIrqsRequest): void;
}

const vfioDeps: WorkerDeps = {
  open: (data, hooks) =>
    new AssignedDevice({ fd: data.fd, path: data.path }, data.name, data.memory, hooks),
  reset: (data) => vfio.deviceReset({ fd: data.fd, path: data.path }),
  setIrqs: (data, r) =>
    vfio.deviceSetIrqs(
      { fd: data.fd, path: data.path },
      r.index,
      r.start,
      r.count,
      r.flags,
      r.data,
    ),
};

/** A running worker body: its control API (also exposed on the port) and its ring server. */
export interface DeviceWorker {
  api: DeviceControl;
  server: RingServer;
}

export function startDeviceWorker(
  data: DeviceWorkerData,
  port: MessagePort,
  deps: WorkerDeps = vfioDeps,
): DeviceWorker {
  installErrorTransfer();
  const stats = new Float64Array(data.memory.stats);
  stats[C_WORKER_STARTS]!++;
  const irq = new DeviceInterrupts(data.memory.irq, interruptOptions(data));
  // With 'external' interrupts the client drives SET_IRQS; the emulated capability only records
  // what the client writes (no hooks), and the worker's interrupt logic stays detached.
  const external = data.interrupts === 'external';

  let device: WorkerDevice | undefined;
  let setupError: unknown;
  const open = (): WorkerDevice => {
    const d = deps.open(data, external ? {} : irq.hooks);
    // Interrupts need a VFIO device; a synthetic one has none.
    if (d instanceof AssignedDevice && !external) irq.attach(d, d.restored);
    return d;
  };
  try {
    device = open();
  } catch (e) {
    setupError = e;
  }

  // While serving, the worker turns its event loop when the coordinator or the GSI router posts
  // to it (they bump the ring's attention word) and while the irq poller has handed it firings
  // its interrupt loop has not taken yet (WORKER_SEQ ahead of WORKER_SEEN).
  const serve: Handler = (req) => (device ? device.handle(req) : STATUS.NOT_READY);
  const server = new RingServer(
    data.ring,
    data.faults ? faultyHandler(serve, data.faults.spec, data.faults.ctl, stats) : serve,
    {
      ...data.serve,
      watch: [[irqViews(data.memory.irq).hdr, IRQ.WORKER_SEQ, IRQ.WORKER_SEEN]],
      counters: stats,
    },
  );
  server.start();

  const need = (): WorkerDevice => {
    if (!device) throw setupError instanceof Error ? setupError : new Error(String(setupError));
    return device;
  };

  const api: DeviceControl = {
    ready: () => need().describe(),
    describe: () => need().describe(),
    stats: () => {
      need();
      return { ...statsRecord(data.memory.stats), served: server.served };
    },
    reset: async () => {
      need();
      await irq.quiesce();
      deps.reset(data);
      Atomics.store(restoreViews(data.memory.state).flags, RESTORE.INITIALIZED, 0);
      device = open();
      return device.describe();
    },
    setIrqs: (req) => {
      need();
      if (!external)
        throw new Error(
          `${data.name}: setIrqs is for a device whose interrupts a client drives (interrupts: 'external'); this worker drives its own`,
        );
      if (!deps.setIrqs) throw new Error(`${data.name}: this device has no interrupts to set`);
      deps.setIrqs(data, req);
    },
    irqStatus: () => irq.status(),
    irqSettled: () => irq.settled(),
    shutdown: async (quiesce = true) => {
      await server.stop();
      if (quiesce && device) await irq.quiesce();
      await irq.stop();
    },
  };
  Comlink.expose(api, nodeEndpoint(port));
  return { api, server };
}

/**
 * A device worker thread's entry: serve `data` now, or, for a warm standby (data is STANDBY),
 * say so once everything is loaded (koffi, the bindings, comlink: most of a worker's start-up)
 * and wait for the device's data in an `{ activate }` message on `port`.
 */
export function runDeviceWorker(data: unknown, port: MessagePort, deps?: WorkerDeps): void {
  if (data !== STANDBY) {
    startDeviceWorker(data as DeviceWorkerData, port, deps);
    return;
  }
  port.once('message', (m: { activate: DeviceWorkerData }) => {
    startDeviceWorker(m.activate, port, deps);
  });
  port.postMessage(STANDBY);
}

function interruptOptions(data: DeviceWorkerData): InterruptOptions {
  const o: InterruptOptions = {
    ...(data.intxGsi !== undefined ? { intxGsi: data.intxGsi } : {}),
    ...(data.intx !== undefined ? { intx: data.intx } : {}),
  };
  if (data.routerPort && data.vmFd !== undefined) {
    const router = Comlink.wrap<RouterPort>(nodeEndpoint(data.routerPort));
    o.route = { update: (changes) => router.update(changes) };
    o.vm = { fd: data.vmFd, path: `kvm-vm (fd ${data.vmFd})` };
  }
  return o;
}
