// What the API routes do to a Runtime: add a device from the fds a client attached (a VFIO cdev,
// and /dev/iommu to create a new context), remove one in order and report when it is gone,
// describe everything (contexts and IOAS mappings, devices with BARs, MSI-X and routes, worker
// state) and read the counters. A VMM hosting the runtime plugs in through DeviceHooks (its KVM
// interrupt options, putting a device on its PCI bus and taking it off); `run` uses none.
//
// Fds are judged by what they point at (/proc/self/fd), never by numbers in the body: a body
// with `fd` in it is refused. A context the API made for a device (from its /dev/iommu fd) is
// closed with that device, so after a removal the process holds the fds it held before.
import { readlinkSync } from 'node:fs';
import {
  ConflictError,
  type DeviceHooks,
  type DeviceSpec,
  NotFoundError,
  type Runtime,
  type RuntimeDevice,
} from '../index.js';
import { API_STYLE, addDeviceInput, removeDeviceInput } from './device-body.js';
import { ApiError, type ApiHost, errorBody } from './routes.js';
import type { ApiRequest, ApiResponse, ApiServerStats, ReceivedFds } from './server.js';

export type { DeviceHooks };

export type FdKind = 'cdev' | 'iommufd' | 'other';

const CDEV = /^\/dev\/vfio\/devices\/vfio\d+$/;

/** What an fd of this process points at, and which kind the API sees in it. */
export function classifyFd(fd: number): { kind: FdKind; link: string } {
  let link: string;
  try {
    link = readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return { kind: 'other', link: 'a closed fd' };
  }
  return { kind: CDEV.test(link) ? 'cdev' : link === '/dev/iommu' ? 'iommufd' : 'other', link };
}

function kindOf(link: string): string {
  if (link.startsWith('anon_inode:')) return `an ${link.slice(11).replace(/[[\]]/g, '')}`;
  if (link.startsWith('socket:')) return 'a socket';
  if (link.startsWith('pipe:')) return 'a pipe';
  if (link.startsWith('/dev/')) return 'another device node';
  return 'a regular file or directory';
}

const MAX_REMOVALS = 32;

export interface Removal {
  id: string;
  state: 'removing' | 'removed' | 'failed';
  ms?: number;
  error?: unknown;
}

export class RuntimeApi implements ApiHost {
  /** Ports with an add or remove under way: a second request on one is 409. */
  readonly #busy = new Set<string>();
  /** Contexts the API opened for a device (from its /dev/iommu fd): they go with it. */
  readonly #ownedContexts = new Map<string, string>();
  readonly #removals = new Map<string, Removal>();
  /** The server's own counters, once it runs (for vm.counters). */
  serverStats: (() => ApiServerStats) | undefined;

  constructor(
    readonly runtime: Runtime,
    readonly hooks: DeviceHooks = {},
  ) {}

  async addDevice(body: Record<string, unknown>, req: ApiRequest): Promise<ApiResponse> {
    const input = addDeviceInput(body);
    if (this.hooks.cannotAdd) throw new ApiError(501, this.hooks.cannotAdd);
    const fds = sortFds(req.fds);
    if (fds.cdev === undefined && input.bdf === undefined)
      throw new ApiError(
        400,
        `missing fd: attach the device's VFIO cdev (/dev/vfio/devices/vfioN) to the request by SCM_RIGHTS, or give bdf for the runtime to open it itself`,
      );
    // The runtime's own checks, before any fd is handed over (so an fd is either taken or
    // closed by the server): the spec, port and device taken, the context.
    const spec = this.runtime.checkAdd(
      fds.cdevFd !== undefined ? { ...input, fd: fds.cdevFd } : input,
      { newContext: fds.iommufd !== undefined, style: API_STYLE },
    );
    if (this.#busy.has(spec.port))
      throw new ConflictError(
        `port ${spec.port} is busy with another request: retry when it completes`,
        'port',
        spec.port,
      );
    this.#busy.add(spec.port);
    try {
      return await this.#add(spec, fds, req.fds);
    } finally {
      this.#busy.delete(spec.port);
    }
  }

  /** The add's steps: the new context if a /dev/iommu came, the device, the VMM's plug, the answer. */
  async #add(spec: DeviceSpec, fds: SortedFds, received: ReceivedFds): Promise<ApiResponse> {
    const iommu = spec.iommu!;
    const newContext = this.#openContext(spec, fds, received);
    const t0 = performance.now();
    const d = await this.#attach(spec, fds, received);
    const plugged = await this.#plug(spec, d);
    this.#removals.delete(spec.port);
    const ctx = this.runtime.contexts.get(iommu);
    return {
      status: 200,
      body: {
        id: spec.port,
        bdf: d.bdf,
        iommu,
        newContext,
        ioasId: ctx?.ioasId,
        bars: d.handle.description.bars.map((b) => ({ index: b.index, size: b.size })),
        ms: Math.round(performance.now() - t0),
        ...plugged,
      },
    };
  }

