#!/usr/bin/env node
// vfio-runtime command line: `devices` lists the host's assignable PCI functions, `check`
// says whether the host is ready for device assignment.
import { listFunctions, type PciFunction } from '../host/pci-sysfs.js';
import { validateHost } from '../host/validate.js';

const USAGE = `usage: vfio-runtime <command> [--json]
  devices   list PCI functions: driver, IOMMU group, VFIO cdev, BARs, MSI/MSI-X vectors
  check     check the host is ready for device assignment (exit 1 on any FAIL)`;

const hex = (n: number, w: number): string => n.toString(16).padStart(w, '0');
const size = (n: bigint): string => {
  for (const [u, s] of [['G', 30n], ['M', 20n], ['K', 10n]] as const) if (n >= 1n << s && n % (1n << s) === 0n) return `${n >> s}${u}`;
  return `${n}`;
};

function printDevices(fns: PciFunction[], json: boolean): void {
  if (json) { console.log(JSON.stringify(fns, (_k, v) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v), 2)); return; }
  for (const f of fns) {
    const assignable = f.driver === 'vfio-pci' ? 'assignable' : f.driver ? `driver ${f.driver}` : 'no driver';
    console.log(`${f.bdf} [${hex(f.vendor, 4)}:${hex(f.device, 4)}] class ${hex(f.classCode, 6)}  ${assignable}  group ${f.iommuGroup ?? '-'}  cdev ${f.cdev ?? '-'}`);
    const bars = f.bars.map((b) => `BAR${b.index} ${size(b.size)} ${b.io ? 'io' : `mem${b.is64 ? '64' : '32'}${b.prefetch ? ' pref' : ''}`}`);
    console.log(`    ${bars.length ? bars.join(', ') : 'no BARs'}; MSI ${f.msi || '-'}, MSI-X ${f.msix || '-'}`);
  }
  const n = fns.filter((f) => f.driver === 'vfio-pci').length;
  console.log(`${fns.length} functions, ${n} bound to vfio-pci`);
}

function printChecks(json: boolean): number {
  const checks = validateHost();
  if (json) console.log(JSON.stringify(checks, null, 2));
  else for (const c of checks) {
    console.log(`${`Checking ${c.name}`.padEnd(52, ' ')}: ${c.verdict}  ${c.detail}`);
    if (c.fix) console.log(`${' '.repeat(54)}fix: ${c.fix}`);
  }
  return checks.some((c) => c.verdict === 'FAIL') ? 1 : 0;
}

function main(argv: string[]): number {
  const json = argv.includes('--json');
  const [cmd] = argv.filter((a) => !a.startsWith('--'));
  switch (cmd) {
    case 'devices': printDevices(listFunctions(), json); return 0;
    case 'check': return printChecks(json);
    case undefined: case 'help': console.log(USAGE); return cmd ? 0 : 2;
    default: console.error(`vfio-runtime: unknown command '${cmd}'\n${USAGE}`); return 2;
  }
}

process.exitCode = main(process.argv.slice(2));
