// The minimal VMM as a library: `Vm.create(opts)` builds a KVM VM (in-kernel irqchip and PIT),
// its RAM (a memfd, also mapped for DMA at IOVA == GPA through the runtime), the assigned devices
// (one runtime device worker each, interrupts through the VM's GsiRouter), loads a Linux bzImage,
// and `run()` starts one worker thread per vCPU until the guest ends it. `close()` undoes it all.
import { MessageChannel, type MessagePort, Worker } from 'node:worker_threads';
import * as kvm from '../../native/kvm.js';
import { C } from '../../native/libc.js';
import {
  type BarAreaMapping,
  ConflictError,
  type DeviceHooks,
  type DeviceSpec,
  type FaultSpec,
  GsiRouter,
  InvalidSpecError,
  type IommuSpec,
  MemfdRegion,
  memfdRegionSource,
  OwnedFd,
  type RingClient,
  Runtime,
  type RuntimeDevice,
  type RuntimeLogger,
  type SupervisorOptions,
  withHint,
  withPrefix,
} from '../index.js';
import { BarSlots } from './bar-slots.js';
import {
  type BootFiles,
  DEFAULT_CMDLINE,
  loadGuest,
  minimumMemory,
  readBootFiles,
} from './boot.js';
import { BootError } from './bzimage.js';
import { ConsoleSink, createConsoleBuffer } from './console.js';
import { type CpuModel, cpuSignature, type PvFeatures } from './cpuid.js';
import { describeVcpu } from './hang-report.js';
import { IDENTITY_MAP_ADDR, MiB, ramRanges, TSS_ADDR } from './memory-map.js';
import type { MpPciIrq } from './mptable.js';
import { PciBus } from './pci-bus.js';
import { BarAllocator, placeDevice } from './pci-firmware.js';
import { PeerSync, type PeerSyncStats } from './peer-sync.js';
import {
  BAR,
  BARS,
  CTL,
  createShared,
  END,
  END_NAMES,
  type EndKind,
  endVm,
  MAX_AREAS,
  MAX_DEVICES,
  SLOT,
  STAT,
  slotRow,
  type VmShared,
} from './shared.js';
import { collectStats, type VmStats } from './stats.js';
import { initUart } from './uart.js';
import type { VcpuWorkerData } from './vcpu.js';
import { setupBootRegs, setupVcpu } from './vcpu-setup.js';
import { kick } from './vcpu-threads.js';

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

const WORKER_URL = new URL('./vcpu-worker.js', import.meta.url);
const MAX_CPUS = 32;
/** IOAPIC pins 16-23 take the devices' INTx (0-15 are ISA); a ninth device would share. */
const FIRST_PCI_PIN = 16,
  PCI_PINS = 8;
const KICK_EVERY_MS = 20;
const UNSTICK_AFTER_MS = 5000;
const noop = (): void => {};

export class Vm {
  readonly #undo: (() => void | Promise<void>)[] = [];
  readonly shared: VmShared;
  readonly #ctl: Int32Array;
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
  readonly deviceNames: string[] = [];
  #runSize = 0;
  #running: Promise<VmResult> | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;
  readonly cpus: number;

  private constructor(readonly opts: VmOptions) {
    this.cpus = opts.cpus ?? 1;
    this.shared = createShared(this.cpus);
    this.#ctl = new Int32Array(this.shared.ctl);
  }

  /** Build the VM; on any failure everything made so far is undone and the error says what was wrong. */
  static async create(opts: VmOptions): Promise<Vm> {
    const cpus = opts.cpus ?? 1;
    if (!Number.isInteger(cpus) || cpus < 1 || cpus > MAX_CPUS)
      throw new InvalidSpecError(`cpus ${cpus}: give 1 to ${MAX_CPUS} (--cpus)`, 'cpus');
    if ((opts.vfio?.length ?? 0) > MAX_DEVICES)
      throw new InvalidSpecError(
        `${opts.vfio!.length} devices: at most ${MAX_DEVICES} (--vfio)`,
        'vfio',
      );
    const files = readBootFiles(opts.kernel, opts.initrd);
    if (opts.memory < minimumMemory(files) || opts.memory % 4096 !== 0) {
      throw new InvalidSpecError(
        `memory size=${Math.floor(opts.memory / MiB)}M is too little for this kernel and initrd ` +
          `(give at least ${Math.ceil(minimumMemory(files) / MiB)}M, a multiple of 4 KiB)`,
        'memory',
      );
    }
    const vm = new Vm(opts);
    try {
      await vm.#build(files);
      return vm;
    } catch (e) {
      await vm.#unwind();
      throw e;
    }
  }

