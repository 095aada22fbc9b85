// KVM uAPI (<linux/kvm.h>, /dev/kvm): what the runtime needs for interrupt routing (irqchip,
// GSI routing, irqfd) and what a minimal VMM needs to run a guest (memory, vCPUs, KVM_RUN).
import { _IO, _IOR, _IOW, _IOWR, defineConstants, defineIoctls } from './ioctl.js';
import {
  anonUnion,
  array,
  decode,
  encode,
  encodeInto,
  flex,
  type Init,
  inlineStruct,
  inlineUnion,
  s32,
  struct,
  u8,
  u16,
  u32,
  u64,
  type Value,
} from './layout.js';
import { ioctl, ioctlInt, type Target } from './libc.js';

const KVMIO = 0xae;

export const kvm_userspace_memory_region = struct('struct kvm_userspace_memory_region', {
  slot: u32,
  flags: u32,
  guest_phys_addr: u64,
  memory_size: u64,
  userspace_addr: u64,
});
export const kvm_irq_level = struct('struct kvm_irq_level', {
  irq: anonUnion({ irq: u32, status: s32 }),
  level: u32,
});
export const kvm_irq_routing_irqchip = struct('struct kvm_irq_routing_irqchip', {
  irqchip: u32,
  pin: u32,
});
export const kvm_irq_routing_msi = struct('struct kvm_irq_routing_msi', {
  address_lo: u32,
  address_hi: u32,
  data: u32,
  devid: anonUnion({ pad: u32, devid: u32 }),
});
export const kvm_irq_routing_entry = struct('struct kvm_irq_routing_entry', {
  gsi: u32,
  type: u32,
  flags: u32,
  pad: u32,
  u: inlineUnion({
    irqchip: kvm_irq_routing_irqchip,
    msi: kvm_irq_routing_msi,
    pad: array(u32, 8),
  }),
});
export const kvm_irq_routing = struct('struct kvm_irq_routing', {
  nr: u32,
  flags: u32,
  entries: flex(kvm_irq_routing_entry),
});
export const kvm_irqfd = struct('struct kvm_irqfd', {
  fd: u32,
  gsi: u32,
  flags: u32,
  resamplefd: u32,
  pad: array(u8, 16),
});
export const kvm_msi = struct('struct kvm_msi', {
  address_lo: u32,
  address_hi: u32,
  data: u32,
  flags: u32,
  devid: u32,
  pad: array(u8, 12),
});
/** A vCPU's run state (KVM_GET_MP_STATE): runnable, halted, waiting for INIT or SIPI. */
export const kvm_mp_state = struct('struct kvm_mp_state', { mp_state: u32 });
/** The local APIC's register page (KVM_GET_LAPIC/KVM_SET_LAPIC): IRR at 0x200, SVR at 0xf0. */
export const kvm_lapic_state = struct('struct kvm_lapic_state', { regs: array(u8, 0x400) });
export const kvm_regs = struct('struct kvm_regs', {
  rax: u64,
  rbx: u64,
  rcx: u64,
  rdx: u64,
  rsi: u64,
  rdi: u64,
  rsp: u64,
  rbp: u64,
  r8: u64,
  r9: u64,
  r10: u64,
  r11: u64,
  r12: u64,
  r13: u64,
  r14: u64,
  r15: u64,
  rip: u64,
  rflags: u64,
});
export const kvm_segment = struct('struct kvm_segment', {
  base: u64,
  limit: u32,
  selector: u16,
  type: u8,
  present: u8,
  dpl: u8,
  db: u8,
  s: u8,
  l: u8,
  g: u8,
  avl: u8,
  unusable: u8,
  padding: u8,
});
export const kvm_dtable = struct('struct kvm_dtable', {
  base: u64,
  limit: u16,
  padding: array(u16, 3),
});
export const kvm_sregs = struct('struct kvm_sregs', {
  cs: kvm_segment,
  ds: kvm_segment,
  es: kvm_segment,
  fs: kvm_segment,
  gs: kvm_segment,
  ss: kvm_segment,
  tr: kvm_segment,
  ldt: kvm_segment,
  gdt: kvm_dtable,
  idt: kvm_dtable,
  cr0: u64,
  cr2: u64,
  cr3: u64,
  cr4: u64,
  cr8: u64,
  efer: u64,
  apic_base: u64,
  interrupt_bitmap: array(u64, 4),
});
/** The shared kvm_run page: the exit reasons a minimal VMM handles (I/O, MMIO). */
export const kvm_run = struct('struct kvm_run', {
  request_interrupt_window: u8,
  immediate_exit: u8,
  padding1: array(u8, 6),
  exit_reason: u32,
  ready_for_interrupt_injection: u8,
  if_flag: u8,
  flags: u16,
  cr8: u64,
  apic_base: u64,
  exit: anonUnion({
    io: inlineStruct({ direction: u8, size: u8, port: u16, count: u32, data_offset: u64 }),
    mmio: inlineStruct({ phys_addr: u64, data: array(u8, 8), len: u32, is_write: u8 }),
    padding: array(u8, 256),
  }),
  kvm_valid_regs: u64,
  kvm_dirty_regs: u64,
  s: inlineUnion({ padding: array(u8, 2048) }),
});

