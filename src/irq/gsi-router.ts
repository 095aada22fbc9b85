// The one owner of a VM's KVM GSI routing table (KVM_SET_GSI_ROUTING replaces it whole, so
// every device's routes must go through here). Lives in the coordinator: allocates GSIs, binds
// each route's eventfd with KVM_IRQFD, and coalesces the changes requested in one turn of the
// event loop into one routing commit (a setImmediate: every message that arrived from any
// worker in that turn is in it). Device workers reach it over a MessagePort.

import { MessageChannel, type MessagePort } from 'node:worker_threads';
import * as kvm from '../../native/kvm.js';
import type { Init } from '../../native/layout.js';
import type { Target } from '../../native/libc.js';
import { Comlink, installErrorTransfer, nodeEndpoint } from '../control/comlink-node.js';
import { GsiRouterError } from '../errors.js';
import type { RuntimeLogger } from '../log.js';

const K = kvm.KVM_C;
type Entry = Init<kvm.RoutingEntry>;

export interface MsiMessage {
  lo: number;
  hi: number;
  data: number;
}

/**
 * One change for one of an owner's sources (`key`). `msi`: the source's MSI route (a GSI is
 * allocated and `fd` bound to it by KVM_IRQFD the first time), or null to remove the route (the
 * GSI and irqfd stay for the next unmask). `gsi`+`on`: an INTx irqfd on a GSI the VMM owns
 * (routed to an irqchip pin by the base table), with a resample eventfd.
 */
export type RouteChange =
  | { key: number; fd: number; msi: MsiMessage | null }
  | { key: number; fd: number; gsi: number; resampleFd: number; on: boolean };

export interface RouteResult {
  key: number;
  gsi: number;
}

/** The KVM calls the router makes (real ones by default; tests pass fakes). */
export interface KvmRoutingOps {
  setGsiRouting(entries: readonly Entry[]): void;
  irqfd(a: { fd: number; gsi: number; flags?: number; resamplefd?: number }): void;
}

export interface GsiRouterOptions {
  /** Routes the VMM keeps (its irqchip pins). Default: KVM's own x86 table (PIC + IOAPIC, GSI 0-23). */
  base?: readonly Entry[];
  /** First GSI given to MSI routes (default 24, after the IOAPIC pins). */
  firstGsi?: number;
  /** Number of GSIs KVM allows (default: KVM_CHECK_EXTENSION(KVM_CAP_IRQ_ROUTING) on the VM). */
  maxGsi?: number;
  ops?: KvmRoutingOps;
}

interface Route {
  gsi: number;
  fd: number;
  msi: MsiMessage | null;
  bound: boolean;
  intx?: { resampleFd: number };
}

interface Pending {
  owner: string;
  changes: RouteChange[];
  resolve: (r: RouteResult[]) => void;
  reject: (e: unknown) => void;
}

/** What a device worker may call (over the port from connect()). */
export interface RouterPort {
  update(changes: RouteChange[]): Promise<RouteResult[]>;
}

export function x86DefaultRoutes(): Entry[] {
  const out: Entry[] = [];
  const chip = (gsi: number, irqchip: number, pin: number): Entry => ({
    gsi,
    type: K.KVM_IRQ_ROUTING_IRQCHIP,
    u: { irqchip: { irqchip, pin } },
  });
  for (let irq = 0; irq < 24; irq++) {
    out.push(chip(irq, K.KVM_IRQCHIP_IOAPIC, irq));
    if (irq < 16)
      out.push(chip(irq, irq < 8 ? K.KVM_IRQCHIP_PIC_MASTER : K.KVM_IRQCHIP_PIC_SLAVE, irq % 8));
  }
  return out;
}

// What the router throws and rejects with: one of the runtime's error kinds (VFR_ERR_GSI_ROUTING).
export { GsiRouterError };

export class GsiRouter {
  readonly #ops: KvmRoutingOps;
  readonly #base: readonly Entry[];
  readonly #first: number;
  readonly #max: number;
  readonly #owners = new Map<string, Map<number, Route>>();
  readonly #used = new Set<number>();
  #committed: Entry[];
  #queue: Pending[] = [];
  #scheduled = false;
  /** Successful KVM_SET_GSI_ROUTING calls made by this router. */
  commits = 0;
  /** Gets a line per committed table (the runtime sets its logger here: src/log.ts). */
  logger: RuntimeLogger | undefined;
  failedCommits = 0;

  constructor(
    readonly vm: Target,
    opts: GsiRouterOptions = {},
  ) {
    this.#ops = opts.ops ?? {
      setGsiRouting: (e) => kvm.setGsiRouting(vm, e),
      irqfd: (a) => kvm.irqfd(vm, a),
    };
    this.#base = opts.base ?? x86DefaultRoutes();
    this.#first = opts.firstGsi ?? 24;
    this.#max = opts.maxGsi ?? (opts.ops ? 4096 : kvm.checkExtension(vm, K.KVM_CAP_IRQ_ROUTING));
    if (this.#max <= this.#first)
      throw new GsiRouterError(
        `${vm.path}: KVM allows ${this.#max} GSIs, none left after the first ${this.#first}`,
      );
    this.#committed = [...this.#base];
  }

