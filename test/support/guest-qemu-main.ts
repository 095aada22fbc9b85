// Boots the test guest under the QEMU reference and prints its checks, timings and a summary.
// A script, not a lab test file: test/lab/*.test.ts all run in `npm run test:lab` (CI), and this
// nested guest takes minutes there; CI decides separately whether to run it.
//   node dist/test/support/guest-qemu-main.js --emulated             (any machine, TCG)
//   lab/run --smp 2 --mem 3G --devices "nvme nvme e1000e" -- \
//     node dist/test/support/guest-qemu-main.js --vfio "nvme nvme e1000e"   (the lab, KVM)
// Options: --machine pc|q35 (default q35), --no-acpi (acpi=off: one CPU), --smp N, --mem SIZE,
// --timeout SECONDS, --no-mmap (trap the BARs), --console FILE, --dd-mib N,
// --param NAME=VALUE (guest.NAME=VALUE for guest/init).
// Exits 0 if the guest passed, 1 if not, 2 for bad arguments.
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type GuestDevice,
  type QemuReferenceOptions,
  runQemuReference,
  vfioFunctions,
} from './qemu-reference.js';

const IDS: Record<string, [number, number]> = { nvme: [0x1b36, 0x0010], e1000e: [0x8086, 0x10d3] };

function usage(why: string): never {
  console.error(
    `guest-qemu-main: ${why}\nusage: guest-qemu-main.js --emulated | --vfio "nvme nvme e1000e" ` +
      '[--machine pc|q35] [--no-acpi] [--smp N] [--mem SIZE] [--timeout S] [--no-mmap] [--console FILE] [--dd-mib N] ' +
      '[--param NAME=VALUE]',
  );
  process.exit(2);
}

/** Lab devices by kind, each kind's functions handed out in bus order. */
function vfioDevices(kinds: string[], noMmap: boolean): GuestDevice[] {
  const used = new Map<string, number>();
  return kinds.map((k) => {
    const id = IDS[k];
    if (!id) usage(`unknown device '${k}' (nvme, e1000e)`);
    const n = used.get(k) ?? 0,
      bdf = vfioFunctions(...id)[n];
    if (!bdf)
      usage(
        `only ${n} ${k} bound to vfio-pci here (lab/run --devices must list ${k} ${n + 1} times)`,
      );
    used.set(k, n + 1);
    return { kind: 'vfio', bdf, noMmap };
  });
}

/** Two sparse 64 MiB raw images, as the lab's NVMe have (the data check writes at 8 MiB). */
function emulatedDevices(dir: string): GuestDevice[] {
  return ['nvme1.img', 'nvme2.img'].map((f) => {
    const image = join(dir, f);
    writeFileSync(image, '');
    truncateSync(image, 64 << 20);
    return { kind: 'nvme', image };
  });
}

const argv = process.argv.slice(2);
const opt: QemuReferenceOptions = { devices: [] };
let vfio: string | undefined,
  emulated = false,
  noMmap = false,
  tmp: string | undefined;
for (let i = 0; i < argv.length; i++) {
  const a = argv[i]!,
    next = (): string => argv[++i] ?? usage(`${a} needs a value`);
  if (a === '--emulated') emulated = true;
  else if (a === '--vfio') vfio = next();
  else if (a === '--machine') opt.machine = next() as 'pc' | 'q35';
  else if (a === '--smp') opt.smp = Number(next());
  else if (a === '--mem') opt.mem = next();
  else if (a === '--timeout') opt.timeoutMs = Number(next()) * 1000;
  else if (a === '--no-mmap') noMmap = true;
  else if (a === '--no-acpi') opt.acpi = false;
  else if (a === '--console') opt.consoleFile = next();
  else if (a === '--dd-mib') opt.guestParams = { ...opt.guestParams, dd_mib: next() };
  else if (a === '--param') {
    const [k, v] = next().split('=');
    if (!k || v === undefined)
      usage(`--param wants NAME=VALUE (guest.NAME on the kernel command line)`);
    opt.guestParams = { ...opt.guestParams, [k]: v };
  } else usage(`unknown argument '${a}'`);
}
if (emulated === (vfio !== undefined)) usage('give one of --emulated and --vfio');
if (opt.machine && !['pc', 'q35'].includes(opt.machine))
  usage(`--machine ${opt.machine}: pc or q35`);
if (vfio !== undefined) {
  opt.devices = vfioDevices(vfio.split(/\s+/).filter(Boolean), noMmap);
  opt.accel = 'kvm';
} else {
  tmp = mkdtempSync(join(tmpdir(), 'guest-qemu-'));
  opt.devices = [...emulatedDevices(tmp), { kind: 'e1000e' }];
  opt.accel = 'tcg';
}
const r = await runQemuReference(opt);
if (tmp) rmSync(tmp, { recursive: true, force: true });
console.log(`$ ${r.argv.join(' ')}`);
for (const c of r.guest.checks) console.log(`  ${c.ok ? 'ok  ' : 'FAIL'} ${c.name} ${c.value}`);
for (const l of r.guest.log) console.log(`  log: ${l}`);
if (!r.guest.checks.length) console.log(r.console.split('\n').slice(-30).join('\n'));
const summary = {
  ok: r.ok,
  guestPass: r.guest.pass,
  portVerdict: r.portVerdict,
  exitCode: r.exitCode,
  signal: r.signal,
  timedOut: r.timedOut,
  wallS: +(r.wallMs / 1000).toFixed(2),
  bootToInitS: r.guest.bootToInitS,
  modulesS: r.guest.result?.modules_s,
  clock: r.guest.result?.clock,
  clocksource: r.guest.result?.clocksource,
  nvmeIo: r.guest.nvmeIo,
  interrupts: r.guest.interrupts,
  problems: r.guest.problems,
  kvmStats: r.kvmStats,
  kvmStatsNote: r.kvmStatsNote,
};
console.log(`QEMU-REFERENCE ${JSON.stringify(summary)}`);
process.exitCode = r.ok ? 0 : 1;
