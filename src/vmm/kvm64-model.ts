// QEMU 7.2's `-accel kvm -cpu kvm64` CPUID, leaf by leaf, as its target/i386/cpu.c builds it for
// a q35 machine with an in-kernel irqchip (Debian bookworm's 7.2, read from its source):
// the host's vendor (QEMU replaces the model's GenuineIntel with it), family 15 model 6
// stepping 1, the baseline features of its kvm64 definition plus x2APIC and the hypervisor bit,
// each filtered by what KVM supports; no cache leaves 2 and 4 for an AMD vendor, no PMU, no
// XSAVE; topology of one socket with `cpus` cores; 40 physical address bits; KVM's signature
// leaf. The KVM features leaf is filled by the caller (cpuid.ts, QEMU's default set).
import type { CpuidEntry } from '../../native/kvm.js';

const SIGNIFICANT_INDEX = 1; // KVM_CPUID_FLAG_SIGNIFCANT_INDEX: the leaf has subleaves

/** CPUID.1.EAX: family 15, model 6, stepping 1. */
const SIGNATURE = 0x00000f61;
/**
 * CPUID.1.EDX: QEMU's PPRO_FEATURES (FPU DE PSE TSC MSR PAE MCE CX8 APIC SEP PGE CMOV PAT MMX
 * FXSR SSE SSE2) and VME MTRR CLFLUSH MCA PSE36.
 */
const L1_EDX = 0x078bfbff;
const L1_EDX_HTT = 1 << 28;
/** CPUID.1.ECX: SSE3, CX16, x2APIC (QEMU's KVM default), hypervisor. */
const L1_ECX = 0x00202001,
  L1_ECX_HYPERVISOR = 1 << 31;
/** 0x80000001.EDX: SYSCALL, NX, LM and, for an AMD vendor, the aliases of leaf 1's EDX bits. */
const X1_EDX_AMD = 0x2193fbff,
  X1_EDX_INTEL = 0x20100800;
const X1_ECX_CMP_LEGACY = 1 << 1;
const MODEL_ID = 'Common KVM processor';
/** 0x80000005/6: QEMU's legacy AMD cache descriptions (64 KiB L1s, 512 KiB L2, 16 MiB L3). */
const L1_CACHE = { eax: 0x01ff01ff, ebx: 0x01ff01ff, ecx: 0x40020140, edx: 0x40020140 };
const L2_CACHE = { eax: 0, ebx: 0x42004200, ecx: 0x02008140, edx: 0x00808140 };
/** 0x80000008.EAX: 48 virtual, 40 physical address bits (QEMU's default phys-bits). */
const ADDRESS_BITS = 0x3028;
const KVM_SIGNATURE = { ebx: 0x4b4d564b, ecx: 0x564b4d56, edx: 0x0000004d }; // "KVMKVMKVM\0\0\0"

const entry = (
  fn: number,
  r: Partial<Pick<CpuidEntry, 'eax' | 'ebx' | 'ecx' | 'edx'>>,
  index = 0,
  flags = 0,
): CpuidEntry => ({
  function: fn,
  index,
  flags,
  eax: (r.eax ?? 0) >>> 0,
  ebx: (r.ebx ?? 0) >>> 0,
  ecx: (r.ecx ?? 0) >>> 0,
  edx: (r.edx ?? 0) >>> 0,
  padding: [0, 0, 0],
});

/** The 48-byte brand string in 0x80000002-4, four little-endian words per leaf. */
function brandLeaves(name: string): CpuidEntry[] {
  const b = Buffer.alloc(48);
  b.write(name, 'latin1');
  return [0, 1, 2].map((i) =>
    entry(0x80000002 + i, {
      eax: b.readUInt32LE(i * 16),
      ebx: b.readUInt32LE(i * 16 + 4),
      ecx: b.readUInt32LE(i * 16 + 8),
      edx: b.readUInt32LE(i * 16 + 12),
    }),
  );
}

/** kvm64's CPUID for vCPU `apicId` of `cpus` (one socket, `cpus` cores, one thread each). */
export function kvm64Cpuid(
  supported: readonly CpuidEntry[],
  apicId: number,
  cpus: number,
): CpuidEntry[] {
  const has = (fn: number, index = 0) =>
    supported.find((e) => e.function === fn && e.index === index) ?? entry(fn, {});
  const vendor = has(0);
  const amd = vendor.ebx === 0x68747541 || vendor.ebx === 0x6f677948; // "Auth" (AMD), "Hygo" (Hygon)
  const l1 = has(1),
    x1 = has(0x80000001);
  const coreBits = Math.ceil(Math.log2(cpus));
  const multi = cpus > 1;
  return [
    entry(0x40000000, { eax: 0x40000001, ...KVM_SIGNATURE }),
    entry(0x40000001, {}), // the caller sets the KVM features
    entry(0, { eax: 0xd, ebx: vendor.ebx, ecx: vendor.ecx, edx: vendor.edx }),
    entry(1, {
      eax: SIGNATURE,
      ebx: (apicId << 24) | (multi ? cpus << 16 : 0) | 0x0800, // CLFLUSH line: 8 quadwords
      ecx: (L1_ECX & l1.ecx) | L1_ECX_HYPERVISOR,
      edx: (L1_EDX & l1.edx) | (multi ? L1_EDX_HTT : 0),
    }),
    entry(5, { ecx: 3 }), // MONITOR/MWAIT extensions (no MONITOR bit: unused)
    entry(0xb, { eax: 0, ebx: 1, ecx: 0x100, edx: apicId }, 0, SIGNIFICANT_INDEX),
    entry(0xb, { eax: coreBits, ebx: cpus, ecx: 0x201, edx: apicId }, 1, SIGNIFICANT_INDEX),
    entry(0xb, { eax: 0, ebx: 0, ecx: 0x002, edx: apicId }, 2, SIGNIFICANT_INDEX),
    entry(0x80000000, { eax: 0x80000008, ebx: vendor.ebx, ecx: vendor.ecx, edx: vendor.edx }),
    entry(0x80000001, {
      eax: SIGNATURE,
      ecx: amd && multi ? X1_ECX_CMP_LEGACY & x1.ecx : 0,
      edx: (amd ? X1_EDX_AMD : X1_EDX_INTEL) & (x1.edx | (amd ? l1.edx & 0x0183f3ff : 0)),
    }),
    ...brandLeaves(MODEL_ID),
    entry(0x80000005, L1_CACHE),
    entry(0x80000006, L2_CACHE),
    entry(0x80000008, { eax: ADDRESS_BITS, ecx: multi ? (coreBits << 12) | (cpus - 1) : 0 }),
  ];
}
