// The coordinator's handle on one device worker: it allocates the device's shared memory (ring,
// counters, restorable state), starts the worker, and makes control calls that fail cleanly
// (instead of hanging, as a bare comlink call would) if the worker dies.
import { Worker } from 'node:worker_threads';
import type { Target } from '../../native/libc.js';
import type { DeviceControl, DeviceWorkerData } from '../../workers/device-worker.js';
import { Comlink, installErrorTransfer, nodeEndpoint } from '../control/comlink-node.js';
import type { DeviceDescription } from '../device/assigned-device.js';
import { createDeviceMemory, type DeviceMemory } from '../device/shared-state.js';
import { RingClient, type RingClientOptions } from '../ring/client.js';
import { createRingBuffer, type RingGeometry } from '../ring/protocol.js';
import { closeRing } from '../ring/server.js';

const WORKER_URL = new URL('../../workers/device-worker.js', import.meta.url);

export interface DeviceHostOptions {
  name: string;
  /** The device's VFIO fd; the caller keeps ownership (and closes it after shutdown). */
  device: Target;
  ring?: RingGeometry;
}

export class DeviceWorkerExit extends Error { override readonly name = 'DeviceWorkerExit'; }

export class DeviceHost {
  readonly name: string;
  readonly ring: SharedArrayBuffer;
  readonly memory: DeviceMemory;
  description!: DeviceDescription;
  #worker!: Worker;
  #api!: Comlink.Remote<DeviceControl>;
  #exit!: Promise<never>;
  #exitCode: number | undefined;

  private constructor(readonly opts: DeviceHostOptions) {
    this.name = opts.name;
    this.ring = createRingBuffer(opts.ring);
    this.memory = createDeviceMemory();
  }

  static async start(opts: DeviceHostOptions): Promise<DeviceHost> {
    installErrorTransfer();
    const host = new DeviceHost(opts);
    await host.#spawn();
    return host;
  }

  async #spawn(): Promise<void> {
    const data: DeviceWorkerData = { name: this.name, fd: this.opts.device.fd, path: this.opts.device.path, ring: this.ring, memory: this.memory };
    this.#worker = new Worker(WORKER_URL, { workerData: data, name: `device:${this.name}` });
    this.#exitCode = undefined;
    this.#exit = new Promise<never>((_, reject) => {
      const fail = (why: string): void => reject(new DeviceWorkerExit(`device worker ${this.name} ${why}`));
      this.#worker.once('exit', (code) => { this.#exitCode = code; fail(`exited (code ${code})`); });
      this.#worker.once('error', (e) => fail(`crashed: ${e.message}`));
    });
    this.#exit.catch(() => {}); // observed by #call; never unhandled
    this.#api = Comlink.wrap<DeviceControl>(nodeEndpoint(this.#worker));
    try {
      this.description = await this.#call(() => this.#api.ready());
    } catch (e) {
      await this.#worker.terminate();
      throw e;
    }
  }

  /** A control call that rejects if the worker exits before answering. */
  #call<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#exitCode !== undefined) return Promise.reject(new DeviceWorkerExit(`device worker ${this.name} is not running`));
    return Promise.race([fn(), this.#exit]);
  }

  get worker(): Worker { return this.#worker; }

  /** A ring client for this thread; other threads build their own from `ring`. */
  client(opts?: RingClientOptions): RingClient { return new RingClient(this.ring, opts); }

  describe(): Promise<DeviceDescription> { return this.#call(() => this.#api.describe()); }
  stats(): Promise<Awaited<ReturnType<DeviceControl['stats']>>> { return this.#call(() => this.#api.stats()); }
  async reset(): Promise<DeviceDescription> { return (this.description = await this.#call(() => this.#api.reset())); }

  /** Stop the worker and close the ring (producers still waiting get RingClosedError). */
  async shutdown(): Promise<void> {
    if (this.#exitCode === undefined) {
      await this.#call(() => this.#api.shutdown()).catch(() => {});
      await this.#worker.terminate();
    }
    closeRing(this.ring);
  }
}
