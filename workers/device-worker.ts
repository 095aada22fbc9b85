// The device worker: one thread per assigned device. It owns every access to the device's
// VFIO fd: it serves the device's ring (config space and BAR MMIO from any VMM thread) and
// answers the coordinator's control calls (describe, stats, reset, shutdown) over comlink, and
// runs the device's interrupts (src/device/interrupts.ts; routes go to the coordinator's GsiRouter).
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import * as vfio from '../native/vfio.js';
import { Comlink, installErrorTransfer, nodeEndpoint } from '../src/control/comlink-node.js';
import { AssignedDevice, type DeviceDescription } from '../src/device/assigned-device.js';
import { DeviceInterrupts, type InterruptOptions, type IrqStatus } from '../src/device/interrupts.js';
import type { RouterPort } from '../src/irq/gsi-router.js';
import { IRQ, irqViews } from '../src/irq/irq-state.js';
import { STAT, STATE, stateViews, type DeviceMemory } from '../src/device/shared-state.js';
import { RingServer, type RingServeOptions } from '../src/ring/server.js';
import { STATUS } from '../src/ring/protocol.js';

export interface DeviceWorkerData {
  name: string;
  /** The VFIO device fd (opened, bound and attached by the coordinator; fds are process-wide). */
  fd: number;
  path: string;
  ring: SharedArrayBuffer;
  memory: DeviceMemory;
  /** KVM mode: a port to the coordinator's GsiRouter and the VM fd. Absent: interrupts are relayed to the host. */
  routerPort?: MessagePort;
  vmFd?: number;
  intxGsi?: number;
  /** Enable INTx while MSI/MSI-X are off (default true). */
  intx?: boolean;
  /** How the ring is served: spin budget and the longest stretch without an event-loop turn. */
  serve?: RingServeOptions;
}

/** What the coordinator can ask of a device worker. */
export interface DeviceControl {
  /** Resolves once the device is set up (throws its setup error); returns its description. */
  ready(): DeviceDescription;
  describe(): DeviceDescription;
  stats(): ReturnType<AssignedDevice['stats']> & { served: number };
  /** VFIO_DEVICE_RESET, then the emulated state back to power-on values. */
  reset(): Promise<DeviceDescription>;
  /** Interrupt mode, per-vector triggers, routes and counters, and setup errors. */
  irqStatus(): IrqStatus;
  /** Resolves once every route change so far is committed (or refused). */
  irqSettled(): Promise<void>;
  /** Stop serving the ring; queued requests stay for a successor. `quiesce`: turn interrupts off first. */
  shutdown(quiesce?: boolean): Promise<void>;
}

if (!parentPort) throw new Error('device-worker must run as a worker thread');
installErrorTransfer();
const data = workerData as DeviceWorkerData;
const dev = { fd: data.fd, path: data.path };
new Float64Array(data.memory.stats)[STAT.WORKER_STARTS]!++;

const irqOpts: InterruptOptions = {
  ...(data.intxGsi !== undefined ? { intxGsi: data.intxGsi } : {}),
  ...(data.intx !== undefined ? { intx: data.intx } : {}),
};
if (data.routerPort && data.vmFd !== undefined) {
  const router = Comlink.wrap<RouterPort>(nodeEndpoint(data.routerPort));
  irqOpts.route = { update: (changes) => router.update(changes) };
  irqOpts.vm = { fd: data.vmFd, path: `kvm-vm (fd ${data.vmFd})` };
}
const irq = new DeviceInterrupts(data.memory.irq, irqOpts);

let device: AssignedDevice | undefined;
let setupError: unknown;
try {
  device = new AssignedDevice(dev, data.name, data.memory, irq.hooks);
  irq.attach(device, device.restored);
} catch (e) { setupError = e; }

// While serving, the worker turns its event loop when the coordinator or the GSI router posts to
// it (they bump the ring's attention word) and while the irq poller has handed it firings its
// interrupt loop has not taken yet (WORKER_SEQ ahead of WORKER_SEEN).
const server = new RingServer(data.ring, (req) => (device ? device.handle(req) : STATUS.NOT_READY), {
  ...data.serve,
  watch: [[irqViews(data.memory.irq).hdr, IRQ.WORKER_SEQ, IRQ.WORKER_SEEN]],
});
server.start();

const need = (): AssignedDevice => {
  if (!device) throw setupError instanceof Error ? setupError : new Error(String(setupError));
  return device;
};

const api: DeviceControl = {
  ready: () => need().describe(),
  describe: () => need().describe(),
  stats: () => ({ ...need().stats(), served: server.served }),
  reset: async () => {
    need();
    await irq.quiesce();
    vfio.deviceReset(dev);
    Atomics.store(stateViews(data.memory.state).flags, STATE.INITIALIZED, 0);
    device = new AssignedDevice(dev, data.name, data.memory, irq.hooks);
    irq.attach(device, false);
    return device.describe();
  },
  irqStatus: () => irq.status(),
  irqSettled: () => irq.settled(),
  shutdown: async (quiesce = true) => {
    await server.stop();
    if (quiesce && device) await irq.quiesce();
    await irq.stop();
  },
};

Comlink.expose(api, nodeEndpoint(parentPort));
