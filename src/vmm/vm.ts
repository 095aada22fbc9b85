// The minimal VMM as a library: `Vm.create(opts)` builds a KVM VM (in-kernel irqchip and PIT),
// its RAM (a memfd, also mapped for DMA at IOVA == GPA through the runtime), the assigned devices
// (one runtime device worker each, interrupts through the VM's GsiRouter), loads a Linux bzImage,
// and `run()` starts one worker thread per vCPU until the guest ends it. `close()` undoes it all.
// The steps live beside it, as Firecracker's builder.rs and Vmm: vm-build.ts builds,
// vm-hotplug.ts is the HTTP API's hot-plug, vm-run.ts runs and closes; VmParts (vm-parts.ts) is
// what they share.
import type { Registry } from 'prom-client';
import type {
  DeviceHooks,
  DeviceSpec,
  FaultSpec,
  GsiRouter,
  IommuSpec,
  MemfdRegion,
  OwnedFd,
  Runtime,
  RuntimeLogger,
  SupervisorOptions,
} from '../index.js';
import { registerVmMetrics } from '../index.js';
import type { BarSlots } from './bar-slots.js';
import { BootError } from './bzimage.js';
import type { CpuModel, PvFeatures } from './cpuid.js';
import type { PeerSync, PeerSyncStats } from './peer-sync.js';
import { END, type EndKind, endVm, type VmShared } from './shared.js';
import type { VmStats } from './stats.js';
import { buildVm, checkVmOptions } from './vm-build.js';
import { mappedBars, vmApiHooks } from './vm-hotplug.js';
import { VmParts } from './vm-parts.js';
import { runVm, unwind } from './vm-run.js';

export type { VmStats };
export { BootError };

export interface VmOptions {
  /** Where the runtime's lifecycle events go (src/log.ts; silent by default). */
  logger?: RuntimeLogger;
  /** Path of a Linux bzImage. */
  kernel: string;
  /** Path of an initramfs (optional). */
  initrd?: string;
  /** Guest RAM in bytes. */
  memory: number;
  cpus?: number;
  cmdline?: string;
  iommu?: IommuSpec[];
  vfio?: DeviceSpec[];
  /** Each chunk the guest writes to its serial port (default: this process's stdout). */
  onConsole?: (bytes: Uint8Array) => void;
  /** Offer the TSC-deadline timer (default off: unreliable under nested KVM in the lab, see cpuid.ts). */
  tscDeadline?: boolean;
  /** The vCPUs' CPUID model (cpuid.ts; default 'kvm64', as QEMU's). */
  cpuModel?: CpuModel;
  /** The KVM paravirtual features offered (cpuid.ts; default 'qemu', QEMU's default set). */
  pvFeatures?: PvFeatures;
  /** End the VM (status 'timeout') after this long. */
  timeoutMs?: number;
  /**
   * Ports whose BARs all trap (as QEMU's x-no-mmap): no BAR fast path for them. Otherwise each
   * mappable BAR area is an mmap of the device in a KVM slot, and only the rest (the MSI-X table
   * and PBA pages) exits to the VMM.
   */
  noMmap?: string[];
  /**
   * Supervise the device workers (src/coordinator/supervisor.ts): restart one that dies or hangs,
   * with its device state; a device that keeps failing reads as all ones (default on; false: off).
   */
  supervise?: SupervisorOptions | boolean;
  /** Restart supervised workers from a warm standby thread (fast restarts; one more thread). */
  standby?: boolean;
  /**
   * Fault injection per port (src/device/faults.ts), e.g. `{ nvme0: {} }` to allow
   * `vm.runtime.device('nvme0').handle.injectFault('kill')`; ports not named follow VFR_FAULTS.
   */
  faults?: Record<string, FaultSpec>;
}