/** One CPUID leaf/subleaf (KVM_GET_SUPPORTED_CPUID gives them, KVM_SET_CPUID2 takes them). */
export const kvm_cpuid_entry2 = struct('struct kvm_cpuid_entry2', {
  function: u32,
  index: u32,
  flags: u32,
  eax: u32,
  ebx: u32,
  ecx: u32,
  edx: u32,
  padding: array(u32, 3),
});
export const kvm_cpuid2 = struct('struct kvm_cpuid2', {
  nent: u32,
  padding: u32,
  entries: flex(kvm_cpuid_entry2),
});
export const kvm_pit_config = struct('struct kvm_pit_config', { flags: u32, pad: array(u32, 15) });
export const kvm_msr_entry = struct('struct kvm_msr_entry', {
  index: u32,
  reserved: u32,
  data: u64,
});
export const kvm_msrs = struct('struct kvm_msrs', {
  nmsrs: u32,
  pad: u32,
  entries: flex(kvm_msr_entry),
});

export const KVM = defineIoctls('linux/kvm.h', {
  KVM_GET_SUPPORTED_CPUID: _IOWR(KVMIO, 0x05, kvm_cpuid2.size),
  KVM_SET_IDENTITY_MAP_ADDR: _IOW(KVMIO, 0x48, 8),
  KVM_CREATE_PIT2: _IOW(KVMIO, 0x77, kvm_pit_config.size),
  KVM_GET_MSRS: _IOWR(KVMIO, 0x88, kvm_msrs.size),
  KVM_SET_MSRS: _IOW(KVMIO, 0x89, kvm_msrs.size),
  KVM_SET_CPUID2: _IOW(KVMIO, 0x90, kvm_cpuid2.size),
  KVM_GET_API_VERSION: _IO(KVMIO, 0x00),
  KVM_CREATE_VM: _IO(KVMIO, 0x01),
  KVM_CHECK_EXTENSION: _IO(KVMIO, 0x03),
  KVM_GET_VCPU_MMAP_SIZE: _IO(KVMIO, 0x04),
  KVM_CREATE_VCPU: _IO(KVMIO, 0x41),
  KVM_SET_USER_MEMORY_REGION: _IOW(KVMIO, 0x46, kvm_userspace_memory_region.size),
  KVM_SET_TSS_ADDR: _IO(KVMIO, 0x47),
  KVM_CREATE_IRQCHIP: _IO(KVMIO, 0x60),
  KVM_IRQ_LINE: _IOW(KVMIO, 0x61, kvm_irq_level.size),
  KVM_SET_GSI_ROUTING: _IOW(KVMIO, 0x6a, kvm_irq_routing.size),
  KVM_IRQFD: _IOW(KVMIO, 0x76, kvm_irqfd.size),
  KVM_SIGNAL_MSI: _IOW(KVMIO, 0xa5, kvm_msi.size),
  KVM_RUN: _IO(KVMIO, 0x80),
  KVM_GET_REGS: _IOR(KVMIO, 0x81, kvm_regs.size),
  KVM_SET_REGS: _IOW(KVMIO, 0x82, kvm_regs.size),
  KVM_GET_SREGS: _IOR(KVMIO, 0x83, kvm_sregs.size),
  KVM_SET_SREGS: _IOW(KVMIO, 0x84, kvm_sregs.size),
  KVM_GET_LAPIC: _IOR(KVMIO, 0x8e, kvm_lapic_state.size),
  KVM_GET_MP_STATE: _IOR(KVMIO, 0x98, kvm_mp_state.size),
  KVM_SET_LAPIC: _IOW(KVMIO, 0x8f, kvm_lapic_state.size),
});