  /** With an attached /dev/iommu: the device's context, opened from it (it goes with the device). */
  #openContext(spec: DeviceSpec, fds: SortedFds, received: ReceivedFds): boolean {
    if (fds.iommufd === undefined) return false;
    this.runtime.addContext({ id: spec.iommu!, iommufdFd: received.take(fds.iommufd) });
    this.#ownedContexts.set(spec.iommu!, spec.port);
    return true;
  }

  /** The runtime attaches the device (owning its cdev fd from here); a failure drops the new context. */
  async #attach(spec: DeviceSpec, fds: SortedFds, received: ReceivedFds): Promise<RuntimeDevice> {
    try {
      if (fds.cdev !== undefined) received.take(fds.cdev); // spec.fd: the runtime owns it now
      return await this.runtime.addDevice(spec, this.hooks.attachOptions?.(spec.port) ?? {});
    } catch (e) {
      this.#dropContext(spec.iommu!, spec.port);
      throw e;
    }
  }

  /** The VMM puts the device where the guest finds it; a failure removes it again. */
  async #plug(spec: DeviceSpec, d: RuntimeDevice): Promise<Record<string, unknown>> {
    try {
      return (await this.hooks.plugged?.(d)) ?? {};
    } catch (e) {
      await this.runtime.removeDevice(spec.port).catch(() => {});
      this.#dropContext(spec.iommu!, spec.port);
      throw e;
    }
  }

  /** Close the context the API made for `port`'s device, once it has no devices. */
  #dropContext(iommu: string, port: string): void {
    if (this.#ownedContexts.get(iommu) !== port) return;
    const ctx = this.runtime.contexts.get(iommu);
    if (ctx && ctx.deviceCount > 0) return;
    this.#ownedContexts.delete(iommu);
    if (ctx) this.runtime.removeContext(iommu);
  }

  async removeDevice(body: Record<string, unknown>): Promise<ApiResponse> {
    const { port, wait } = removeDeviceInput(body);
    if (this.hooks.cannotRemove) throw new ApiError(501, this.hooks.cannotRemove);
    const d = this.runtime.devices.get(port);
    if (!d)
      throw new NotFoundError(
        `no device '${port}' (devices: ${[...this.runtime.devices.keys()].join(', ') || 'none'})`,
        'port',
        port,
      );
    if (this.#busy.has(port))
      throw new ConflictError(
        `device ${port} is busy with another request (being added or removed)`,
        'port',
        port,
      );
    this.#busy.add(port);
    const r: Removal = { id: port, state: 'removing' };
    this.#remember(r);
    const done = this.#remove(port, r).finally(() => this.#busy.delete(port));
    if (!wait) return { status: 202, body: { id: port, state: r.state } };
    await done;
    return this.removal(port);
  }

  async #remove(port: string, r: Removal): Promise<void> {
    const t0 = performance.now();
    const iommu = [...this.#ownedContexts].find(([, p]) => p === port)?.[0];
    try {
      await this.hooks.unplugging?.(port);
      await this.runtime.removeDevice(port);
      if (iommu) this.#dropContext(iommu, port);
      r.state = 'removed';
    } catch (e) {
      r.state = 'failed';
      r.error = e;
    }
    r.ms = Math.round((performance.now() - t0) * 10) / 10;
  }

  #remember(r: Removal): void {
    this.#removals.delete(r.id);
    this.#removals.set(r.id, r);
    if (this.#removals.size > MAX_REMOVALS)
      this.#removals.delete(this.#removals.keys().next().value!);
  }

  /** A removal's state: 200 removed, 202 still removing, 500 failed (with the error), 404 none. */
  removal(id: string): ApiResponse {
    const r = this.#removals.get(id);
    if (!r)
      throw new NotFoundError(
        `no removal of '${id}' is known (ask vm.remove-device first)`,
        'port',
        id,
      );
    const body = { id, state: r.state, ...(r.ms !== undefined ? { ms: r.ms } : {}) };
    if (r.state === 'failed') return { status: 500, body: { ...body, ...errorBody(r.error) } };
    return { status: r.state === 'removing' ? 202 : 200, body };
  }

  async info(): Promise<unknown> {
    const desc = this.runtime.describe();
    const devices = await Promise.all(
      desc.devices.map(async (d) => {
        const h = this.runtime.devices.get(d.port)?.handle;
        let irq: unknown;
        try {
          irq = h && h.state === 'running' ? await h.irqStatus() : undefined;
        } catch (e) {
          irq = { error: (e as Error).message };
        }
        return { ...d, worker: h?.state, irq };
      }),
    );
    return {
      ...desc,
      devices,
      removals: [...this.#removals.values()].map((r) => ({
        id: r.id,
        state: r.state,
        ms: r.ms,
        ...(r.error ? { error: (r.error as Error).message } : {}),
      })),
      ...(this.hooks.info ? { vmm: this.hooks.info() } : {}),
    };
  }

  counters(): unknown {
    const devices: Record<string, Record<string, number>> = {};
    for (const [port, d] of this.runtime.devices) {
      const row: Record<string, number> = {};
      for (const c of d.handle.counters()) {
        const labels = Object.entries(c.labels)
          .filter(([k]) => k !== 'device')
          .map(([k, v]) => `${k}=${v}`)
          .join(',');
        if (c.value !== 0) row[labels ? `${c.name}{${labels}}` : c.name] = c.value;
      }
      devices[port] = row;
    }
    return {
      api: this.serverStats?.(),
      devices,
      ...(this.hooks.counters ? { vmm: this.hooks.counters() } : {}),
    };
  }
}

/** The arrival indexes of the attached cdev and /dev/iommu, and the cdev's fd number. */
interface SortedFds {
  cdev?: number;
  iommufd?: number;
  cdevFd?: number;
}

/** Which attached fd is the cdev and which /dev/iommu; anything else is refused (400). */
function sortFds(fds: ReceivedFds): SortedFds {
  const out: SortedFds = {};
  for (const { index, fd } of fds.held()) {
    const { kind, link } = classifyFd(fd);
    if (kind === 'other')
      throw new ApiError(
        400,
        `fd #${index} attached to the request is ${link} (${kindOf(link)}), not a VFIO device cdev (/dev/vfio/devices/vfioN) or /dev/iommu: attach the cdev named in the device's sysfs vfio-dev/ directory, and /dev/iommu only to create a new context`,
      );
    if (out[kind] !== undefined)
      throw new ApiError(
        400,
        `two ${kind === 'cdev' ? 'VFIO cdevs' : '/dev/iommu fds'} attached: add one device per request`,
      );
    out[kind] = index;
    if (kind === 'cdev') out.cdevFd = fd;
  }
  return out;
}