export interface VmResult {
  status: EndKind;
  /** The byte written to the debug-exit port (status 'exit'), else 0. */
  code: number;
  message?: string;
  wallMs: number;
  stats: VmStats;
  /** Each vCPU's instruction pointer when it stopped. */
  rips: string[];
  /** After a timeout: each vCPU's run state, local APIC and timer (hang-report.ts). */
  vcpuStates?: string[];
  /** The ports nothing answered that the guest used most, with their access counts. */
  unknownPorts: Record<string, number>;
  /** Peer-to-peer DMA: BARs mapped for peers as the guest placed and moved them (peer-sync.ts). */
  p2p: PeerSyncStats;
  /**
   * The BAR fast path's KVM slot changes (KVM_SET_USER_MEMORY_REGION as the guest sizes, moves
   * and turns decoding on and off), and their time on the vCPU threads that made them.
   */
  slots: { ops: number; ms: number };
}

export class Vm {
  readonly #p: VmParts;
  #running: Promise<VmResult> | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;

  private constructor(readonly opts: VmOptions) {
    this.#p = new VmParts(opts);
  }

  /** Build the VM; on any failure everything made so far is undone and the error says what was wrong. */
  static async create(opts: VmOptions): Promise<Vm> {
    const files = checkVmOptions(opts);
    const vm = new Vm(opts);
    try {
      await buildVm(vm.#p, files);
      return vm;
    } catch (e) {
      await unwind(vm.#p);
      throw e;
    }
  }

  get cpus(): number {
    return this.#p.cpus;
  }
  get shared(): VmShared {
    return this.#p.shared;
  }
  /** /dev/kvm, and the VM's fd. */
  get sys(): OwnedFd {
    return this.#p.sys;
  }
  get vm(): OwnedFd {
    return this.#p.vm;
  }
  get ram(): MemfdRegion {
    return this.#p.ram;
  }
  get runtime(): Runtime {
    return this.#p.runtime;
  }
  get router(): GsiRouter | undefined {
    return this.#p.router;
  }
  /** The BAR fast path's KVM slots (bar-slots.ts). */
  get slots(): BarSlots | undefined {
    return this.#p.slots;
  }
  /** The devices' BARs mapped for peer-to-peer DMA at their guest addresses (peer-sync.ts). */
  get peers(): PeerSync | undefined {
    return this.#p.peers;
  }
  get vcpus(): readonly OwnedFd[] {
    return this.#p.vcpus;
  }
  /** The port in each PCI slot (slot = index + 1); '' for a slot emptied by hot-unplug. */
  get deviceNames(): readonly string[] {
    return this.#p.deviceNames;
  }

  /** The BAR areas the guest reaches without exits now, by port. */
  mappedBars(): { port: string; bar: number; gpa: string; offset: number; size: number }[] {
    return mappedBars(this.#p);
  }

  /**
   * What the HTTP API (src/api/) does to this VM's devices: a device added is placed on the next
   * free slot of bus 0 (BARs in free window space, as firmware would; INTx line written; the
   * guest finds it by rescanning), one removed leaves its slot reading all ones.
   */
  apiHooks(): DeviceHooks {
    return vmApiHooks(this.#p);
  }

  /** Run the guest until it ends (debug-exit port, reset, triple fault, error, timeout or close()). */
  run(): Promise<VmResult> {
    if (this.#closed) return Promise.reject(new Error('the VM is closed'));
    if (this.#running) return Promise.reject(new Error('the VM has already run (a VM boots once)'));
    this.#running = runVm(this.#p);
    return this.#running;
  }

  /** Exit counters summed over the vCPUs (live while running). */
  stats(): VmStats {
    return this.#p.stats();
  }

  /**
   * Export the VMM's per-vCPU counters on a prom-client registry (docs/metrics.md, "The VMM"):
   * exits by reason, config, UART and unhandled accesses, refusals, BAR accesses by device, the
   * sampled exit timing; read when scraped. The runtime's are `vm.runtime.registerMetrics`.
   */
  registerMetrics(registry: Registry): void {
    const p = this.#p;
    registerVmMetrics(registry, {
      stats: new Float64Array(p.shared.stats),
      cpus: p.cpus,
      devices: () => p.deviceNames,
    });
  }

  /** Stop the guest if it runs, then stop the devices, unmap guest memory and close every fd. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#closed = true;
    if (this.#running) {
      endVm(this.#p.ctl, END.STOPPED, 0);
      await this.#running.catch(() => {});
    }
    await unwind(this.#p);
  }
}