export const KVM_C = defineConstants('linux/kvm.h', {
  KVM_API_VERSION: 12,
  KVM_CAP_USER_MEMORY: 3,
  KVM_CAP_IRQ_ROUTING: 25,
  KVM_CAP_IRQFD: 32,
  KVM_CAP_SIGNAL_MSI: 77,
  KVM_CAP_TSC_DEADLINE_TIMER: 72,
  KVM_IRQ_ROUTING_IRQCHIP: 1,
  KVM_IRQ_ROUTING_MSI: 2,
  KVM_IRQFD_FLAG_DEASSIGN: 1 << 0,
  KVM_IRQFD_FLAG_RESAMPLE: 1 << 1,
  KVM_EXIT_UNKNOWN: 0,
  KVM_EXIT_IO: 2,
  KVM_EXIT_HLT: 5,
  KVM_EXIT_MMIO: 6,
  KVM_EXIT_SHUTDOWN: 8,
  KVM_EXIT_FAIL_ENTRY: 9,
  KVM_EXIT_INTR: 10,
  KVM_EXIT_INTERNAL_ERROR: 17,
  KVM_EXIT_SYSTEM_EVENT: 24,
  KVM_CPUID_FLAG_SIGNIFCANT_INDEX: 1 << 0,
  KVM_PIT_SPEAKER_DUMMY: 1,
  KVM_EXIT_IO_IN: 0,
  KVM_EXIT_IO_OUT: 1,
  KVM_IRQCHIP_PIC_MASTER: 0,
  KVM_IRQCHIP_PIC_SLAVE: 1,
  KVM_IRQCHIP_IOAPIC: 2,
  KVM_APIC_REG_SIZE: 0x400,
});

export type CpuidEntry = Value<typeof kvm_cpuid_entry2>;
export type RoutingEntry = Value<typeof kvm_irq_routing_entry>;
export type Regs = Value<typeof kvm_regs>;
export type Sregs = Value<typeof kvm_sregs>;

export const getApiVersion = (t: Target): number =>
  ioctlInt(t, 'KVM_GET_API_VERSION', KVM.KVM_GET_API_VERSION, 0);
export const createVm = (t: Target, type = 0): number =>
  ioctlInt(t, 'KVM_CREATE_VM', KVM.KVM_CREATE_VM, type);
export const checkExtension = (t: Target, cap: number): number =>
  ioctlInt(t, 'KVM_CHECK_EXTENSION', KVM.KVM_CHECK_EXTENSION, cap);
export const getVcpuMmapSize = (t: Target): number =>
  ioctlInt(t, 'KVM_GET_VCPU_MMAP_SIZE', KVM.KVM_GET_VCPU_MMAP_SIZE, 0);
export const createVcpu = (t: Target, id: number): number =>
  ioctlInt(t, 'KVM_CREATE_VCPU', KVM.KVM_CREATE_VCPU, id);
