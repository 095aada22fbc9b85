#!/usr/bin/env node
// vfio-runtime command line: `devices` lists the host's assignable PCI functions, `check`
// says whether the host is ready for device assignment, `run` assigns devices (one worker each),
// `vm` boots a Linux guest on the minimal VMM (src/vmm/) with assigned devices.
import { API_USAGE, remoteCommand, serveApi, takeApiOptions } from '../api/cli.js';
import { type MappedPiece, Runtime, type RuntimeDescription } from '../coordinator/runtime.js';
import { BootError, InvalidSpecError } from '../errors.js';
import { listFunctions, type PciFunction } from '../platform/pci-sysfs.js';
import { validateHost } from '../platform/validate.js';
import {
  cliLogger,
  OBSERVABILITY_USAGE,
  startCliMetrics,
  takeObservabilityArgs,
} from './observability.js';
import { parseRuntimeArgs } from './specs.js';
import { VM_USAGE, vmCommand } from './vm.js';

const USAGE = `usage: vfio-runtime <command> [--json]   (vfio-runtime <command> --help, -h: this text)
  devices   list PCI functions: driver, IOMMU group, VFIO cdev, BARs, MSI/MSI-X vectors
  check     check the host is ready for device assignment (exit 1 on any FAIL)
  run       assign devices and serve them until SIGINT/SIGTERM (--once: set up, report, tear down)
            --iommu id=<name>[,iommufd_fd=<n>]                  an iommufd context (one IOAS)
            --vfio host=<bdf>,port=<name>[,iommu=<id>][,fd=<n>|,group_fd=<n>]
                                                                a device (legacy container without iommu=)
            --memory size=<n>[K|M|G][,gpa=<addr>]               guest RAM mapped for DMA at IOVA == GPA
${VM_USAGE}
  run, vm:
${OBSERVABILITY_USAGE}
${API_USAGE}`;

const hex = (n: number, w: number): string => n.toString(16).padStart(w, '0');
const size = (n: bigint): string => {
  for (const [u, s] of [
    ['G', 30n],
    ['M', 20n],
    ['K', 10n],
  ] as const)
    if (n >= 1n << s && n % (1n << s) === 0n) return `${n >> s}${u}`;
  return `${n}`;
};

function printDevices(fns: PciFunction[], json: boolean): void {
  if (json) {
    console.log(
      JSON.stringify(fns, (_k, v) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v), 2),
    );
    return;
  }
  for (const f of fns) {
    const assignable =
      f.driver === 'vfio-pci' ? 'assignable' : f.driver ? `driver ${f.driver}` : 'no driver';
    console.log(
      `${f.bdf} [${hex(f.vendor, 4)}:${hex(f.device, 4)}] class ${hex(f.classCode, 6)}  ${assignable}  group ${f.iommuGroup ?? '-'}  cdev ${f.cdev ?? '-'}`,
    );
    const bars = f.bars.map(
      (b) =>
        `BAR${b.index} ${size(b.size)} ${b.io ? 'io' : `mem${b.is64 ? '64' : '32'}${b.prefetch ? ' pref' : ''}`}`,
    );
    console.log(
      `    ${bars.length ? bars.join(', ') : 'no BARs'}; MSI ${f.msi || '-'}, MSI-X ${f.msix || '-'}`,
    );
  }
  const n = fns.filter((f) => f.driver === 'vfio-pci').length;
  console.log(`${fns.length} functions, ${n} bound to vfio-pci`);
}

function printChecks(json: boolean): number {
  const checks = validateHost();
  if (json) console.log(JSON.stringify(checks, null, 2));
  else
    for (const c of checks) {
      console.log(`${`Checking ${c.name}`.padEnd(52, ' ')}: ${c.verdict}  ${c.detail}`);
      if (c.fix) console.log(`${' '.repeat(54)}fix: ${c.fix}`);
    }
  return checks.some((c) => c.verdict === 'FAIL') ? 1 : 0;
}

