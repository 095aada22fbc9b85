// The guest soak: the test guest booted again and again in ONE lab run, on our VMM (BAR fast path,
// every BAR trapped) and on QEMU's vfio-pci, interleaved, each boot running the guest's data
// checks and a stretch of steady I/O (guest/init's rounds, nothing killed); how each ended, by
// kind, counted per VMM, so our death rate is measured against QEMU's on the same devices.
//   npm run soak:guest -- [--boots N] [--plan fast:30,trapped:10,qemu:15] [--rounds 6] [--trace]
// A plan entry is KIND[+PRESET...]:COUNT; KIND is fast, trapped, qemu or qemu-trapped, and a
// preset changes our VMM one way (PRESETS below), for comparing one difference at a time.
// Each boot prints one SOAK line; a boot that did not pass leaves its console, vCPU and device
// states (and with --trace, the lab kernel's KVM trace) in the output folder. The last line is
// SOAK-RESULT {json}. Exit status: 0 when no boot of ours died, 1 when one did, 2 bad arguments.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as kvm from '../../native/kvm.js';
import { C } from '../../native/libc.js';
import { OwnedFd } from '../../src/fd.js';
import { Vm, type VmOptions } from '../../src/vmm/vm.js';
import {
  type BootEnd,
  bootQemuGuest,
  endOfOurs,
  endOfQemu,
  MOVE_PARAMS,
  ourGuestOptions,
  watchStall,
} from '../../test/support/guest-boot.js';
import { parseGuestConsole } from '../../test/support/guest-console.js';
import { KvmTrace, summarizeTrace } from '../../test/support/kvm-trace.js';
import { repoRoot } from '../../test/support/paths.js';
import { readVmStats } from '../../test/support/qemu-reference.js';

/** Our VMM changed one way each: what a plan's KIND+PRESET boots with. */
const PRESETS: Record<string, Partial<VmOptions>> = {
  /** QEMU's kvm64 CPUID model and its default KVM features, as QEMU 7.2 gives them. */
  kvm64: { cpuModel: 'kvm64', pvFeatures: 'qemu' },
  /** What KVM supports, filtered (the model before issue 22), and every KVM feature. */
  supported: { cpuModel: 'supported', pvFeatures: 'supported' },
  /** Only the KVM features as QEMU's (the CPUID model unchanged). */
  qemupv: { pvFeatures: 'qemu' },
  /** Only every KVM feature offered (the CPUID model unchanged). */
  allpv: { pvFeatures: 'supported' },
  /** Only the CPUID model as kvm64's (the KVM features unchanged). */
  kvm64cpu: { cpuModel: 'kvm64' },
  /** Only the CPUID model as before issue 22 (the KVM features unchanged). */
  oldcpu: { cpuModel: 'supported' },
};

interface Args {
  plan: { kind: string; base: string; presets: string[]; count: number }[];
  rounds: number;
  trace: boolean;
  out: string;
}

function usage(why: string): never {
  console.error(`soak: ${why}
usage: node dist/bench/soak/guest.js [--boots N] [--plan KIND[+PRESET]:COUNT,...] [--rounds R] [--trace] [--out DIR]
  KIND: fast, trapped, qemu, qemu-trapped; PRESET: ${Object.keys(PRESETS).join(', ')}
  --boots N: the plan fast:N,trapped:ceil(N/3),qemu:ceil(N/2) (default 30)`);
  process.exit(2);
}

function parseArgs(argv: string[]): Args {
  let plan: string | undefined,
    boots = 30,
    rounds = 6,
    trace = false,
    out = join(repoRoot, 'soak-out', new Date().toISOString().replace(/[:.]/g, '-'));
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!,
      v = argv[i + 1];
    const num = (): number => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) usage(`${a} needs a whole number >= 1, not '${v}'`);
      i++;
      return n;
    };
    if (a === '--boots') boots = num();
    else if (a === '--rounds') rounds = num();
    else if (a === '--plan') [plan, i] = [v ?? usage('--plan needs a value'), i + 1];
    else if (a === '--out') [out, i] = [v ?? usage('--out needs a folder'), i + 1];
    else if (a === '--trace') trace = true;
    else usage(`unknown argument '${a}'`);
  }
  plan ??= `fast:${boots},trapped:${Math.ceil(boots / 3)},qemu:${Math.ceil(boots / 2)}`;
  const entries = plan.split(',').map((e) => {
    const [kind = '', count = ''] = e.split(':');
    const [base = '', ...presets] = kind.split('+');
    if (!['fast', 'trapped', 'qemu', 'qemu-trapped'].includes(base))
      usage(`plan entry '${e}': kind '${base}' is not fast, trapped, qemu or qemu-trapped`);
    for (const p of presets)
      if (!(p in PRESETS)) usage(`plan entry '${e}': no preset '${p}' (${Object.keys(PRESETS)})`);
    if (base.startsWith('qemu') && presets.length) usage(`plan entry '${e}': presets are ours`);
    const n = Number(count);
    if (!Number.isInteger(n) || n < 1) usage(`plan entry '${e}': COUNT must be >= 1`);
    return { kind, base, presets, count: n };
  });
  return { plan: entries, rounds, trace, out };
}

