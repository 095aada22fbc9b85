// A vCPU's state before its first KVM_RUN: CPUID, boot MSRs and local APIC LINT pins for every
// vCPU; for the boot vCPU also the registers of the Linux 32-bit boot entry (flat protected
// mode, paging off, ESI = boot_params). Application processors keep KVM's reset state: the
// in-kernel LAPIC holds them in wait-for-SIPI until the guest starts them.
import * as kvm from '../../native/kvm.js';
import type { Target } from '../../native/libc.js';
import { type CpuOptions, vcpuCpuid } from './cpuid.js';
import { BOOT_STACK_ADDR, GDT_ADDR, ZERO_PAGE_ADDR } from './memory-map.js';

const MSR_IA32_MISC_ENABLE = 0x1a0;
const MISC_ENABLE_FAST_STRING = 1n;
const MSR_MTRR_DEF_TYPE = 0x2ff;
/** MTRRs enabled, default type write-back: else the guest treats all RAM as uncached. */
const MTRR_DEF_WB = (1n << 11n) | 6n;

const APIC_LVT_LINT0 = 0x350,
  APIC_LVT_LINT1 = 0x360;
const APIC_MODE_NMI = 0x4,
  APIC_MODE_EXTINT = 0x7;

/** The GDT the 32-bit entry expects: __BOOT_CS = 0x10, __BOOT_DS = 0x18, and a TSS at 0x20. */
export const GDT = [0n, 0n, 0x00cf9b000000ffffn, 0x00cf93000000ffffn, 0x00008b0000000067n];

export function writeGdt(ram: Uint8Array): void {
  const v = new DataView(ram.buffer, ram.byteOffset + GDT_ADDR, GDT.length * 8);
  GDT.forEach((e, i) => v.setBigUint64(i * 8, e, true));
}

export function setupVcpu(
  vcpu: Target,
  index: number,
  cpus: number,
  supported: readonly kvm.CpuidEntry[],
  cpu: CpuOptions,
): void {
  kvm.setCpuid2(vcpu, vcpuCpuid(supported, index, cpus, cpu));
  kvm.setMsrs(vcpu, [
    { index: MSR_IA32_MISC_ENABLE, data: MISC_ENABLE_FAST_STRING },
    { index: MSR_MTRR_DEF_TYPE, data: MTRR_DEF_WB },
  ]);
  // LINT0 = ExtINT (the 8259 behind it), LINT1 = NMI, as the MP table says (Firecracker's set_lint).
  const lapic = kvm.getLapic(vcpu);
  const mode = (reg: number, m: number): void => {
    lapic.writeUInt32LE(((lapic.readUInt32LE(reg) & ~0x700) | (m << 8)) >>> 0, reg);
  };
  mode(APIC_LVT_LINT0, APIC_MODE_EXTINT);
  mode(APIC_LVT_LINT1, APIC_MODE_NMI);
  kvm.setLapic(vcpu, lapic);
}

/** The boot vCPU at the kernel's 32-bit entry. */
export function setupBootRegs(vcpu: Target, entry: number): void {
  const sregs = kvm.getSregs(vcpu);
  const seg = (selector: number, type: number) => ({
    base: 0n,
    limit: 0xffffffff,
    selector,
    type,
    present: 1,
    dpl: 0,
    db: 1,
    s: 1,
    l: 0,
    g: 1,
    avl: 0,
    unusable: 0,
    padding: 0,
  });
  sregs.cs = seg(0x10, 0xb); // execute/read, accessed
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = seg(0x18, 0x3); // read/write, accessed
  sregs.tr = { ...seg(0x20, 0xb), limit: 0x67, s: 0, db: 0, g: 0 }; // busy 32-bit TSS
  sregs.gdt = { base: BigInt(GDT_ADDR), limit: GDT.length * 8 - 1, padding: [0, 0, 0] };
  sregs.idt = { base: 0n, limit: 0, padding: [0, 0, 0] };
  sregs.cr0 = 0x11n; // PE, ET; paging off
  sregs.cr4 = 0n;
  sregs.efer = 0n;
  kvm.setSregs(vcpu, sregs);
  const regs = kvm.getRegs(vcpu);
  for (const k of Object.keys(regs) as (keyof kvm.Regs)[]) regs[k] = 0n;
  regs.rflags = 2n;
  regs.rip = BigInt(entry);
  regs.rsi = BigInt(ZERO_PAGE_ADDR);
  regs.rsp = BigInt(BOOT_STACK_ADDR);
  kvm.setRegs(vcpu, regs);
}