  async #build(files: BootFiles): Promise<void> {
    this.#openKvm();
    this.#makeRam();
    this.runtime = await Runtime.start(
      { iommu: this.opts.iommu ?? [], vfio: [], memory: [] },
      this.opts.logger ? { logger: this.opts.logger } : {},
    );
    this.#undo.push(() => this.runtime.shutdown());
    ramRanges(this.opts.memory).forEach((r, i) => {
      this.runtime.addMemory({
        name: i === 0 ? 'ram-low' : 'ram-high',
        gpa: BigInt(r.gpa),
        size: BigInt(r.size),
        memory: memfdRegionSource(this.ram, BigInt(r.offset)),
      });
    });
    const pciIrqs = await this.#addDevices();
    const supported = kvm.getSupportedCpuid(this.sys);
    const sig = cpuSignature(supported);
    const cmdline = this.opts.cmdline ?? DEFAULT_CMDLINE;
    const mp = { cpus: this.cpus, cpuSignature: sig.signature, cpuFeatures: sig.features, pciIrqs };
    const { entry } = loadGuest(this.ram.bytes, this.opts.memory, files, cmdline, mp);
    initUart(this.#ctl);
    this.#runSize = kvm.getVcpuMmapSize(this.sys);
    const tscDeadline =
      !!this.opts.tscDeadline &&
      kvm.checkExtension(this.vm, kvm.KVM_C.KVM_CAP_TSC_DEADLINE_TIMER) > 0;
    for (let i = 0; i < this.cpus; i++) {
      const fd = new OwnedFd(kvm.createVcpu(this.vm, i), `kvm-vcpu${i}`);
      this.vcpus.push(fd);
      setupVcpu(fd, i, this.cpus, supported, {
        model: this.opts.cpuModel ?? 'kvm64',
        pv: this.opts.pvFeatures ?? 'qemu',
        tscDeadline,
      });
      if (i === 0) setupBootRegs(fd, entry);
    }
    this.#undo.push(() => {
      for (const v of this.vcpus.splice(0).reverse()) v.close();
    });
  }

  #openKvm(): void {
    try {
      this.sys = OwnedFd.open('/dev/kvm', C.O_RDWR);
    } catch (e) {
      throw new Error(
        `cannot open /dev/kvm (${(e as Error).message}): ` +
          'load kvm_intel or kvm_amd, and run as a user in the kvm group',
      );
    }
    this.#undo.push(() => this.sys.close());
    const api = kvm.getApiVersion(this.sys);
    if (api !== kvm.KVM_C.KVM_API_VERSION)
      throw new Error(`/dev/kvm speaks API ${api}, not ${kvm.KVM_C.KVM_API_VERSION}`);
    this.vm = new OwnedFd(kvm.createVm(this.sys), 'kvm-vm');
    this.#undo.push(() => this.vm.close());
    kvm.setIdentityMapAddr(this.vm, BigInt(IDENTITY_MAP_ADDR));
    kvm.setTssAddr(this.vm, TSS_ADDR);
    kvm.createIrqchip(this.vm);
    kvm.createPit2(this.vm, kvm.KVM_C.KVM_PIT_SPEAKER_DUMMY);
  }

  #makeRam(): void {
    this.ram = new MemfdRegion('vm-ram', this.opts.memory);
    this.#undo.push(() => this.ram.close());
    ramRanges(this.opts.memory).forEach((r, slot) => {
      kvm.setUserMemoryRegion(this.vm, {
        slot,
        flags: 0,
        guest_phys_addr: BigInt(r.gpa),
        memory_size: BigInt(r.size),
        userspace_addr: this.ram.hva + BigInt(r.offset),
      });
    });
  }

  /** Attach each device (KVM interrupt mode), place its BARs, wire its INTx pin. */
  async #addDevices(): Promise<MpPciIrq[]> {
    const specs = this.opts.vfio ?? [];
    if (specs.length === 0) return [];
    this.router = new GsiRouter(this.vm);
    this.#mapBarsUndo();
    const alloc = this.#alloc,
      bars = new Float64Array(this.shared.bars),
      out: MpPciIrq[] = [];
    for (const [i, spec] of specs.entries()) {
      const ioapicPin = FIRST_PCI_PIN + (i % PCI_PINS);
      let d: RuntimeDevice;
      try {
        d = await this.runtime.addDevice(spec, {
          router: this.router,
          intxGsi: ioapicPin,
          supervise: this.opts.supervise ?? true,
          standby: this.opts.standby ?? false,
          ...(this.opts.faults?.[spec.port] ? { faults: this.opts.faults[spec.port] } : {}),
        });
      } catch (e) {
        // Named by its option, of the same kind (the CLI's exit status and the API read it).
        throw withPrefix(e, `--vfio port=${spec.port}${spec.bdf ? ` host=${spec.bdf}` : ''}`);
      }
      this.deviceNames.push(spec.port);
      if (!this.opts.noMmap?.includes(spec.port)) this.#mapBars(d, i);
      const c = d.handle.client();
      const placed = placeDevice(c, d.handle.description, i, ioapicPin, alloc, bars);
      if (placed.pin) out.push({ slot: placed.slot, pin: placed.pin, ioapicPin });
    }
    // Publish the BAR map as the guest will first see it.
    const clients = specs.map((s) => this.runtime.device(s.port).client());
    const bus = new PciBus(this.#ctl, bars, clients, new Float64Array(STAT.WORDS), 0, this.slots);
    clients.forEach((_, i) => bus.refresh(i));
    this.peers = new PeerSync(this.runtime, bars, this.deviceNames, this.opts.noMmap);
    await this.peers.sync();
    return out;
  }

  /** Where BARs go, at boot and for hot-added devices (firmware style, never reused). */
  readonly #alloc = new BarAllocator();
  /** One port per running vCPU: hot-plug sends it the slot's new ring (vcpu-worker.ts replug). */
  readonly #plugPorts: MessagePort[] = [];

  /** Closing: every fast-path slot deleted, then the mappings unmapped, before the devices go. */
  #mapBarsUndo(): void {
    const table = new Float64Array(this.shared.slots);
    this.slots = new BarSlots(this.#ctl, table, this.vm.fd);
    this.#undo.push(() => {
      this.slots?.clear();
      table.fill(0);
      for (const port of this.deviceNames) if (port) this.runtime.unmapBarAreas(port);
    });
  }

  /** The runtime mmaps each mappable area of device `i`'s BARs; the slot table records them (installed by refresh). */
  #mapBars(d: RuntimeDevice, i: number): void {
    const table = new Float64Array(this.shared.slots);
    let areas: readonly BarAreaMapping[];
    try {
      areas = this.runtime.mapBarAreas(d.port, { maxPerBar: MAX_AREAS });
    } catch (e) {
      throw withHint(
        e,
        `or trap this device's BARs instead: --no-mmap ${d.port} (VmOptions.noMmap)`,
      );
    }
    for (const m of areas) {
      const row = slotRow(i, m.bar, m.area);
      table[row + SLOT.OFFSET] = m.offset;
      table[row + SLOT.SIZE] = m.size;
      table[row + SLOT.HVA] = Number(m.hva);
    }
  }

  /** The BAR areas the guest reaches without exits now, by port. */
  mappedBars(): { port: string; bar: number; gpa: string; offset: number; size: number }[] {
    return (this.slots?.installed() ?? []).map((s) => ({
      port: this.deviceNames[s.device]!,
      bar: s.bar,
      gpa: `0x${s.gpa.toString(16)}`,
      offset: s.offset,
      size: s.size,
    }));
  }

  // ---- hot-plug: PCI functions added and removed while the guest runs (the HTTP API's hooks)

  /**
   * What the HTTP API (src/api/) does to this VM's devices: a device added is placed on the next
   * free slot of bus 0 (BARs in free window space, as firmware would; INTx line written; the
   * guest finds it by rescanning), one removed leaves its slot reading all ones.
   */
  apiHooks(): DeviceHooks {
    return {
      attachOptions: () => ({
        router: this.#ensureRouter(),
        intxGsi: FIRST_PCI_PIN + (this.#freeSlot() % PCI_PINS),
      }),
      plugged: (d) => this.#plug(d),
      unplugging: (port) => this.#unplug(port),
      info: () => ({
        cpus: this.cpus,
        slots: this.deviceNames.map((port, i) => ({ slot: i + 1, port: port || undefined })),
        mappedBars: this.mappedBars(),
      }),
      counters: () => this.stats(),
    };
  }

  #ensureRouter(): GsiRouter {
    this.router ??= new GsiRouter(this.vm);
    return this.router;
  }

  /** The first empty slot index (slot = index + 1). */
  #freeSlot(): number {
    const i = this.deviceNames.findIndex((n) => !n);
    return i < 0 ? this.deviceNames.length : i;
  }

  #ringOf(i: number): SharedArrayBuffer | null {
    const n = this.deviceNames[i];
    return n ? this.runtime.device(n).ring : null;
  }

  /** Tell every running vCPU that slot index `i` now holds `ring` (null: empty). */
  #publish(i: number, ring: SharedArrayBuffer | null): void {
    for (const p of this.#plugPorts) p.postMessage({ index: i, ring });
    Atomics.add(this.#ctl, CTL.PCI_GEN, 1);
  }

  /** A hot-added device (no BAR fast path: its BARs trap): placed, published, on the bus. */
  #plug(d: RuntimeDevice): Record<string, unknown> {
    const i = this.#freeSlot();
    if (i >= MAX_DEVICES)
      throw new ConflictError(
        `all ${MAX_DEVICES} PCI slots of the VM are taken: remove a device first`,
        'port',
        d.port,
      );
    const bars = new Float64Array(this.shared.bars);
    bars.fill(0, i * BARS * BAR.WORDS, (i + 1) * BARS * BAR.WORDS);
    const c = d.handle.client();
    const pin = FIRST_PCI_PIN + (i % PCI_PINS);
    const placed = placeDevice(c, d.handle.description, i, pin, this.#alloc, bars);
    const clients: (RingClient | undefined)[] = [];
    clients[i] = c;
    new PciBus(this.#ctl, bars, clients, new Float64Array(STAT.WORDS), 0).refresh(i);
    this.deviceNames[i] = d.port;
    this.#publish(i, d.handle.ring);
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
  #unplug(port: string): void {
    const i = this.deviceNames.indexOf(port);
    if (i < 0) return;
    const bars = new Float64Array(this.shared.bars);
    for (let n = 0; n < BARS; n++) bars[(i * BARS + n) * BAR.WORDS + BAR.ACTIVE] = 0;
    const table = new Float64Array(this.shared.slots);
    for (let n = 0; n < BARS; n++)
      for (let k = 0; k < MAX_AREAS; k++) table[slotRow(i, n, k) + SLOT.SIZE] = 0;
    this.slots?.sync(bars);
    this.runtime.unmapBarAreas(port);
    bars.fill(0, i * BARS * BAR.WORDS, (i + 1) * BARS * BAR.WORDS);
    this.deviceNames[i] = '';
    this.#publish(i, null);
  }

  /** Run the guest until it ends (debug-exit port, reset, triple fault, error, timeout or close()). */
  run(): Promise<VmResult> {
    if (this.#closed) return Promise.reject(new Error('the VM is closed'));
    if (this.#running) return Promise.reject(new Error('the VM has already run (a VM boots once)'));
    this.#running = this.#run();
    return this.#running;
  }

  async #run(): Promise<VmResult> {
    const t0 = performance.now();
    const state = new Int32Array(new SharedArrayBuffer(4 * this.cpus));
    const tidBuf = new SharedArrayBuffer(8 * this.cpus),
      tids = new BigUint64Array(tidBuf);
    let message: string | undefined;
    const ports = new Map<number, number>();
    const sink = new ConsoleSink(
      this.opts.onConsole ??
        ((b: Uint8Array) => {
          process.stdout.write(b);
        }),
    );
    const consoleBuf = createConsoleBuffer();
    // SIGUSR2 ends a blocking KVM_RUN; without a listener it would kill the process.
    process.on('SIGUSR2', noop);
    const rings = this.deviceNames.map((_, i) => this.#ringOf(i));
    const workers = this.vcpus.map((fd, index) => {
      const { port1, port2 } = new MessageChannel();
      this.#plugPorts.push(port1);
      const data: VcpuWorkerData = {
        index,
        vcpuFd: fd.fd,
        vmFd: this.vm.fd,
        runSize: this.#runSize,
        ctl: this.shared.ctl,
        bars: this.shared.bars,
        slots: this.shared.slots,
        stats: this.shared.stats,
        state: state.buffer as SharedArrayBuffer,
        tids: tidBuf,
        rings,
        console: consoleBuf,
        plug: port2,
      };
      const w = new Worker(WORKER_URL, {
        workerData: data,
        name: `vcpu${index}`,
        transferList: [port2],
      });
      w.on(
        'message',
        (m: {
          type: string;
          seq?: number;
          bytes?: Uint8Array;
          message?: string;
          top?: [number, number][];
        }) => {
          if (m.type === 'console') sink.take({ seq: m.seq!, bytes: m.bytes! });
          else if (m.type === 'ports')
            for (const [p, c] of m.top!) ports.set(p, (ports.get(p) ?? 0) + c);
          else if (m.type === 'error') message ??= m.message;
        },
      );
      w.on('error', (e) => {
        message ??= `vCPU ${index} crashed: ${e.message}`;
        endVm(this.#ctl, END.ERROR, index);
      });
      return new Promise<void>((resolve) =>
        w.once('exit', () => {
          endVm(this.#ctl, END.ERROR, index);
          resolve();
        }),
      );
    });
    const timer = this.opts.timeoutMs
      ? setTimeout(() => endVm(this.#ctl, END.TIMEOUT, 0), this.opts.timeoutMs)
      : undefined;
    const following = this.peers?.follow(this.#ctl);
    try {
      await Atomics.waitAsync(this.#ctl, CTL.ENDED, 0).value;
      // Every vCPU out of KVM_RUN: kick until all threads have left.
      const kicker = setInterval(() => {
        for (let i = 0; i < this.cpus; i++) kick(state, tids, i);
      }, KICK_EVERY_MS);
      for (let i = 0; i < this.cpus; i++) kick(state, tids, i);
      // A vCPU waiting on a device that no longer answers is not in KVM_RUN: closing the rings
      // ends its wait (RingClosedError). The VM is over, so the devices have no more users.
      const unstick = setTimeout(() => {
        for (const port of this.deviceNames) if (port) this.runtime.device(port).abortRequests();
      }, UNSTICK_AFTER_MS);
      await Promise.all(workers);
      clearInterval(kicker);
      clearTimeout(unstick);
    } finally {
      for (const p of this.#plugPorts.splice(0)) p.close();
      if (timer) clearTimeout(timer);
      process.off('SIGUSR2', noop);
      this.peers?.stop(this.#ctl);
      await following;
    }
    const kind = Atomics.load(this.#ctl, CTL.END_KIND);
    // Where each vCPU stopped: what to look at when a guest hangs (with nokaslr, System.map names it).
    const rips = this.vcpus.map((v) => {
      try {
        return `0x${kvm.getRegs(v).rip.toString(16)}`;
      } catch {
        return '?';
      }
    });
    return {
      rips,
      ...(kind === END.TIMEOUT ? { vcpuStates: this.vcpus.map(describeVcpu) } : {}),
      status: END_NAMES[kind] ?? 'error',
      code: kind === END.DEBUG_EXIT ? Atomics.load(this.#ctl, CTL.END_VALUE) : 0,
      ...(message !== undefined && kind === END.ERROR ? { message } : {}),
      wallMs: performance.now() - t0,
      stats: this.stats(),
      unknownPorts: Object.fromEntries(
        [...ports].sort((a, b) => b[1] - a[1]).map(([p, c]) => [`0x${p.toString(16)}`, c]),
      ),
      p2p: structuredClone(
        this.peers?.stats ?? {
          maps: 0,
          unmaps: 0,
          failures: 0,
          failuresBy: {},
          syncs: 0,
          syncMs: 0,
        },
      ),
      slots: {
        ops: Atomics.load(this.#ctl, CTL.SLOT_OPS),
        ms: Atomics.load(this.#ctl, CTL.SLOT_US) / 1000,
      },
    };
  }

  /** Exit counters summed over the vCPUs (live while running). */
  stats(): VmStats {
    return collectStats(new Float64Array(this.shared.stats), this.cpus, this.deviceNames);
  }

  /** Stop the guest if it runs, then stop the devices, unmap guest memory and close every fd. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#closed = true;
    if (this.#running) {
      endVm(this.#ctl, END.STOPPED, 0);
      await this.#running.catch(() => {});
    }
    await this.#unwind();
  }

  async #unwind(): Promise<void> {
    const errors: unknown[] = [];
    for (const u of this.#undo.splice(0).reverse()) {
      try {
        await u();
      } catch (e) {
        errors.push(e);
      }
    }
    if (errors.length)
      throw new AggregateError(
        errors,
        `closing the VM: ${errors.map((e) => (e as Error).message).join('; ')}`,
      );
  }
}