/** What a backend maps, piece by piece: a region split around a reserved window shows each piece. */
function printMapped(mapped: readonly MappedPiece[]): void {
  if (mapped.length)
    console.log(`    mapped: ${mapped.map((m) => `${m.iova}+${m.size} (${m.region})`).join(', ')}`);
}

function printRuntime(d: RuntimeDescription, json: boolean): void {
  if (json) {
    console.log(JSON.stringify(d, null, 2));
    return;
  }
  for (const c of d.contexts) {
    console.log(
      `iommufd context ${c.id}: IOAS ${c.ioasId ?? '-'}, ${c.devices} device(s), IOVA ${c.ranges.join(', ')}`,
    );
    printMapped(c.mapped);
  }
  if (d.container) {
    console.log(`legacy container: ${d.container.devices.join(', ')}`);
    printMapped(d.container.mapped);
  }
  for (const m of d.memory) console.log(`guest memory ${m.name}: GPA ${m.gpa}, ${m.size} bytes`);
  for (const v of d.devices) {
    const x = v.description;
    console.log(
      `${v.port}: ${v.bdf ?? x.path} on ${v.backend}${v.ioasId !== undefined ? ` (IOAS ${v.ioasId})` : ''}; BARs ${x.bars.map((b) => `${b.index}:${b.size}`).join(' ')}; ${x.msix ? `MSI-X ${x.msix.vectors}` : x.msi ? `MSI ${x.msi.vectors}` : 'no MSI'}`,
    );
  }
}

async function run(argv: string[], json: boolean): Promise<number> {
  const { spec, rest } = parseRuntimeArgs(argv);
  const obs = takeObservabilityArgs(rest);
  const apiOpts = takeApiOptions(rest);
  const unknown = rest.filter((a) => a !== '--once' && a !== '--json');
  if (unknown.length) throw new InvalidSpecError(`run: unknown argument(s) ${unknown.join(' ')}`);
  if (spec.vfio.length === 0 && !apiOpts)
    throw new InvalidSpecError(
      'run: assign at least one device with --vfio host=<bdf>,port=<name> (or serve --api-socket <path> to add them later)',
      'vfio',
    );
  const log = cliLogger(obs);
  const rt = await Runtime.start(spec, { logger: log });
  let api: ReturnType<typeof serveApi> | undefined;
  try {
    api = apiOpts ? serveApi(rt, apiOpts) : undefined;
    const metrics = await startCliMetrics(obs, rt, log, api ? [api.server] : []);
    printRuntime(rt.describe(), json);
    if (api) console.error(`run: API on ${api.server.address}`);
    if (!argv.includes('--once')) {
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
    }
    await metrics?.close();
  } finally {
    await api?.server.close();
    await rt.shutdown();
  }
  return 0;
}

async function main(argv: string[]): Promise<number> {
  // Help asked for anywhere (`--help`, `-h`, `run --help`) is an answer, not a mistake: exit 0.
  if (argv.some((a) => a === '--help' || a === '-h')) {
    console.log(USAGE);
    return 0;
  }
  const json = argv.includes('--json');
  const [cmd] = argv.filter((a) => !a.startsWith('--'));
  switch (cmd) {
    case 'devices':
      printDevices(listFunctions(), json);
      return 0;
    case 'check':
      return printChecks(json);
    case 'run':
      return run(argv.slice(argv.indexOf('run') + 1), json);
    case 'vm':
      return vmCommand(argv.slice(argv.indexOf('vm') + 1));
    case 'remote':
      return remoteCommand(argv.slice(argv.indexOf('remote') + 1));
    case undefined:
      console.error(USAGE);
      return 2;
    case 'help':
      console.log(USAGE);
      return 0;
    default:
      console.error(`vfio-runtime: unknown command '${cmd}'\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    console.error(`vfio-runtime: ${e instanceof Error ? e.message : String(e)}`);
    // Bad input (a spec, an option, the files to boot) is 2; everything else the runtime's or the
    // host's failure, 1 (docs/user-guide.md, exit statuses).
    process.exitCode = e instanceof InvalidSpecError || e instanceof BootError ? 2 : 1;
  },
);