export const setTssAddr = (t: Target, addr: number): void => {
  ioctlInt(t, 'KVM_SET_TSS_ADDR', KVM.KVM_SET_TSS_ADDR, addr);
};
export const createIrqchip = (t: Target): void => {
  ioctlInt(t, 'KVM_CREATE_IRQCHIP', KVM.KVM_CREATE_IRQCHIP, 0);
};
export const run = (t: Target): void => {
  ioctlInt(t, 'KVM_RUN', KVM.KVM_RUN, 0);
};

export function setUserMemoryRegion(t: Target, r: Value<typeof kvm_userspace_memory_region>): void {
  ioctl(
    t,
    'KVM_SET_USER_MEMORY_REGION',
    KVM.KVM_SET_USER_MEMORY_REGION,
    encode(kvm_userspace_memory_region, r),
  );
}

export function irqLine(t: Target, irq: number, level: number): void {
  ioctl(
    t,
    'KVM_IRQ_LINE',
    KVM.KVM_IRQ_LINE,
    encode(kvm_irq_level, { irq: { irq, status: irq }, level }),
  );
}

/** Replace the VM's whole GSI routing table (KVM has no incremental update). */
export function setGsiRouting(t: Target, entries: readonly Init<RoutingEntry>[]): void {
  const buf = encode(
    kvm_irq_routing,
    { nr: entries.length },
    entries.length * kvm_irq_routing_entry.size,
  );
  entries.forEach((e, i) =>
    encodeInto(
      kvm_irq_routing_entry,
      buf,
      e,
      kvm_irq_routing.size + i * kvm_irq_routing_entry.size,
    ),
  );
  ioctl(t, 'KVM_SET_GSI_ROUTING', KVM.KVM_SET_GSI_ROUTING, buf);
}

export function irqfd(
  t: Target,
  a: { fd: number; gsi: number; flags?: number; resamplefd?: number },
): void {
  ioctl(
    t,
    'KVM_IRQFD',
    KVM.KVM_IRQFD,
    encode(kvm_irqfd, { fd: a.fd, gsi: a.gsi, flags: a.flags ?? 0, resamplefd: a.resamplefd ?? 0 }),
  );
}

/** Inject one MSI; returns >0 if delivered, 0 if the guest blocked it. */
export function signalMsi(
  t: Target,
  m: { address_lo: number; address_hi: number; data: number },
): number {
  return ioctl(t, 'KVM_SIGNAL_MSI', KVM.KVM_SIGNAL_MSI, encode(kvm_msi, m));
}

export function getRegs(t: Target): Regs {
  const buf = Buffer.alloc(kvm_regs.size);
  ioctl(t, 'KVM_GET_REGS', KVM.KVM_GET_REGS, buf);
  return decode(kvm_regs, buf);
}
export const setRegs = (t: Target, r: Regs): void => {
  ioctl(t, 'KVM_SET_REGS', KVM.KVM_SET_REGS, encode(kvm_regs, r));
};

export function getSregs(t: Target): Sregs {
  const buf = Buffer.alloc(kvm_sregs.size);
  ioctl(t, 'KVM_GET_SREGS', KVM.KVM_GET_SREGS, buf);
  return decode(kvm_sregs, buf);
}
export const setSregs = (t: Target, s: Sregs): void => {
  ioctl(t, 'KVM_SET_SREGS', KVM.KVM_SET_SREGS, encode(kvm_sregs, s));
};

/** A vCPU's local APIC register page (raw bytes: 32-bit registers every 16 bytes). */
export function getLapic(t: Target): Buffer {
  const buf = Buffer.alloc(kvm_lapic_state.size);
  ioctl(t, 'KVM_GET_LAPIC', KVM.KVM_GET_LAPIC, buf);
  return buf;
}
export function setLapic(t: Target, regs: Buffer): void {
  if (regs.length !== kvm_lapic_state.size)
    throw new RangeError(`KVM_SET_LAPIC takes ${kvm_lapic_state.size} bytes, not ${regs.length}`);
  ioctl(t, 'KVM_SET_LAPIC', KVM.KVM_SET_LAPIC, regs);
}

