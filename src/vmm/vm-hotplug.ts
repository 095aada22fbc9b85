// PCI functions added and removed while the guest runs (the HTTP API's DeviceHooks, Vm.apiHooks):
// a device added goes on the next free slot of bus 0 (BARs in free window space, as firmware
// would; INTx line written; the guest finds it by rescanning), one removed leaves its slot
// reading all ones. And the BAR areas the guest reaches without exits now (mappedBars).
import {
  ConflictError,
  type DeviceHooks,
  GsiRouter,
  type RingClient,
  type RuntimeDevice,
} from '../index.js';
import { PciBus } from './pci-bus.js';
import { placeDevice } from './pci-firmware.js';
import { BAR, BARS, CTL, MAX_AREAS, MAX_DEVICES, SLOT, STAT, slotRow } from './shared.js';
import { resetSlotCounts } from './stats.js';
import { pciPin, type VmParts } from './vm-parts.js';

/** What the HTTP API (src/api/) does to the VM's devices. */
export function vmApiHooks(p: VmParts): DeviceHooks {
  return {
    attachOptions: () => ({ router: ensureRouter(p), intxGsi: pciPin(freeSlot(p)) }),
    plugged: (d) => plug(p, d),
    unplugging: (port) => unplug(p, port),
    info: () => ({
      cpus: p.cpus,
      slots: p.deviceNames.map((port, i) => ({ slot: i + 1, port: port || undefined })),
      mappedBars: mappedBars(p),
    }),
    counters: () => p.stats(),
  };
}

/** The BAR areas the guest reaches without exits now, by port. */
export function mappedBars(
  p: VmParts,
): { port: string; bar: number; gpa: string; offset: number; size: number }[] {
  return (p.slots?.installed() ?? []).map((s) => ({
    port: p.deviceNames[s.device]!,
    bar: s.bar,
    gpa: `0x${s.gpa.toString(16)}`,
    offset: s.offset,
    size: s.size,
  }));
}

function ensureRouter(p: VmParts): GsiRouter {
  p.router ??= new GsiRouter(p.vm);
  return p.router;
}

/** The first empty slot index (slot = index + 1). */
function freeSlot(p: VmParts): number {
  const i = p.deviceNames.findIndex((n) => !n);
  return i < 0 ? p.deviceNames.length : i;
}

/** Tell every running vCPU that slot index `i` now holds `ring` (null: empty). */
function publish(p: VmParts, i: number, ring: SharedArrayBuffer | null): void {
  for (const port of p.plugPorts) port.postMessage({ index: i, ring });
  Atomics.add(p.ctl, CTL.PCI_GEN, 1);
}

/** A hot-added device (no BAR fast path: its BARs trap): placed, published, on the bus. */
function plug(p: VmParts, d: RuntimeDevice): Record<string, unknown> {
  const i = freeSlot(p);
  if (i >= MAX_DEVICES)
    throw new ConflictError(
      `all ${MAX_DEVICES} PCI slots of the VM are taken: remove a device first`,
      'port',
      d.port,
    );
  const bars = new Float64Array(p.shared.bars);
  bars.fill(0, i * BARS * BAR.WORDS, (i + 1) * BARS * BAR.WORDS);
  const c = d.handle.client();
  const placed = placeDevice(c, d.handle.description, i, pciPin(i), p.alloc, bars);
  const clients: (RingClient | undefined)[] = [];
  clients[i] = c;
  new PciBus(p.ctl, bars, clients, new Float64Array(STAT.WORDS), 0).refresh(i);
  // The slot's BAR access counts are this device's from now on (the metrics label them so).
  resetSlotCounts(new Float64Array(p.shared.stats), p.cpus, i);
  p.deviceNames[i] = d.port;
  publish(p, i, d.handle.ring);
  const guestBdf = `0000:00:${placed.slot.toString(16).padStart(2, '0')}.0`;
  const placedBars = d.handle.description.bars
    .filter((b) => Number(b.size) > 0)
    .map((b) => ({
      index: b.index,
      gpa: `0x${bars[(i * BARS + b.index) * BAR.WORDS + BAR.BASE]!.toString(16)}`,
    }));
  return { slot: placed.slot, guestBdf, placedBars };
}

/**
 * Before the runtime lets the device go: its BARs stop decoding for every vCPU (all ones from
 * here), its fast-path KVM slots are deleted and their mappings unmapped, and the vCPUs drop
 * its ring. Requests in flight end when the runtime closes the ring (they read all ones).
 */
function unplug(p: VmParts, port: string): void {
  const i = p.deviceNames.indexOf(port);
  if (i < 0) return;
  const bars = new Float64Array(p.shared.bars);
  for (let n = 0; n < BARS; n++) bars[(i * BARS + n) * BAR.WORDS + BAR.ACTIVE] = 0;
  const table = new Float64Array(p.shared.slots);
  for (let n = 0; n < BARS; n++)
    for (let k = 0; k < MAX_AREAS; k++) table[slotRow(i, n, k) + SLOT.SIZE] = 0;
  p.slots?.sync(bars);
  p.runtime.unmapBarAreas(port);
  bars.fill(0, i * BARS * BAR.WORDS, (i + 1) * BARS * BAR.WORDS);
  p.deviceNames[i] = '';
  publish(p, i, null);
}
