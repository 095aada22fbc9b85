// The reference VMM: Debian's QEMU boots the test guest (guest/build-image) with devices passed
// through by its vfio-pci (inside the lab, on the lab's KVM), or emulated (on any machine, TCG),
// with a hard timeout, the console captured and parsed (guest-console.ts), and the VM's KVM exit
// counts sampled from debugfs. What the project's own VMM is measured against.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { findFunctions } from '../../src/platform/pci-sysfs.js';
import { type GuestConsole, parseGuestConsole } from './guest-console.js';

/** A device for the guest: a host function through vfio-pci, or one QEMU emulates. */
export type GuestDevice =
  | { kind: 'vfio'; bdf: string; noMmap?: boolean }
  | { kind: 'nvme'; image: string }
  | { kind: 'e1000e' };

export interface QemuReferenceOptions {
  devices: GuestDevice[];
  /** Default q35, for its ACPI (see acpi). Time to init in the lab (2 NVMe + e1000e, 2 vCPUs,
   * two runs each on a shared machine): q35 15.3 s and 19.5 s, pc with acpi=off 19.8 s and
   * 17.0 s: no difference worth choosing by. */
  machine?: 'pc' | 'q35';
  /** false: kernel acpi=off, as a minimal VMM gives (MP table, config mechanism #1). Then the
   * guest runs on ONE CPU: SeaBIOS's MP table lists only the boot CPU ("smpboot: Allowing 1
   * CPUs"), so guest.cpus=1 is expected. Default true. */
  acpi?: boolean;
  accel?: 'kvm' | 'tcg';
  /** Default kvm64 under KVM (-cpu host crashed the guest in the lab), qemu64 under TCG. */
  cpu?: string;
  smp?: number;
  mem?: string;
  /** The guest kernel's own parameters after console= and panic= (default 'quiet loglevel=4'). */
  kernelArgs?: string;
  /** Extra guest.* parameters for guest/init, e.g. { dd_mib: 4 }. */
  guestParams?: Record<string, string | number>;
  timeoutMs?: number;
  /** The folder with vmlinuz and initrd.gz (default: GUEST_IMAGE, else guest/build-image's cache). */
  imageDir?: string;
  qemu?: string;
  /** Sample the VM's KVM statistics from debugfs while it runs (KVM only). */
  kvmStats?: boolean;
  consoleFile?: string;
}

export interface KvmStats {
  /** Counters of the VM (vCPU counters summed by KVM), as last read before the VM went away. */
  counters: Record<string, number>;
  /** How long before QEMU exited that sample was read: the final counts are a little higher. */
  sampledBeforeExitMs: number;
  samples: number;
}

export interface QemuReferenceResult {
  guest: GuestConsole;
  console: string;
  argv: string[];
  wallMs: number;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  /** The verdict guest/init wrote to isa-debug-exit, read from QEMU's status ((v << 1) | 1). */
  portVerdict: 'pass' | 'fail' | undefined;
  /** Guest passed, by both its console and its exit port. */
  ok: boolean;
  kvmStats: KvmStats | undefined;
  /** Why the KVM statistics are missing, if they are. */
  kvmStatsNote: string | undefined;
}

/** The guest image folder; throws naming the build command if it is not there. */
export function guestImageDir(dir?: string): string {
  const d =
    dir ??
    process.env.GUEST_IMAGE ??
    process.env.GUEST_CACHE ??
    join(homedir(), '.cache/vfio-runtime-guest');
  for (const f of ['vmlinuz', 'initrd.gz']) {
    if (!existsSync(join(d, f))) {
      throw new Error(
        `no ${f} in ${d}: build the guest image with guest/build-image (or set GUEST_IMAGE)`,
      );
    }
  }
  return d;
}

/** BDFs of functions bound to vfio-pci with this vendor:device, in bus order. */
export function vfioFunctions(vendor: number, device: number): string[] {
  return findFunctions(vendor, device)
    .filter((f) => f.driver === 'vfio-pci')
    .map((f) => f.bdf)
    .sort();
}

function deviceArgs(devices: GuestDevice[]): string[] {
  const args: string[] = [];
  devices.forEach((d, i) => {
    if (d.kind === 'vfio') {
      // rombar=0: SeaBIOS would otherwise run the e1000e's iPXE ROM (seconds under nesting).
      args.push('-device', `vfio-pci,host=${d.bdf},rombar=0${d.noMmap ? ',x-no-mmap=on' : ''}`);
    } else if (d.kind === 'nvme') {
      args.push(
        '-drive',
        `file=${d.image},if=none,id=nvm${i},format=raw`,
        '-device',
        `nvme,serial=guest${i},drive=nvm${i}`,
      );
    } else {
      args.push('-device', 'e1000e,romfile=');
    }
  });
  return args;
}

export function qemuArgv(o: QemuReferenceOptions): string[] {
  const accel = o.accel ?? 'kvm',
    machine = o.machine ?? 'q35',
    image = guestImageDir(o.imageDir);
  const acpi = o.acpi ?? true;
  const params = guestArgs({ cpus: acpi ? (o.smp ?? 2) : 1, ...o.guestParams });
  const append = [
    'console=ttyS0',
    'panic=-1',
    ...(o.kernelArgs ?? 'quiet loglevel=4').split(' '),
    ...(acpi ? [] : ['acpi=off']),
    ...params,
  ].join(' ');
  return [
    o.qemu ?? 'qemu-system-x86_64',
    '-accel',
    accel,
    '-M',
    machine,
    '-cpu',
    o.cpu ?? (accel === 'kvm' ? 'kvm64' : 'qemu64'),
    '-smp',
    String(o.smp ?? 2),
    '-m',
    o.mem ?? '512M',
    '-nographic',
    '-nodefaults',
    '-no-reboot',
    '-serial',
    'stdio',
    '-kernel',
    join(image, 'vmlinuz'),
    '-initrd',
    join(image, 'initrd.gz'),
    '-append',
    append,
    '-device',
    'isa-debug-exit,iobase=0x501,iosize=1',
    ...deviceArgs(o.devices),
  ];
}

