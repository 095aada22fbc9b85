// Building a VM, as Firecracker's builder.rs (vm-run.ts runs it): /dev/kvm and the VM (identity
// map and TSS at 0xfeffc000, in-kernel irqchip and PIT), RAM as one memfd in two KVM slots and
// registered for DMA through the runtime, the assigned devices (KVM interrupt mode, BARs placed,
// INTx pins, the BAR fast path's mappings, peer mappings), the guest loaded and the vCPUs set
// up. Each step pushes its undo onto the VmParts; the caller unwinds on any failure.
import * as kvm from '../../native/kvm.js';
import { C } from '../../native/libc.js';
import {
  type BarAreaMapping,
  GsiRouter,
  InvalidSpecError,
  MemfdRegion,
  memfdRegionSource,
  OwnedFd,
  Runtime,
  type RuntimeDevice,
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
import { cpuSignature } from './cpuid.js';
import { IDENTITY_MAP_ADDR, MiB, ramRanges, TSS_ADDR } from './memory-map.js';
import type { MpPciIrq } from './mptable.js';
import { PciBus } from './pci-bus.js';
import { placeDevice } from './pci-firmware.js';
import { PeerSync } from './peer-sync.js';
import { MAX_AREAS, MAX_DEVICES, SLOT, STAT, slotRow } from './shared.js';
import { initUart } from './uart.js';
import { setupBootRegs, setupVcpu } from './vcpu-setup.js';
import type { VmOptions } from './vm.js';
import { pciPin, type VmParts } from './vm-parts.js';

const MAX_CPUS = 32;

/** Refuse options no VM can be built from, before anything is opened; read the boot files. */
export function checkVmOptions(opts: VmOptions): BootFiles {
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
  return files;
}

/** Build the VM in `p`, step by step (each undone by p.undo). */
export async function buildVm(p: VmParts, files: BootFiles): Promise<void> {
  openKvm(p);
  makeRam(p);
  await startRuntime(p);
  const pciIrqs = await addDevices(p);
  const supported = kvm.getSupportedCpuid(p.sys);
  const sig = cpuSignature(supported);
  const cmdline = p.opts.cmdline ?? DEFAULT_CMDLINE;
  const mp = { cpus: p.cpus, cpuSignature: sig.signature, cpuFeatures: sig.features, pciIrqs };
  const { entry } = loadGuest(p.ram.bytes, p.opts.memory, files, cmdline, mp);
  initUart(p.ctl);
  p.runSize = kvm.getVcpuMmapSize(p.sys);
  setupVcpus(p, supported, entry);
}

function openKvm(p: VmParts): void {
  try {
    p.sys = OwnedFd.open('/dev/kvm', C.O_RDWR);
  } catch (e) {
    throw new Error(
      `cannot open /dev/kvm (${(e as Error).message}): ` +
        'load kvm_intel or kvm_amd, and run as a user in the kvm group',
    );
  }
  p.undo.push(() => p.sys.close());
  const api = kvm.getApiVersion(p.sys);
  if (api !== kvm.KVM_C.KVM_API_VERSION)
    throw new Error(`/dev/kvm speaks API ${api}, not ${kvm.KVM_C.KVM_API_VERSION}`);
  p.vm = new OwnedFd(kvm.createVm(p.sys), 'kvm-vm');
  p.undo.push(() => p.vm.close());
  kvm.setIdentityMapAddr(p.vm, BigInt(IDENTITY_MAP_ADDR));
  kvm.setTssAddr(p.vm, TSS_ADDR);
  kvm.createIrqchip(p.vm);
  kvm.createPit2(p.vm, kvm.KVM_C.KVM_PIT_SPEAKER_DUMMY);
}

function makeRam(p: VmParts): void {
  p.ram = new MemfdRegion('vm-ram', p.opts.memory);
  p.undo.push(() => p.ram.close());
  ramRanges(p.opts.memory).forEach((r, slot) => {
    kvm.setUserMemoryRegion(p.vm, {
      slot,
      flags: 0,
      guest_phys_addr: BigInt(r.gpa),
      memory_size: BigInt(r.size),
      userspace_addr: p.ram.hva + BigInt(r.offset),
    });
  });
}

/** The runtime, with the RAM registered for DMA at IOVA == GPA. */
async function startRuntime(p: VmParts): Promise<void> {
  p.runtime = await Runtime.start(
    { iommu: p.opts.iommu ?? [], vfio: [], memory: [] },
    p.opts.logger ? { logger: p.opts.logger } : {},
  );
  p.undo.push(() => p.runtime.shutdown());
  ramRanges(p.opts.memory).forEach((r, i) => {
    p.runtime.addMemory({
      name: i === 0 ? 'ram-low' : 'ram-high',
      gpa: BigInt(r.gpa),
      size: BigInt(r.size),
      memory: memfdRegionSource(p.ram, BigInt(r.offset)),
    });
  });
}

/** Attach each device (KVM interrupt mode), place its BARs, wire its INTx pin. */
async function addDevices(p: VmParts): Promise<MpPciIrq[]> {
  const specs = p.opts.vfio ?? [];
  if (specs.length === 0) return [];
  p.router = new GsiRouter(p.vm);
  watchBarSlots(p);
  const bars = new Float64Array(p.shared.bars),
    out: MpPciIrq[] = [];
  for (const [i, spec] of specs.entries()) {
    const ioapicPin = pciPin(i);
    let d: RuntimeDevice;
    try {
      d = await p.runtime.addDevice(spec, {
        router: p.router,
        intxGsi: ioapicPin,
        supervise: p.opts.supervise ?? true,
        standby: p.opts.standby ?? false,
        ...(p.opts.faults?.[spec.port] ? { faults: p.opts.faults[spec.port] } : {}),
      });
    } catch (e) {
      // Named by its option, of the same kind (the CLI's exit status and the API read it).
      throw withPrefix(e, `--vfio port=${spec.port}${spec.bdf ? ` host=${spec.bdf}` : ''}`);
    }
    p.deviceNames.push(spec.port);
    if (!p.opts.noMmap?.includes(spec.port)) mapBars(p, d, i);
    const c = d.handle.client();
    const placed = placeDevice(c, d.handle.description, i, ioapicPin, p.alloc, bars);
    if (placed.pin) out.push({ slot: placed.slot, pin: placed.pin, ioapicPin });
  }
  // Publish the BAR map as the guest will first see it.
  const clients = specs.map((s) => p.runtime.device(s.port).client());
  const bus = new PciBus(p.ctl, bars, clients, new Float64Array(STAT.WORDS), 0, p.slots);
  clients.forEach((_, i) => bus.refresh(i));
  p.peers = new PeerSync(p.runtime, bars, p.deviceNames, p.opts.noMmap);
  await p.peers.sync();
  return out;
}

/** The BAR fast path's slots; closing deletes every one, then the mappings go, before the devices. */
function watchBarSlots(p: VmParts): void {
  const table = new Float64Array(p.shared.slots);
  p.slots = new BarSlots(p.ctl, table, p.vm.fd);
  p.undo.push(() => {
    p.slots?.clear();
    table.fill(0);
    for (const port of p.deviceNames) if (port) p.runtime.unmapBarAreas(port);
  });
}

/** The runtime mmaps each mappable area of device `i`'s BARs; the slot table records them (installed by refresh). */
function mapBars(p: VmParts, d: RuntimeDevice, i: number): void {
  const table = new Float64Array(p.shared.slots);
  let areas: readonly BarAreaMapping[];
  try {
    areas = p.runtime.mapBarAreas(d.port, { maxPerBar: MAX_AREAS });
  } catch (e) {
    throw withHint(e, `or trap this device's BARs instead: --no-mmap ${d.port} (VmOptions.noMmap)`);
  }
  for (const m of areas) {
    const row = slotRow(i, m.bar, m.area);
    table[row + SLOT.OFFSET] = m.offset;
    table[row + SLOT.SIZE] = m.size;
    table[row + SLOT.HVA] = Number(m.hva);
  }
}

/** One vCPU fd per CPU with its CPUID, registers for the boot CPU. */
function setupVcpus(
  p: VmParts,
  supported: ReturnType<typeof kvm.getSupportedCpuid>,
  entry: number,
): void {
  const tscDeadline =
    !!p.opts.tscDeadline && kvm.checkExtension(p.vm, kvm.KVM_C.KVM_CAP_TSC_DEADLINE_TIMER) > 0;
  for (let i = 0; i < p.cpus; i++) {
    const fd = new OwnedFd(kvm.createVcpu(p.vm, i), `kvm-vcpu${i}`);
    p.vcpus.push(fd);
    setupVcpu(fd, i, p.cpus, supported, {
      model: p.opts.cpuModel ?? 'kvm64',
      pv: p.opts.pvFeatures ?? 'qemu',
      tscDeadline,
    });
    if (i === 0) setupBootRegs(fd, entry);
  }
  p.undo.push(() => {
    for (const v of p.vcpus.splice(0).reverse()) v.close();
  });
}