/** The plan's boots interleaved: each next boot is of the kind furthest behind its share. */
function schedule(plan: Args['plan']): Args['plan'][number][] {
  const done = plan.map(() => 0),
    order: Args['plan'][number][] = [];
  const total = plan.reduce((a, p) => a + p.count, 0);
  while (order.length < total) {
    let best = -1;
    for (const [i, p] of plan.entries())
      if (done[i]! < p.count && (best < 0 || done[i]! / p.count < done[best]! / plan[best]!.count))
        best = i;
    done[best]!++;
    order.push(plan[best]!);
  }
  return order;
}

interface BootRecord {
  n: number;
  kind: string;
  end: BootEnd['kind'];
  detail: string;
  wallS: number;
  bootToInitS: number | undefined;
  /** What the guest's kernel said of its clocks and paravirtual features (notesOf). */
  notes: string[];
  /** With --trace, what KVM's last events show of a boot that did not pass (summarizeTrace). */
  trace?: string;
}

/** Facts of a boot read from its GUEST-INFO lines: the ones a death could follow from. */
const NOTES: [string, RegExp][] = [
  ['lapic-timer-disabled', /APIC timer disabled due to verification failure/],
  ['pv-spinlocks', /PV spinlocks enabled/],
  ['pv-ipi', /setup PV IPIs/],
  ['pv-tlb-flush', /pv remote TLB flush/],
  ['tsc-deadline', /TSC deadline timer/i],
];
const notesOf = (info: string[]): string[] =>
  NOTES.filter(([, re]) => info.some((l) => re.test(l))).map(([n]) => n);

async function bootOurs(
  entry: Args['plan'][number],
  rounds: number,
): Promise<{ end: BootEnd; wallS: number; init?: number; dump: string; info: string[] }> {
  let text = '';
  const extra = Object.assign({}, ...entry.presets.map((p) => PRESETS[p]));
  const started = performance.now();
  let vm: Vm | undefined;
  try {
    vm = await Vm.create(
      ourGuestOptions({
        fastPath: entry.base === 'fast',
        params: { ...MOVE_PARAMS, kill_rounds: rounds },
        onConsole: (b) => {
          text += Buffer.from(b).toString('latin1');
        },
        extra,
      }),
    );
    const v = vm;
    const stall = watchStall(
      () => text.length,
      () => readVmStats(process.pid, v.vm.fd),
    );
    const r = await v.run().finally(() => stall.stop());
    const g = parseGuestConsole(text);
    const end = endOfOurs(r, g, text, stall.seen());
    let dump = '';
    if (end.kind !== 'pass') {
      const devices: string[] = [];
      for (const [port, d] of v.runtime.devices) {
        const irq = await d.handle.irqStatus().catch((e: Error) => e.message);
        devices.push(
          `${port}: worker ${d.handle.state}; interrupts ${JSON.stringify(irq)}; KVM routes ${JSON.stringify([...(v.router?.routesOf(port) ?? new Map())])}`,
        );
      }
      dump = [
        `status ${r.status} ${r.message ?? ''}; rips ${r.rips.join(' ')}`,
        ...(r.vcpuStates ?? []).map((s, i) => `vCPU ${i}: ${s}`),
        `vCPU exits ${JSON.stringify(r.stats.vcpus)}`,
        ...devices,
      ].join('\n');
    }
    return {
      end,
      wallS: r.wallMs / 1000,
      init: g.bootToInitS,
      dump,
      info: g.info,
    };
  } catch (e) {
    const msg = (e as Error).stack ?? String(e);
    return {
      end: { kind: 'vmm-error', detail: (e as Error).message, text: `OURS-END vmm-error ${msg}` },
      wallS: (performance.now() - started) / 1000,
      dump: msg,
      info: [],
    };
  } finally {
    await vm?.close();
  }
}

