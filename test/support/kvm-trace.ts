// The lab kernel's KVM tracepoints in a tracefs instance of our own: what KVM did with a guest's
// last exits, injected exceptions and interrupts before a boot died. A triple fault leaves no
// guest state (KVM resets the vCPU) and a livelock shows only counters, so the suites and the
// soak read this trace to name how a boot ended (summarize): it is what told the lab's livelock
// (a vCPU looping on a nested page fault while delivering a #PF, on QEMU's guest as on ours)
// from a bug of ours. Every VM of the lab kernel is traced, the reference QEMU's too.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';

const TRACEFS = '/sys/kernel/tracing';
const INSTANCE = `${TRACEFS}/instances/vfio-runtime`;
/** Exits, injected exceptions and interrupts, emulated instructions, MSRs and hypercalls. */
const EVENTS = [
  'kvm_exit',
  'kvm_inj_exception',
  'kvm_inj_virq',
  'kvm_emulate_insn',
  'kvm_msr',
  'kvm_hypercall',
  'kvm_pv_eoi',
];

export class KvmTrace {
  #paused = false;
  private constructor(readonly events: string[]) {}

  /** Starts tracing (root, in the lab); undefined where there is no tracefs with KVM events. */
  static start(bufferKb = 16384): KvmTrace | undefined {
    try {
      if (!existsSync(`${TRACEFS}/instances`))
        execFileSync('mount', ['-t', 'tracefs', 'nodev', TRACEFS], { stdio: 'ignore' });
      if (!existsSync(`${TRACEFS}/events/kvm`)) return undefined;
      if (!existsSync(INSTANCE)) mkdirSync(INSTANCE);
      writeFileSync(`${INSTANCE}/buffer_size_kb`, String(bufferKb));
      const on = EVENTS.filter((e) => {
        const f = `${INSTANCE}/events/kvm/${e}/enable`;
        if (!existsSync(f)) return false;
        writeFileSync(f, '1');
        return true;
      });
      writeFileSync(`${INSTANCE}/tracing_on`, '1');
      return new KvmTrace(on);
    } catch {
      return undefined;
    }
  }

  clear(): void {
    writeFileSync(`${INSTANCE}/trace`, '');
    this.resume();
  }

  /** Stops recording, keeping what the buffer holds (the moment a guest went quiet). */
  pause(): void {
    if (this.#paused) return;
    writeFileSync(`${INSTANCE}/tracing_on`, '0');
    this.#paused = true;
  }

  resume(): void {
    if (!this.#paused) return;
    writeFileSync(`${INSTANCE}/tracing_on`, '1');
    this.#paused = false;
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

/**
 * One line naming what the trace's last events show, or undefined when they show nothing known:
 * `npf-loop-in-pf-delivery`: one vCPU's last exits (at least LOOP_EXITS, to the trace's end) are
 * all a nested page fault at one RIP and GPA while it delivered a #PF (exit_int_info valid,
 * vector 14), each answered by KVM reinjecting the #PF; the other vCPU may go on (halting);
 * `shutdown [while delivering <vector> (error <code>)] after <exceptions>`: what the vCPU was
 * delivering when it shut down (the exit's exit_int_info), and the exceptions KVM injected or the
 * exits it saw last before it.
 */
export function summarizeTrace(trace: string): string | undefined {
  const lines = trace.split('\n').filter((l) => l.includes('kvm_'));
  const loop = npfLoop(lines.filter((l) => l.includes('kvm_exit:')).slice(-200));
  if (loop) return loop;
  const shutdownAt = lines.findLastIndex((l) => /reason shutdown/.test(l));
  if (shutdownAt >= 0) {
    const before = lines
      .slice(Math.max(0, shutdownAt - 40), shutdownAt)
      .map(
        (l) =>
          /kvm_inj_exception: (\S+)/.exec(l)?.[1] ??
          /reason (\S+) rip (0x[0-9a-f]+)/.exec(l)?.slice(1).join('@'),
      )
      .filter(Boolean)
      .slice(-8);
    return `shutdown${delivering(lines[shutdownAt]!)} after ${before.join(' ')}`;
  }
  return undefined;
}

/** How many of one vCPU's last exits must be the same nested page fault to call it the loop. */
const LOOP_EXITS = 20;
const NPF_IN_PF =
  /vcpu (\d+) reason npf rip (0x[0-9a-f]+) info1 (0x[0-9a-f]+) info2 (0x[0-9a-f]+) intr_info (0x8[0-9a-f]{3}0b0e)/;

/** The npf-loop-in-pf-delivery line for the first vCPU whose last exits are that loop. */
function npfLoop(exits: readonly string[]): string | undefined {
  const byVcpu = new Map<string, string[]>();
  for (const l of exits) {
    const v = /vcpu (\d+) reason/.exec(l)?.[1];
    if (v !== undefined) byVcpu.set(v, [...(byVcpu.get(v) ?? []), l]);
  }
  for (const [vcpu, own] of byVcpu) {
    const last = NPF_IN_PF.exec(own.at(-1) ?? '');
    if (!last) continue;
    let run = 0;
    for (let i = own.length - 1; i >= 0; i--, run++) {
      const m = NPF_IN_PF.exec(own[i]!);
      if (!m || m[2] !== last[2] || m[4] !== last[4]) break;
    }
    if (run >= LOOP_EXITS)
      return `npf-loop-in-pf-delivery vcpu ${vcpu} rip ${last[2]} gpa ${last[4]} (its last ${run} exits, of ${exits.length} read: a nested page fault while delivering a #PF, reinjected)`;
  }
  return undefined;
}

const VECTORS: Record<number, string> = {
  0: '#DE',
  6: '#UD',
  8: '#DF',
  13: '#GP',
  14: '#PF',
  18: '#MC',
};

/** ' while delivering #PF (error 0x10)' from a shutdown exit whose exit_int_info is valid, else ''. */
function delivering(exit: string): string {
  const m = /intr_info (0x[0-9a-f]+) error_code (0x[0-9a-f]+)/.exec(exit);
  const info = m ? Number(m[1]) : 0;
  if (!(info & 0x80000000)) return '';
  const v = info & 0xff;
  return ` while delivering ${VECTORS[v] ?? `vector ${v}`} (error ${m![2]!.replace(/^0x0+(?=.)/, '0x')})`;
}