  /** Queue changes for `owner`; resolves (with each MSI key's GSI) once KVM accepted the commit holding them (made at the end of this event-loop turn). */
  update(owner: string, changes: readonly RouteChange[]): Promise<RouteResult[]> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ owner, changes: [...changes], resolve, reject });
      if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(() => this.#commit());
      }
    });
  }

  /** The table KVM last accepted. */
  table(): Entry[] {
    return this.#committed.map((e) => structuredClone(e));
  }

  /** An owner's routes as KVM has them (key → GSI and MSI message, or null when removed). */
  routesOf(owner: string): Map<number, { gsi: number; msi: MsiMessage | null; intx: boolean }> {
    const out = new Map<number, { gsi: number; msi: MsiMessage | null; intx: boolean }>();
    for (const [k, r] of this.#owners.get(owner) ?? [])
      out.set(k, { gsi: r.gsi, msi: r.msi && { ...r.msi }, intx: !!r.intx });
    return out;
  }

  /** Drop every route of `owner`: irqfds deassigned, GSIs freed, one commit. */
  async release(owner: string): Promise<void> {
    const routes = this.#owners.get(owner);
    if (!routes) return;
    this.#owners.delete(owner);
    for (const r of routes.values()) {
      if (r.bound) this.#unbind(r);
      if (!r.intx) this.#used.delete(r.gsi);
    }
    await new Promise<void>((resolve, reject) => {
      this.#queue.push({ owner, changes: [], resolve: () => resolve(), reject });
      if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(() => this.#commit());
      }
    });
  }

  /**
   * A port for a device worker: it calls update() for `owner` through comlink. `afterReply` runs
   * after each reply is posted (the device ring's attention signal, so a busy worker reads it soon).
   */
  connect(owner: string, afterReply?: () => void): { port: MessagePort; close: () => void } {
    installErrorTransfer();
    const { port1, port2 } = new MessageChannel();
    const api: RouterPort = { update: (changes) => this.update(owner, changes) };
    Comlink.expose(api, nodeEndpoint(port1, afterReply));
    port1.unref();
    return { port: port2, close: () => port1.close() };
  }

  #alloc(): number {
    for (let g = this.#first; g < this.#max; g++)
      if (!this.#used.has(g) && !this.#base.some((e) => e.gsi === g)) {
        this.#used.add(g);
        return g;
      }
    throw new GsiRouterError(
      `${this.vm.path}: no free GSI (KVM allows ${this.#max}, ${this.#used.size} in use)`,
    );
  }

  #unbind(r: Route): void {
    try {
      this.#ops.irqfd({ fd: r.fd, gsi: r.gsi, flags: K.KVM_IRQFD_FLAG_DEASSIGN });
    } catch {
      /* the fd may be gone already */
    }
    r.bound = false;
  }

  /** Commit the turn's requests: stage, build the table, install it, then bind and answer. */
  #commit(): void {
    this.#scheduled = false;
    const batch = this.#queue;
    this.#queue = [];
    const st = this.#stage(batch);
    const entries = this.#tableOf(st.staged);
    if (!this.#install(entries, st)) return;
    for (const [o, m] of st.staged) this.#owners.set(o, m);
    for (const r of st.unbinds) this.#unbind(r);
    this.#bindNew(st);
    for (const p of batch) {
      const e = st.failed.get(p);
      if (e) p.reject(e);
      else p.resolve(st.results.get(p) ?? []);
    }
  }

  /**
   * Stage on copies: nothing changes unless KVM accepts the new table. Each request is applied
   * to a copy of its owner's routes, kept only if all its changes apply.
   */
  #stage(batch: Pending[]): Staging {
    const st: Staging = {
      batch,
      staged: new Map(),
      allocated: [],
      unbinds: [],
      failed: new Map(),
      results: new Map(),
    };
    for (const p of batch) {
      const mark = st.allocated.length;
      try {
        const routes = new Map(
          [...(st.staged.get(p.owner) ?? this.#owners.get(p.owner) ?? [])].map(([k, r]) => [
            k,
            { ...r },
          ]),
        );
        st.results.set(
          p,
          p.changes.map((c) => this.#apply(st, routes, c)),
        );
        st.staged.set(p.owner, routes);
      } catch (e) {
        for (const g of st.allocated.splice(mark)) this.#used.delete(g);
        st.failed.set(p, e);
      }
    }
    return st;
  }

  /** One change on a copy of its owner's routes: an MSI route, or an INTx irqfd on or off. */
  #apply(st: Staging, routes: Map<number, Route>, c: RouteChange): RouteResult {
    if ('msi' in c) return this.#applyMsi(st, routes, c);
    const r = routes.get(c.key);
    if (c.on) {
      if (r?.bound && (r.fd !== c.fd || r.gsi !== c.gsi)) drop(st, r);
      routes.set(c.key, {
        gsi: c.gsi,
        fd: c.fd,
        msi: null,
        bound: r?.bound === true && r.fd === c.fd && r.gsi === c.gsi,
        intx: { resampleFd: c.resampleFd },
      });
      return { key: c.key, gsi: c.gsi };
    }
    if (r?.bound) drop(st, r);
    routes.delete(c.key);
    return { key: c.key, gsi: -1 };
  }

  /** An MSI route set (a GSI allocated the first time) or removed (GSI and irqfd kept). */
  #applyMsi(
    st: Staging,
    routes: Map<number, Route>,
    c: { key: number; fd: number; msi: MsiMessage | null },
  ): RouteResult {
    let r = routes.get(c.key);
    if (!r) {
      if (!c.msi) return { key: c.key, gsi: -1 };
      r = { gsi: this.#alloc(), fd: c.fd, msi: null, bound: false };
      st.allocated.push(r.gsi);
      routes.set(c.key, r);
    }
    r.msi = c.msi && { lo: c.msi.lo >>> 0, hi: c.msi.hi >>> 0, data: c.msi.data >>> 0 };
    if (r.fd !== c.fd) {
      if (r.bound) drop(st, r);
      r.fd = c.fd;
    }
    return { key: c.key, gsi: r.gsi };
  }

  /** The whole table with the staged owners' routes: the base, then every MSI route. */
  #tableOf(staged: ReadonlyMap<string, Map<number, Route>>): Entry[] {
    const next = new Map(this.#owners);
    for (const [o, m] of staged) next.set(o, m);
    const entries: Entry[] = [...this.#base];
    for (const routes of next.values()) {
      for (const r of routes.values()) {
        if (r.msi)
          entries.push({
            gsi: r.gsi,
            type: K.KVM_IRQ_ROUTING_MSI,
            u: { msi: { address_lo: r.msi.lo, address_hi: r.msi.hi, data: r.msi.data } },
          });
      }
    }
    return entries;
  }

  /** KVM_SET_GSI_ROUTING unless KVM has this table; refused: every request rejected, false. */
  #install(entries: Entry[], st: Staging): boolean {
    try {
      if (!sameTable(entries, this.#committed)) {
        this.#ops.setGsiRouting(entries);
        this.commits++;
        this.#committed = entries;
        this.logger?.info(
          { event: 'routes_committed', entries: entries.length, changes: st.batch.length },
          'KVM GSI routing table committed',
        );
      }
      return true;
    } catch (e) {
      this.failedCommits++;
      for (const g of st.allocated) this.#used.delete(g);
      const err = new GsiRouterError(
        `KVM_SET_GSI_ROUTING with ${entries.length} entries refused: ${(e as Error).message}`,
        e,
      );
      for (const p of st.batch) p.reject(err);
      return false;
    }
  }

  /** Bind each eventfd to its GSI once KVM routes it (a failure fails its request). */
  #bindNew(st: Staging): void {
    for (const p of st.batch) {
      if (st.failed.has(p)) continue;
      for (const r of this.#owners.get(p.owner)?.values() ?? []) {
        if (r.bound) continue;
        try {
          this.#ops.irqfd(
            r.intx
              ? {
                  fd: r.fd,
                  gsi: r.gsi,
                  flags: K.KVM_IRQFD_FLAG_RESAMPLE,
                  resamplefd: r.intx.resampleFd,
                }
              : { fd: r.fd, gsi: r.gsi },
          );
          r.bound = true;
        } catch (e) {
          st.failed.set(
            p,
            new GsiRouterError(
              `KVM_IRQFD for fd ${r.fd} on GSI ${r.gsi} (${p.owner}) failed: ${(e as Error).message}`,
              e,
            ),
          );
        }
      }
    }
  }
}

