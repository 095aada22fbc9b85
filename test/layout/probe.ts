// The layout probe: a C program, generated from every struct and constant `native/` registers,
// compiled against the lab kernel's uAPI headers; it prints what the C compiler says, and
// compare() lists every difference with the TypeScript definitions.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Constant, constantRegistry, type Header } from '../../native/ioctl.js';
import { memberPaths, type StructType, structRegistry } from '../../native/layout.js';
import '../../native/index.js';

const HEADERS: Record<Header, string[]> = {
  'linux/vfio.h': ['linux/vfio.h'],
  'linux/iommufd.h': ['linux/iommufd.h'],
  'linux/kvm.h': ['linux/kvm.h'],
  'linux/pci_regs.h': ['linux/pci_regs.h'],
  libc: [
    'fcntl.h',
    'poll.h',
    'signal.h',
    'sys/eventfd.h',
    'sys/mman.h',
    'sys/resource.h',
    'sys/socket.h',
    'sys/uio.h',
  ],
  'iommufd_test.h': ['iommufd_test.h'],
};

export function probeSource(
  structs: readonly StructType<unknown>[] = structRegistry,
  constants: readonly Constant[] = constantRegistry,
): string {
  const headers = new Set<string>(['stddef.h', 'stdio.h', 'linux/types.h']);
  for (const c of constants) for (const h of HEADERS[c.header]) headers.add(h);
  for (const h of ['linux/vfio.h', 'linux/iommufd.h', 'linux/kvm.h']) headers.add(h);
  if (constants.some((c) => c.header === 'iommufd_test.h')) headers.add('iommufd_test.h');
  const lines = [
    '#define _GNU_SOURCE',
    ...[...headers].map((h) => `#include <${h}>`),
    'int main(void) {',
  ];
  for (const s of structs) {
    lines.push(`  printf("S %s %zu\\n", "${s.cName}", sizeof(${s.cName}));`);
    for (const m of memberPaths(s))
      lines.push(
        `  printf("F %s %s %zu\\n", "${s.cName}", "${m.cPath}", offsetof(${s.cName}, ${m.cPath}));`,
      );
  }
  for (const c of constants)
    lines.push(`  printf("C %s %llu\\n", "${c.name}", (unsigned long long)(${c.name}));`);
  lines.push('  return 0;', '}');
  return `${lines.join('\n')}\n`;
}

export interface ProbeResult {
  structs: number;
  fields: number;
  ioctls: number;
  constants: number;
  mismatches: string[];
}

/** Compile and run the probe; compare each line with the TypeScript side. */
export function runProbe(
  include: string,
  includeTest: string,
  structs: readonly StructType<unknown>[] = structRegistry,
  constants: readonly Constant[] = constantRegistry,
): ProbeResult {
  const dir = mkdtempSync(join(tmpdir(), 'layout-probe-'));
  writeFileSync(join(dir, 'probe.c'), probeSource(structs, constants));
  const inc = ['-I', include, ...(existsSync(includeTest) ? ['-I', includeTest] : [])];
  execFileSync('cc', ['-O0', '-w', ...inc, '-o', join(dir, 'probe'), join(dir, 'probe.c')], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const out = execFileSync(join(dir, 'probe'), { encoding: 'utf8' });
  const c = new Map<string, string>();
  for (const line of out.trim().split('\n')) {
    const parts = line.split(' ');
    c.set(parts.slice(0, -1).join(' '), parts[parts.length - 1]!);
  }
  const mismatches: string[] = [];
  let fields = 0;
  const cmp = (key: string, ts: string, what: string): void => {
    const got = c.get(key);
    if (got !== ts) mismatches.push(`${what}: TypeScript says ${ts}, C says ${got ?? '(missing)'}`);
  };
  for (const s of structs) {
    cmp(`S ${s.cName}`, String(s.size), `sizeof(${s.cName})`);
    for (const m of memberPaths(s)) {
      fields++;
      cmp(`F ${s.cName} ${m.cPath}`, String(m.offset), `offsetof(${s.cName}, ${m.cPath})`);
    }
  }
  for (const k of constants)
    cmp(
      `C ${k.name}`,
      BigInt(k.value).toString(),
      `${k.ioctl ? 'ioctl number' : 'constant'} ${k.name}`,
    );
  return {
    structs: structs.length,
    fields,
    ioctls: constants.filter((k) => k.ioctl).length,
    constants: constants.filter((k) => !k.ioctl).length,
    mismatches,
  };
}