/** The CPUID leaves KVM can give a guest (KVM_GET_SUPPORTED_CPUID on /dev/kvm). */
export function getSupportedCpuid(t: Target): CpuidEntry[] {
  const max = 256; // the kernel's KVM_MAX_CPUID_ENTRIES (not in the uAPI); E2BIG if KVM has more
  const buf = encode(kvm_cpuid2, { nent: max }, max * kvm_cpuid_entry2.size);
  ioctl(t, 'KVM_GET_SUPPORTED_CPUID', KVM.KVM_GET_SUPPORTED_CPUID, buf);
  const n = buf.readUInt32LE(0);
  return Array.from({ length: n }, (_, i) =>
    decode(kvm_cpuid_entry2, buf, kvm_cpuid2.size + i * kvm_cpuid_entry2.size),
  );
}

export function setCpuid2(t: Target, entries: readonly CpuidEntry[]): void {
  const buf = encode(kvm_cpuid2, { nent: entries.length }, entries.length * kvm_cpuid_entry2.size);
  entries.forEach((e, i) =>
    encodeInto(kvm_cpuid_entry2, buf, e, kvm_cpuid2.size + i * kvm_cpuid_entry2.size),
  );
  ioctl(t, 'KVM_SET_CPUID2', KVM.KVM_SET_CPUID2, buf);
}

export function createPit2(t: Target, flags: number): void {
  ioctl(t, 'KVM_CREATE_PIT2', KVM.KVM_CREATE_PIT2, encode(kvm_pit_config, { flags }));
}

/** Where KVM (VMX) puts its real-mode identity page table: one page the guest must not use. */
export function setIdentityMapAddr(t: Target, addr: bigint): void {
  const buf = Buffer.alloc(8);
  buf.writeBigUInt64LE(addr);
  ioctl(t, 'KVM_SET_IDENTITY_MAP_ADDR', KVM.KVM_SET_IDENTITY_MAP_ADDR, buf);
}

/** A vCPU's run state: KVM_MP_STATE_RUNNABLE (0), _HALTED (3), ... */
export function getMpState(t: Target): number {
  const buf = Buffer.alloc(kvm_mp_state.size);
  ioctl(t, 'KVM_GET_MP_STATE', KVM.KVM_GET_MP_STATE, buf);
  return buf.readUInt32LE(0);
}

/** Read MSRs; an MSR KVM refuses (and those after it) reads as undefined. */
export function getMsrs(t: Target, indexes: readonly number[]): (bigint | undefined)[] {
  const buf = encode(kvm_msrs, { nmsrs: indexes.length }, indexes.length * kvm_msr_entry.size);
  indexes.forEach((index, i) =>
    encodeInto(kvm_msr_entry, buf, { index, data: 0n }, kvm_msrs.size + i * kvm_msr_entry.size),
  );
  const n = ioctl(t, 'KVM_GET_MSRS', KVM.KVM_GET_MSRS, buf);
  return indexes.map((_, i) =>
    i < n ? decode(kvm_msr_entry, buf, kvm_msrs.size + i * kvm_msr_entry.size).data : undefined,
  );
}

/** Set MSRs; returns how many KVM set (it stops at the first it refuses). */
export function setMsrs(t: Target, msrs: readonly { index: number; data: bigint }[]): number {
  const buf = encode(kvm_msrs, { nmsrs: msrs.length }, msrs.length * kvm_msr_entry.size);
  msrs.forEach((m, i) => encodeInto(kvm_msr_entry, buf, m, kvm_msrs.size + i * kvm_msr_entry.size));
  return ioctl(t, 'KVM_SET_MSRS', KVM.KVM_SET_MSRS, buf);
}
