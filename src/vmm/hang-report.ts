// What a vCPU looked like when its VM ended without the guest's say (a timeout): where it ran,
// whether it could take interrupts, its local APIC (vectors requested, in service, the timer)
// and the TSC deadline against the TSC. A guest stuck with both vCPUs halted is waiting for an
// interrupt; this says whether one was pending, in service, or due from a timer never fired.
import * as kvm from '../../native/kvm.js';
import type { Target } from '../../native/libc.js';

const MP_STATES = ['runnable', 'uninitialized', 'init-received', 'halted', 'sipi-received'];
const MSR_TSC = 0x10,
  MSR_TSC_DEADLINE = 0x6e0;
const TIMER_MODES = ['one-shot', 'periodic', 'tsc-deadline', 'reserved'];
/** Local APIC register offsets in KVM_GET_LAPIC's page (one 32-bit register every 16 bytes). */
const APIC_TPR = 0x80,
  APIC_PPR = 0xa0,
  APIC_ISR = 0x100,
  APIC_IRR = 0x200,
  APIC_LVT_TIMER = 0x320,
  APIC_TMICT = 0x380,
  APIC_TMCCT = 0x390;
const LVT_MASKED = 1 << 16;

/** The vectors set in a 256-bit APIC register array (APIC_ISR, APIC_IRR). */
function vectors(apic: Buffer, base: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < 8; i++) {
    const w = apic.readUInt32LE(base + i * 0x10);
    for (let b = 0; b < 32; b++) if (w & (1 << b)) out.push(i * 32 + b);
  }
  return out;
}

/** One line on a vCPU that is out of KVM_RUN; a call KVM refuses is named, not thrown. */
export function describeVcpu(t: Target): string {
  const parts: string[] = [];
  const tryPart = (what: string, f: () => string): void => {
    try {
      parts.push(f());
    } catch (e) {
      parts.push(`${what}: ${(e as Error).message}`);
    }
  };
  tryPart('regs', () => {
    const r = kvm.getRegs(t);
    return `rip 0x${r.rip.toString(16)} IF=${(r.rflags >> 9n) & 1n}`;
  });
  tryPart('mp state', () => {
    const s = kvm.getMpState(t);
    return MP_STATES[s] ?? `mp_state ${s}`;
  });
  tryPart('lapic', () => {
    const a = kvm.getLapic(t),
      lvt = a.readUInt32LE(APIC_LVT_TIMER);
    const hex = (o: number): string => `0x${a.readUInt32LE(o).toString(16)}`;
    return [
      `TPR ${hex(APIC_TPR)} PPR ${hex(APIC_PPR)}`,
      `ISR [${vectors(a, APIC_ISR).join(',')}] IRR [${vectors(a, APIC_IRR).join(',')}]`,
      `timer ${TIMER_MODES[(lvt >> 17) & 3]} vector ${lvt & 0xff}${lvt & LVT_MASKED ? ' masked' : ''}`,
      `TMICT ${hex(APIC_TMICT)} TMCCT ${hex(APIC_TMCCT)}`,
    ].join(' ');
  });
  tryPart('msrs', () => {
    const [tsc, deadline] = kvm.getMsrs(t, [MSR_TSC, MSR_TSC_DEADLINE]);
    if (tsc === undefined || deadline === undefined) return 'TSC/TSC_DEADLINE refused';
    if (deadline === 0n) return 'TSC deadline disarmed';
    const ahead = deadline - tsc;
    return ahead > 0n
      ? `TSC deadline in ${ahead / 1000n}k cycles`
      : `TSC deadline past by ${-ahead / 1000n}k cycles`;
  });
  return parts.join('; ');
}
