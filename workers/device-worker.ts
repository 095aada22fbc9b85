// The device worker: one thread per assigned device. It owns every access to the device's
// VFIO fd: it serves the device's ring (config space and BAR MMIO from any VMM thread) and
// answers the coordinator's control calls (describe, stats, reset, shutdown) over comlink.
import { parentPort, workerData } from 'node:worker_threads';
import * as vfio from '../native/vfio.js';
import { Comlink, installErrorTransfer, nodeEndpoint } from '../src/control/comlink-node.js';
import { AssignedDevice, type DeviceDescription } from '../src/device/assigned-device.js';
import { STAT, STATE, stateViews, type DeviceMemory } from '../src/device/shared-state.js';
import { RingServer } from '../src/ring/server.js';
import { STATUS } from '../src/ring/protocol.js';

export interface DeviceWorkerData {
  name: string;
  /** The VFIO device fd (opened, bound and attached by the coordinator; fds are process-wide). */
  fd: number;
  path: string;
  ring: SharedArrayBuffer;
  memory: DeviceMemory;
}

/** What the coordinator can ask of a device worker. */
export interface DeviceControl {
  /** Resolves once the device is set up (throws its setup error); returns its description. */
  ready(): DeviceDescription;
  describe(): DeviceDescription;
  stats(): ReturnType<AssignedDevice['stats']> & { served: number };
  /** VFIO_DEVICE_RESET, then the emulated state back to power-on values. */
  reset(): DeviceDescription;
  /** Stop serving the ring; queued requests stay for a successor. */
  shutdown(): Promise<void>;
}

if (!parentPort) throw new Error('device-worker must run as a worker thread');
installErrorTransfer();
const data = workerData as DeviceWorkerData;
const dev = { fd: data.fd, path: data.path };
new Float64Array(data.memory.stats)[STAT.WORKER_STARTS]!++;

let device: AssignedDevice | undefined;
let setupError: unknown;
try { device = new AssignedDevice(dev, data.name, data.memory); } catch (e) { setupError = e; }

const server = new RingServer(data.ring, (req) => (device ? device.handle(req) : STATUS.NOT_READY));
server.start();

const need = (): AssignedDevice => {
  if (!device) throw setupError instanceof Error ? setupError : new Error(String(setupError));
  return device;
};

const api: DeviceControl = {
  ready: () => need().describe(),
  describe: () => need().describe(),
  stats: () => ({ ...need().stats(), served: server.served }),
  reset: () => {
    need();
    vfio.deviceReset(dev);
    Atomics.store(stateViews(data.memory.state).flags, STATE.INITIALIZED, 0);
    device = new AssignedDevice(dev, data.name, data.memory);
    return device.describe();
  },
  shutdown: () => server.stop(),
};

Comlink.expose(api, nodeEndpoint(parentPort));