async function bootQemu(noMmap: boolean, rounds: number) {
  const q = await bootQemuGuest(noMmap, { ...MOVE_PARAMS, kill_rounds: rounds }, 300_000);
  return {
    end: endOfQemu(q),
    wallS: q.wallMs / 1000,
    init: q.guest.bootToInitS,
    dump: '',
    info: q.guest.info,
    console: q.console,
  };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  mkdirSync(args.out, { recursive: true });
  const order = schedule(args.plan);
  const trace = args.trace ? KvmTrace.start(65536) : undefined;
  if (args.trace && !trace) usage('--trace: no tracefs with KVM events here (run it in the lab)');
  console.log(
    `soak: ${order.length} boots (${args.plan.map((p) => `${p.kind} ${p.count}`).join(', ')}), ${args.rounds} I/O rounds each; output in ${args.out}${trace ? '; KVM trace on' : ''}`,
  );
  // What KVM supports here, the base of the 'supported' model (kvm64's is filtered by it too).
  const sys = OwnedFd.open('/dev/kvm', C.O_RDWR);
  writeFileSync(
    join(args.out, 'kvm-supported-cpuid.txt'),
    kvm
      .getSupportedCpuid(sys)
      .map(
        (e) =>
          `${e.function.toString(16).padStart(8, '0')}.${e.index} eax=${e.eax.toString(16)} ebx=${e.ebx.toString(16)} ecx=${e.ecx.toString(16)} edx=${e.edx.toString(16)} flags=${e.flags}`,
      )
      .join('\n'),
  );
  sys.close();
  const records: BootRecord[] = [];
  const infoSeen = new Set<string>();
  for (const [i, entry] of order.entries()) {
    trace?.clear();
    const b = entry.base.startsWith('qemu')
      ? await bootQemu(entry.base === 'qemu-trapped', args.rounds)
      : await bootOurs(entry, args.rounds);
    const rec: BootRecord = {
      n: i + 1,
      kind: entry.kind,
      end: b.end.kind,
      detail: b.end.detail,
      wallS: Number(b.wallS.toFixed(1)),
      bootToInitS: b.init,
      notes: notesOf(b.info),
      ...(trace && b.end.kind !== 'pass'
        ? { trace: summarizeTrace(trace.tail(2000)) ?? 'nothing known' }
        : {}),
    };
    records.push(rec);
    console.log(
      `SOAK ${rec.n}/${order.length} ${rec.kind} ${rec.end} wall=${rec.wallS}s init=${rec.bootToInitS ?? '-'}s [${rec.notes.join(' ')}] ${rec.end === 'pass' ? '' : `${rec.detail.slice(0, 300)}${rec.trace ? ` KVM-TRACE ${rec.trace}` : ''}`}`,
    );
    // The first boot of each kind leaves what its CPU was given (GUEST-INFO), to compare VMMs.
    if (!infoSeen.has(entry.kind) && b.info.length) {
      infoSeen.add(entry.kind);
      writeFileSync(join(args.out, `info-${entry.kind}.txt`), `${b.info.join('\n')}\n`);
    }
    if (rec.end !== 'pass') {
      const file = join(args.out, `boot-${String(rec.n).padStart(3, '0')}-${entry.kind}.txt`);
      writeFileSync(
        file,
        [
          b.end.text,
          '',
          b.dump,
          '',
          ...b.info,
          '',
          trace ? `KVM trace (last lines):\n${trace.tail(3000)}` : '',
        ].join('\n'),
      );
    }
  }
  trace?.stop();
  const by: Record<string, Record<string, number>> = {};
  for (const r of records) {
    by[r.kind] ??= {};
    by[r.kind]![r.end] = (by[r.kind]![r.end] ?? 0) + 1;
  }
  console.log('soak: how each kind of boot ended');
  for (const [kind, ends] of Object.entries(by))
    console.log(
      `  ${kind.padEnd(22)} ${Object.entries(ends)
        .map(([k, n]) => `${k} ${n}`)
        .join(', ')}`,
    );
  const oursDied = records.filter((r) => !r.kind.startsWith('qemu') && r.end !== 'pass').length;
  const summary = { boots: records.length, byKind: by, oursDied, out: args.out };
  writeFileSync(join(args.out, 'records.json'), JSON.stringify(records, null, 1));
  console.log(`SOAK-RESULT ${JSON.stringify(summary)}`);
  process.exitCode = oursDied ? 1 : 0;
}

await main();
setTimeout(() => process.exit(), 500).unref();