/** A commit being made (#stage): the batch's requests staged on copies of their owners' routes. */
interface Staging {
  readonly batch: Pending[];
  readonly staged: Map<string, Map<number, Route>>;
  /** GSIs allocated for the batch, freed again if KVM refuses the table. */
  readonly allocated: number[];
  /** irqfds to deassign once KVM has the new table. */
  readonly unbinds: Route[];
  readonly failed: Map<Pending, unknown>;
  readonly results: Map<Pending, RouteResult[]>;
}

/** A staged route's irqfd goes (deassigned after the commit); the copy is unbound from here. */
function drop(st: Staging, r: Route): void {
  st.unbinds.push({ ...r });
  r.bound = false;
}

function sameTable(a: readonly Entry[], b: readonly Entry[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!,
      y = b[i]!;
    if (x.gsi !== y.gsi || x.type !== y.type) return false;
    const mx = x.u?.msi,
      my = y.u?.msi;
    if (mx || my) {
      if (
        mx?.address_lo !== my?.address_lo ||
        mx?.address_hi !== my?.address_hi ||
        mx?.data !== my?.data
      )
        return false;
    } else if (
      x.u?.irqchip?.irqchip !== y.u?.irqchip?.irqchip ||
      x.u?.irqchip?.pin !== y.u?.irqchip?.pin
    )
      return false;
  }
  return true;
}
