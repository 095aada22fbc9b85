// Peer-to-peer DMA for the VMM's assigned devices: each memory BAR with mappable areas is mapped
// for peers (Runtime.mapBarForPeers) at its guest address while the guest has it placed and
// decoding, so one assigned device can DMA into another's BAR at the address the guest gave it.
// The vCPU that snoops a command or BAR write bumps CTL.BAR_GEN (pci-bus.ts refresh); the main
// thread, which owns the runtime, then makes the mappings match the BAR map: a moved BAR is
// unmapped and mapped at its new address, decoding off unmaps. This lags the guest's write by an
// event-loop turn (QEMU's memory listener is synchronous); a device told to DMA into a BAR the
// guest has just moved may miss in between. Failures are counted and kept, never fatal.
import type { PeerAreaResult, Runtime } from '../index.js';
import { BAR, BAR_IO, BARS, CTL } from './shared.js';

export interface PeerSyncStats {
  /** mapBarForPeers calls (a BAR placed, or moved) and unmapBarForPeers calls (decoding off). */
  maps: number;
  unmaps: number;
  /** Area mappings that failed, and the last failure (errno, reason). */
  failures: number;
  lastFailure?: PeerAreaResult;
  /** Failed areas by `<backend> <via> <errno>`, over the whole run. */
  failuresBy: Record<string, number>;
  /**
   * The refusals still standing: areas of BARs mapped now whose last map was refused, by
   * `<backend> <via> <errno>` (a refusal in a race with decoding off is gone once the BAR is
   * mapped again). The report names each once.
   */
  refused: Record<string, { areas: number; reason: string }>;
  /** Re-syncs made, and the main thread's time in their maps and unmaps (ms): it also commits interrupt routes. */
  syncs: number;
  syncMs: number;
  /** The first error a re-sync threw (none expected: failures are results). */
  error?: string;
}

/**
 * How long the BAR map must stay unchanged before the mappings follow it. Linux toggles memory
 * decoding around each BAR it sizes, several times per device at probe: without the wait each
 * toggle was a map or unmap (45 maps, 39 unmaps in one boot of the lab's guest), all on the
 * thread that also commits the guest's interrupt routes.
 */
export const SETTLE_MS = 5;

export class PeerSync {
  readonly stats: PeerSyncStats = {
    maps: 0,
    unmaps: 0,
    failures: 0,
    failuresBy: {},
    refused: {},
    syncs: 0,
    syncMs: 0,
  };
  #stopped = false;
  /** Each mapped BAR's last map results, by `<port>/<bar>`. */
  readonly #last = new Map<string, readonly PeerAreaResult[]>();

  /** `ports[i]`: device i's port; `skip`: ports without the fast path (noMmap): no P2P either, as QEMU's x-no-mmap. */
  constructor(
    private readonly runtime: Runtime,
    private readonly bars: Float64Array,
    private readonly ports: readonly string[],
    private readonly skip: readonly string[] = [],
  ) {}

  /**
   * Make the peer mappings match the BAR map now. One BAR at a time, with an event-loop turn
   * after each map or unmap: the interrupt routes the guest changes meanwhile are committed on
   * this thread too (a setImmediate), and a map into the lab's emulated IOMMU takes
   * milliseconds. Run whole, a re-sync held the commits for ~7 ms on average (102 re-syncs,
   * 738 ms in one boot), and the NVMe firings relayed through userspace while routes waited
   * outnumbered the route updates (11 against 6).
   */
  async sync(): Promise<void> {
    this.stats.syncs++;
    for (const [i, port] of this.ports.entries()) {
      // An empty slot (a device hot-removed: its mappings went with it) or a device without
      // the fast path.
      if (!port || this.skip.includes(port)) continue;
      for (const b of this.runtime.device(port).description.bars) {
        if (this.#stopped) return;
        if (b.io || b.mappable.length === 0) continue;
        const t0 = performance.now();
        const changed = this.#syncBar(i, port, b.index);
        this.stats.syncMs += performance.now() - t0;
        if (changed) await new Promise((r) => setImmediate(r));
      }
    }
  }

  /** Map, move or unmap one BAR as the BAR map has it; false if it was as wanted. */
  #syncBar(i: number, port: string, bar: number): boolean {
    const row = (i * BARS + bar) * BAR.WORDS;
    const on = this.bars[row + BAR.ACTIVE] === 1 && this.bars[row + BAR.KIND] !== BAR_IO;
    const want = on ? BigInt(this.bars[row + BAR.BASE]!) : undefined;
    if (want === this.runtime.peers.iovaOf(port, bar)) return false;
    if (want === undefined) {
      this.runtime.unmapBarForPeers(port, bar);
      this.stats.unmaps++;
      this.#last.delete(`${port}/${bar}`);
      this.#tallyRefused();
      return true;
    }
    this.stats.maps++;
    const results = this.runtime.mapBarForPeers(port, bar, want);
    for (const r of results) {
      if (r.ok) continue;
      this.stats.failures++;
      this.stats.lastFailure = r;
      const key = `${r.backend} ${r.via} ${r.errno ?? 'error'}`;
      this.stats.failuresBy[key] = (this.stats.failuresBy[key] ?? 0) + 1;
    }
    this.#last.set(`${port}/${bar}`, results);
    this.#tallyRefused();
    return true;
  }

  /** stats.refused from the last map of every BAR mapped now. */
  #tallyRefused(): void {
    const refused: PeerSyncStats['refused'] = {};
    for (const results of this.#last.values())
      for (const r of results) {
        if (r.ok) continue;
        const key = `${r.backend} ${r.via} ${r.errno ?? 'error'}`;
        refused[key] = { areas: (refused[key]?.areas ?? 0) + 1, reason: r.reason ?? '' };
      }
    this.stats.refused = refused;
  }

  /** Follow the guest until stop(): re-sync once BAR_GEN has not moved for `settleMs`. */
  async follow(ctl: Int32Array, settleMs = SETTLE_MS): Promise<void> {
    let seen = Atomics.load(ctl, CTL.BAR_GEN);
    while (!this.#stopped) {
      const w = Atomics.waitAsync(ctl, CTL.BAR_GEN, seen);
      if (w.async) await w.value;
      do {
        seen = Atomics.load(ctl, CTL.BAR_GEN);
        await new Promise((r) => setTimeout(r, settleMs));
      } while (!this.#stopped && Atomics.load(ctl, CTL.BAR_GEN) !== seen);
      if (this.#stopped) break;
      try {
        await this.sync();
      } catch (e) {
        this.stats.error ??= (e as Error).message;
      }
    }
  }

  /** End follow(): it wakes on the bump. */
  stop(ctl: Int32Array): void {
    this.#stopped = true;
    Atomics.add(ctl, CTL.BAR_GEN, 1);
    Atomics.notify(ctl, CTL.BAR_GEN);
  }
}
