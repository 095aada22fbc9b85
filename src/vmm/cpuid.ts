// The CPUID a vCPU gets, by CPU model. 'kvm64' is what QEMU 7.2 gives `-accel kvm -cpu kvm64`
// (kvm64-model.ts: a K8-class CPU of the host's vendor with only its baseline features, and
// QEMU's default paravirtual set); 'supported' is what KVM supports cut down to a conservative
// x86-64 baseline (below): what this VMM gave before issue 22. In the lab (nested KVM on TCG)
// QEMU's `-cpu host` crashed an L2 Linux in fpstate_reset while kvm64 worked, so 'supported'
// drops XSAVE and everything it carries (AVX, AVX-512, AMX, PKU, leaf 0xD), as well as features
// a nested guest cannot use (VMX/SVM, MONITOR, perf counters).
import type { CpuidEntry } from '../../native/kvm.js';
import { kvm64Cpuid } from './kvm64-model.js';

export type CpuModel = 'kvm64' | 'supported';
/** The KVM paravirtual features offered (leaf 0x40000001): QEMU's default set, or all KVM has. */
export type PvFeatures = 'qemu' | 'supported';

export interface CpuOptions {
  model: CpuModel;
  pv: PvFeatures;
  /** Offer the TSC-deadline timer (see guestCpuid). */
  tscDeadline: boolean;
}

/**
 * QEMU's default KVM features for a named model (target/i386/kvm/kvm-cpu.c kvm_default_props):
 * kvmclock (CLOCKSOURCE and CLOCKSOURCE2), NOP_IO_DELAY, ASYNC_PF, STEAL_TIME, PV_EOI and
 * CLOCKSOURCE_STABLE_BIT: no PV_UNHALT (paravirt spinlocks: a vCPU halts with interrupts off
 * until kicked), PV_TLB_FLUSH, PV_SEND_IPI, POLL_CONTROL, PV_SCHED_YIELD or ASYNC_PF_INT.
 */
export const KVM_FEATURES_QEMU = 0x0100007b;
export const KVM_CPUID_FEATURES = 0x40000001;

/** The CPUID of vCPU `apicId` of `cpus`, by model, from what KVM supports. */
export function vcpuCpuid(
  supported: readonly CpuidEntry[],
  apicId: number,
  cpus: number,
  o: CpuOptions,
): CpuidEntry[] {
  const entries =
    o.model === 'kvm64'
      ? kvm64Cpuid(supported, apicId, cpus)
      : guestCpuid(supported, apicId, cpus, o.tscDeadline);
  const kvmAll = supported.find((e) => e.function === KVM_CPUID_FEATURES)?.eax ?? 0;
  for (const e of entries) {
    if (e.function === KVM_CPUID_FEATURES) {
      e.eax = (o.pv === 'qemu' ? kvmAll & KVM_FEATURES_QEMU : kvmAll) >>> 0;
      if (o.pv === 'qemu') e.edx = 0; // no hints (KVM_HINTS_REALTIME)
    }
    if (o.model === 'kvm64' && o.tscDeadline && e.function === 1)
      e.ecx = (e.ecx | L1_ECX_TSC_DEADLINE) >>> 0;
  }
  return entries;
}

const bits = (...b: number[]): number => b.reduce((m, x) => (m | (1 << x)) >>> 0, 0);

/** Leaf 1 ECX: SSE3, PCLMUL, SSSE3, CX16, SSE4.1, SSE4.2, x2APIC, MOVBE, POPCNT, AES, RDRAND, hypervisor. */
const L1_ECX = bits(0, 1, 9, 13, 19, 20, 21, 22, 23, 25, 30, 31);
/** Leaf 7 EBX: FSGSBASE, BMI1, SMEP, BMI2, ERMS, ADX, SMAP, CLFLUSHOPT. */
const L7_EBX = bits(0, 3, 7, 8, 9, 19, 20, 23);
/** 0x80000001 ECX: LAHF/SAHF, ABM (LZCNT), SSE4A, PREFETCHW. */
const X1_ECX = bits(0, 5, 6, 8);
/** Leaf 1 EDX: HTT, set when there is more than one vCPU. */
const L1_EDX_HTT = 1 << 28;

const L1_ECX_TSC_DEADLINE = 1 << 24,
  L1_ECX_HYPERVISOR = 1 << 31;
/** Leaf 6 EAX: the APIC timer keeps running in deep C-states (KVM's is always running). */
const L6_EAX_ARAT = 1 << 2;

/**
 * KVM's supported CPUID filtered to the baseline, with vCPU `apicId`'s ids filled in. The
 * "hypervisor" bit is set as QEMU sets it (without it Linux never looks at leaf 0x40000000,
 * so no kvmclock). The TSC-deadline timer only with `tscDeadline` (off by default, as QEMU's
 * kvm64): in the lab (nested SVM on TCG), 2 of 4 guests booted with it got no local timer
 * interrupt at all (LOC 0 on both vCPUs) and one hung in the e1000e probe's usleep_range;
 * with the LAPIC timer in one-shot mode (lapic=notscdeadline) the same guest passed.
 */
export function guestCpuid(
  supported: readonly CpuidEntry[],
  apicId: number,
  cpus: number,
  tscDeadline = false,
): CpuidEntry[] {
  const out: CpuidEntry[] = [];
  for (const s of supported) {
    const e = { ...s, padding: [0, 0, 0] };
    switch (e.function) {
      case 0x1:
        e.ecx = (e.ecx & L1_ECX) | L1_ECX_HYPERVISOR | (tscDeadline ? L1_ECX_TSC_DEADLINE : 0);
        e.ebx = ((e.ebx & 0x0000ffff) | ((cpus & 0xff) << 16) | ((apicId & 0xff) << 24)) >>> 0;
        e.edx = cpus > 1 ? (e.edx | L1_EDX_HTT) >>> 0 : (e.edx & ~L1_EDX_HTT) >>> 0;
        break;
      case 0x6:
        e.eax &= L6_EAX_ARAT;
        e.ebx = e.ecx = e.edx = 0;
        break; // no thermal/power management
      case 0x7:
        if (e.index === 0) {
          e.eax = 0;
          e.ebx &= L7_EBX;
          e.ecx = 0;
          e.edx = 0;
        } else {
          e.eax = e.ebx = e.ecx = e.edx = 0;
        }
        break;
      case 0xa:
        e.eax = e.ebx = e.ecx = e.edx = 0;
        break; // no architectural perf counters
      case 0xb:
      case 0x1f:
        e.edx = apicId;
        break; // x2APIC id of this vCPU
      case 0xd:
      case 0x14:
      case 0x19:
      case 0x1d:
      case 0x1e:
        continue; // XSAVE, PT, KL, AMX
      case 0x80000001:
        e.ecx &= X1_ECX;
        break;
      case 0x8000001e:
        e.eax = apicId;
        break;
    }
    e.eax >>>= 0;
    e.ebx >>>= 0;
    e.ecx >>>= 0;
    e.edx >>>= 0;
    out.push(e);
  }
  return out;
}

/** Family/model/stepping and feature flags for the MP table's processor entries. */
export function cpuSignature(supported: readonly CpuidEntry[]): {
  signature: number;
  features: number;
} {
  const l1 = supported.find((e) => e.function === 1);
  return { signature: (l1?.eax ?? 0x600) & 0xfff, features: l1?.edx ?? 0x201 };
}
