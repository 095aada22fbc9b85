// Parses the serial console of the test guest (guest/init) into a typed result: its checks, the
// GUEST-RESULT JSON, boot-to-init, the NVMe dd times and throughput, and interrupt counts.
// Kept under test/support: it reads the output of this project's test image, which a VMM uses
// to be tested, not to run guests; a VMM's own tests import it from here.

/** One `GUEST-CHECK <name> ok|fail <value>` line; `fields` holds the value's key=value words. */
export interface GuestCheck {
  name: string;
  ok: boolean;
  value: string;
  fields: Record<string, string>;
}

/** The data check on one NVMe namespace. */
export interface GuestNvmeIo {
  ns: string;
  ok: boolean;
  mib: number;
  writeS: number;
  readS: number;
  writeMiBs: number;
  readMiBs: number;
  md5Match: boolean;
}

export interface GuestInterrupt {
  name: string;
  count: number;
  chip: string;
}

/** The GUEST-RESULT object as guest/init writes it. */
export interface GuestResultJson {
  pass: boolean;
  failed: number;
  boot_to_init_s: number;
  modules_s: number;
  cpus: number;
  clock: string;
  clocksource?: string;
  kernel: string;
  dd_mib: number;
  dd_offset_mib: number;
  pci: { bdf: string; id: string; class: string; driver: string; bars: string }[];
  nvme: {
    ns: string;
    ok: boolean;
    mib: number;
    write_us: number;
    read_us: number;
    md5: string;
    read_md5: string;
  }[];
  interrupts: GuestInterrupt[];
  net: { eth0?: string };
  checks: { name: string; ok: boolean; value: string }[];
}

export interface GuestConsole {
  /** The guest's verdict: a GUEST-RESULT that passed and no failed GUEST-CHECK line. */
  pass: boolean;
  /** Why it did not pass (failed checks, a missing or broken GUEST-RESULT line). */
  problems: string[];
  checks: GuestCheck[];
  result: GuestResultJson | undefined;
  bootToInitS: number | undefined;
  nvmeIo: GuestNvmeIo[];
  interrupts: GuestInterrupt[];
  /** The value guest/init wrote to the isa-debug-exit port (0 pass, 1 fail), if it got there. */
  exitValue: number | undefined;
  kernel: string | undefined;
  /** GUEST-LOG lines (the kernel log's tail, printed when a check failed). */
  log: string[];
  /** GUEST-INFO lines (what the CPU was given, the kernel's view of it), to compare VMMs. */
  info: string[];
  /** The first console line that says the guest's kernel died or is dying (GUEST_PANIC). */
  panic: string | undefined;
}

/**
 * A guest kernel's own report of its death or of a fatal bug: always a failure, whatever ends
 * the VM after it (with panic=-1 reboot=t a panic arrives as a triple fault).
 */
export const GUEST_PANIC =
  /Kernel panic|\bBUG: |\bOops\b|soft lockup|hard LOCKUP|general protection fault|double fault|Fatal exception|sysrq: Trigger a crash/;

/** The words of a check's value that look like key=value. */
function fieldsOf(value: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const w of value.split(/\s+/)) {
    const eq = w.indexOf('=');
    if (eq > 0) out[w.slice(0, eq)] = w.slice(eq + 1);
  }
  return out;
}

/** Console lines with QEMU's CRs and terminal escapes gone. A kernel message may precede a marker
 * on its line, so a marker is found anywhere in the line. */
function lines(text: string): string[] {
  return text.replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1bc/g, '').split(/\r?\n|\r/);
}

function nvmeIoOf(c: GuestCheck): GuestNvmeIo {
  const f = c.fields,
    num = (k: string): number => Number(f[k] ?? NaN);
  return {
    ns: c.name.slice('nvme-io:'.length),
    ok: c.ok,
    mib: num('mib'),
    writeS: num('write_s'),
    readS: num('read_s'),
    writeMiBs: num('write_mib_s'),
    readMiBs: num('read_mib_s'),
    md5Match: f.md5 !== undefined && f.md5 === f.read_md5,
  };
}

function interruptsOf(checks: GuestCheck[]): GuestInterrupt[] {
  const out: GuestInterrupt[] = [];
  for (const c of checks.filter((x) => x.name.startsWith('nvme-irq:'))) {
    for (const [name, v] of Object.entries(c.fields)) {
      if (name !== 'chip') out.push({ name, count: Number(v), chip: c.fields.chip ?? '' });
    }
  }
  return out;
}

export function parseGuestConsole(text: string): GuestConsole {
  const checks: GuestCheck[] = [],
    log: string[] = [],
    info: string[] = [],
    problems: string[] = [];
  let panic: string | undefined;
  let result: GuestResultJson | undefined,
    exitValue: number | undefined,
    kernel: string | undefined;
  for (const line of lines(text)) {
    if (panic === undefined && GUEST_PANIC.test(line)) panic = line.trim();
    const at = line.search(/GUEST-(CHECK|RESULT|EXIT|LOG|START|INFO) /);
    if (at < 0) continue;
    const l = line.slice(at);
    const m = /^GUEST-CHECK (\S+) (ok|fail) ?(.*)$/.exec(l);
    if (m) {
      const value = m[3]!.trim();
      checks.push({ name: m[1]!, ok: m[2] === 'ok', value, fields: fieldsOf(value) });
    } else if (l.startsWith('GUEST-RESULT ')) {
      try {
        result = JSON.parse(l.slice('GUEST-RESULT '.length)) as GuestResultJson;
      } catch (e) {
        problems.push(`GUEST-RESULT is not one JSON object (${(e as Error).message})`);
      }
    } else if (l.startsWith('GUEST-EXIT ')) {
      const v = /value (\d+)/.exec(l);
      if (v) exitValue = Number(v[1]);
    } else if (l.startsWith('GUEST-LOG ')) log.push(l.slice('GUEST-LOG '.length));
    else if (l.startsWith('GUEST-INFO ')) info.push(l.slice('GUEST-INFO '.length));
    else if (l.startsWith('GUEST-START ')) kernel = /Linux version (\S+)/.exec(l)?.[1];
  }
  if (panic !== undefined) problems.push(`the guest's kernel died: ${panic}`);
  for (const c of checks) if (!c.ok) problems.push(`check ${c.name} failed: ${c.value}`);
  if (!result && !problems.some((p) => p.startsWith('GUEST-RESULT'))) {
    problems.push(
      checks.length === 0
        ? 'no GUEST-CHECK line: the guest did not reach guest/init (see the console)'
        : `no GUEST-RESULT line after ${checks.length} checks: the guest stopped in guest/init`,
    );
  }
  if (result && !result.pass && problems.length === 0)
    problems.push('GUEST-RESULT says pass=false');
  const boot = checks.find((c) => c.name === 'boot-to-init');
  return {
    pass: problems.length === 0 && result?.pass === true,
    problems,
    checks,
    result,
    bootToInitS: result?.boot_to_init_s ?? (boot ? Number(boot.value) : undefined),
    nvmeIo: checks.filter((c) => c.name.startsWith('nvme-io:')).map(nvmeIoOf),
    interrupts: result?.interrupts ?? interruptsOf(checks),
    exitValue,
    kernel,
    log,
    info,
    panic,
  };
}