/** guest/init's parameters on a kernel command line: { dd_mib: 4 } -> ['guest.dd_mib=4']. */
export const guestArgs = (params: Record<string, string | number>): string[] =>
  Object.entries(params).map(([k, v]) => `guest.${k}=${v}`);

const KVM_DEBUGFS = '/sys/kernel/debug/kvm';

/** debugfs mounted (root only); undefined if KVM statistics are there, else why not. */
function kvmStatsUnavailable(): string | undefined {
  if (!existsSync(KVM_DEBUGFS)) {
    spawnSync('mount', ['-t', 'debugfs', 'none', '/sys/kernel/debug'], { stdio: 'ignore' });
  }
  return existsSync(KVM_DEBUGFS)
    ? undefined
    : `${KVM_DEBUGFS} is missing (debugfs not mounted and could not be: not root, or no CONFIG_DEBUG_FS)`;
}

/** The numeric files of a VM's debugfs folder (<pid>-<vm fd>; the first of the pid's without `vmFd`). */
export function readVmStats(pid: number, vmFd?: number): Record<string, number> | undefined {
  if (kvmStatsUnavailable()) return undefined;
  const dir = readdirSync(KVM_DEBUGFS).find((d) =>
    vmFd === undefined ? d.startsWith(`${pid}-`) : d === `${pid}-${vmFd}`,
  );
  if (!dir) return undefined;
  const out: Record<string, number> = {};
  for (const f of readdirSync(join(KVM_DEBUGFS, dir))) {
    try {
      const v = readFileSync(join(KVM_DEBUGFS, dir, f), 'utf8').trim();
      if (/^\d+$/.test(v)) out[f] = Number(v);
    } catch {
      /* a vcpu folder, or the VM went away */
    }
  }
  return out;
}

function portVerdictOf(code: number | null): 'pass' | 'fail' | undefined {
  return code === 1 ? 'pass' : code === 3 ? 'fail' : undefined;
}

/** Boots the guest under QEMU and returns its parsed console, wall time and exit status. */
export async function runQemuReference(o: QemuReferenceOptions): Promise<QemuReferenceResult> {
  const argv = qemuArgv(o),
    timeoutMs = o.timeoutMs ?? 300_000;
  const wantStats = o.kvmStats ?? (o.accel ?? 'kvm') === 'kvm';
  let kvmStatsNote = wantStats ? kvmStatsUnavailable() : 'not asked for';
  // vfio-pci pins all guest RAM: raise RLIMIT_MEMLOCK where allowed (root has CAP_IPC_LOCK).
  const child = spawn('sh', ['-c', 'ulimit -l unlimited 2>/dev/null; exec "$@"', 'sh', ...argv], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const started = performance.now();
  let text = '',
    timedOut = false,
    stats: KvmStats | undefined;
  child.stdout.on('data', (b: Buffer) => {
    text += b.toString('latin1');
  });
  child.stderr.on('data', (b: Buffer) => {
    text += b.toString('latin1');
  });
  const sampler =
    wantStats && !kvmStatsNote
      ? setInterval(() => {
          const c = child.pid ? readVmStats(child.pid) : undefined;
          // A read racing the VM's teardown sees some files gone (a pc run's last sample lacked 14
          // of 61 counters): keep the fuller sample before it.
          if (c && Object.keys(c).length >= Object.keys(stats?.counters ?? {}).length) {
            stats = {
              counters: c,
              sampledBeforeExitMs: performance.now(),
              samples: (stats?.samples ?? 0) + 1,
            };
          }
        }, 500)
      : undefined;
  const kill = setTimeout(() => {
    timedOut = true;
    child.kill('SIGTERM');
    setTimeout(() => child.kill('SIGKILL'), 5000).unref();
  }, timeoutMs);
  const [exitCode, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
    child.on('close', (code, sig) => resolve([code, sig])),
  );
  const wallMs = performance.now() - started;
  clearTimeout(kill);
  if (sampler) clearInterval(sampler);
  if (stats) stats.sampledBeforeExitMs = started + wallMs - stats.sampledBeforeExitMs;
  else if (wantStats && !kvmStatsNote)
    kvmStatsNote = `no ${KVM_DEBUGFS}/<qemu pid>-* folder was seen`;
  if (o.consoleFile) writeFileSync(o.consoleFile, text);
  const guest = parseGuestConsole(text);
  if (timedOut) guest.problems.push(`QEMU did not finish within ${timeoutMs} ms and was killed`);
  const portVerdict = portVerdictOf(exitCode);
  return {
    guest,
    console: text,
    argv,
    wallMs,
    exitCode,
    signal,
    timedOut,
    portVerdict,
    ok: guest.pass && portVerdict === 'pass' && !timedOut,
    kvmStats: stats,
    kvmStatsNote: stats ? undefined : kvmStatsNote,
  };
}
