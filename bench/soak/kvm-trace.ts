// The lab kernel's KVM tracepoints in a tracefs instance of their own, for the soak: what KVM did
// with the guest's last exits, exceptions and interrupts before a boot died (a triple fault
// leaves no guest state: KVM resets the vCPU). Cleared at each boot; its tail kept for one that
// did not pass.

import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';

const TRACEFS = '/sys/kernel/tracing';
const INSTANCE = `${TRACEFS}/instances/vfr-soak`;
/** Exits, injected exceptions and interrupts, the APIC's view, emulation and page faults. */
const EVENTS = [
  'kvm_exit',
  'kvm_inj_exception',
  'kvm_inj_virq',
  'kvm_apic_accept_irq',
  'kvm_emulate_insn',
  'kvm_page_fault',
  'kvm_fpu',
  'kvm_msr',
  'kvm_cpuid',
  'kvm_hypercall',
  'kvm_pv_eoi',
];

export class KvmTrace {
  private constructor(readonly events: string[]) {}

  static start(): KvmTrace {
    if (!existsSync(`${TRACEFS}/instances`))
      execFileSync('mount', ['-t', 'tracefs', 'nodev', TRACEFS]);
    if (!existsSync(INSTANCE)) mkdirSync(INSTANCE);
    writeFileSync(`${INSTANCE}/buffer_size_kb`, '8192');
    const on: string[] = [];
    for (const e of EVENTS) {
      const f = `${INSTANCE}/events/kvm/${e}/enable`;
      if (existsSync(f)) {
        writeFileSync(f, '1');
        on.push(e);
      }
    }
    writeFileSync(`${INSTANCE}/tracing_on`, '1');
    return new KvmTrace(on);
  }

  clear(): void {
    writeFileSync(`${INSTANCE}/trace`, '');
  }

  tail(lines: number): string {
    return readFileSync(`${INSTANCE}/trace`, 'utf8').split('\n').slice(-lines).join('\n');
  }

  stop(): void {
    writeFileSync(`${INSTANCE}/tracing_on`, '0');
    try {
      rmdirSync(INSTANCE);
    } catch {
      /* busy: left for the lab's power-off */
    }
  }
}
