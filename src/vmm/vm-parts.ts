// What a VM's build, hot-plug and run share (vm-build.ts, vm-hotplug.ts, vm-run.ts): the Vm
// (vm.ts) holds one VmParts and hands it to them. The fds and objects here are the VM's; each
// step that makes one pushes its undo onto `undo`, which closing runs newest first.
import type { MessagePort } from 'node:worker_threads';
import type { GsiRouter, MemfdRegion, OwnedFd, Runtime } from '../index.js';
import type { BarSlots } from './bar-slots.js';
import { BarAllocator } from './pci-firmware.js';
import type { PeerSync } from './peer-sync.js';
import { createShared, type VmShared } from './shared.js';
import { collectStats, type VmStats } from './stats.js';
import type { VmOptions } from './vm.js';

/** IOAPIC pins 16-23 take the devices' INTx (0-15 are ISA); a ninth device would share. */
const FIRST_PCI_PIN = 16,
  PCI_PINS = 8;

/** The IOAPIC pin of PCI slot index `i`'s INTx. */
export const pciPin = (i: number): number => FIRST_PCI_PIN + (i % PCI_PINS);

export class VmParts {
  readonly cpus: number;
  readonly shared: VmShared;
  readonly ctl: Int32Array;
  readonly undo: (() => void | Promise<void>)[] = [];
  sys!: OwnedFd;
  vm!: OwnedFd;
  ram!: MemfdRegion;
  runtime!: Runtime;
  router: GsiRouter | undefined;
  /** The BAR fast path's KVM slots (bar-slots.ts). */
  slots: BarSlots | undefined;
  /** The devices' BARs mapped for peer-to-peer DMA at their guest addresses (peer-sync.ts). */
  peers: PeerSync | undefined;
  readonly vcpus: OwnedFd[] = [];
  /** The port in each PCI slot (slot = index + 1); '' for a slot emptied by hot-unplug. */
  readonly deviceNames: string[] = [];
  /** The size of a vCPU's kvm_run mapping. */
  runSize = 0;
  /** Where BARs go, at boot and for hot-added devices (firmware style, never reused). */
  readonly alloc = new BarAllocator();
  /** One port per running vCPU: hot-plug sends it the slot's new ring (vcpu.ts replug). */
  readonly plugPorts: MessagePort[] = [];

  constructor(readonly opts: VmOptions) {
    this.cpus = opts.cpus ?? 1;
    this.shared = createShared(this.cpus);
    this.ctl = new Int32Array(this.shared.ctl);
  }

  /** Exit counters summed over the vCPUs (live while running). */
  stats(): VmStats {
    return collectStats(new Float64Array(this.shared.stats), this.cpus, this.deviceNames);
  }

  /** The ring of PCI slot index `i`'s device, or null for an empty slot. */
  ringOf(i: number): SharedArrayBuffer | null {
    const n = this.deviceNames[i];
    return n ? this.runtime.device(n).ring : null;
  }
}
