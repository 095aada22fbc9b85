// The device-assignment options of the CLI, parsed and checked as a whole:
//   --iommu id=<name>[,iommufd_fd=<n>]              an iommufd context (one IOAS), optionally pre-opened
//   --vfio host=<bdf>,port=<name>[,iommu=<id>][,fd=<n>|,group_fd=<n>]   a device; iommu= picks the
//                                                    cdev/iommufd path, without it the legacy group/container
//                                                    path; fd= is a pre-opened VFIO cdev fd (host= is then
//                                                    optional), group_fd= a pre-opened VFIO group fd (legacy)
//   --memory size=<n>[K|M|G][,gpa=<addr>]            guest RAM (a memfd) mapped for DMA at IOVA == GPA
import { normalizeBdf } from '../host/pci-sysfs.js';

export interface IommuSpec { id: string; iommufdFd?: number }
export interface VfioSpec { port: string; host?: string; iommu?: string; fd?: number; groupFd?: number }
export interface MemorySpec { size: bigint; gpa: bigint }
export interface RuntimeSpec { iommu: IommuSpec[]; vfio: VfioSpec[]; memory: MemorySpec[] }

export class SpecError extends Error { override readonly name = 'SpecError'; }

const NAME = /^[A-Za-z0-9_.-]{1,64}$/;

/** key=value pairs of one option, rejecting unknown and repeated keys. */
function pairs(option: string, text: string, allowed: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  if (text.trim() === '') throw new SpecError(`${option} needs a value (${allowed.map((k) => `${k}=...`).join(',')})`);
  for (const part of text.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new SpecError(`${option} ${text}: '${part}' is not key=value`);
    const key = part.slice(0, eq).trim(), value = part.slice(eq + 1).trim();
    if (!allowed.includes(key)) throw new SpecError(`${option} ${text}: unknown key '${key}' (known: ${allowed.join(', ')})`);
    if (out.has(key)) throw new SpecError(`${option} ${text}: '${key}' given twice`);
    if (value === '') throw new SpecError(`${option} ${text}: '${key}' has no value`);
    out.set(key, value);
  }
  return out;
}

function fdNumber(option: string, key: string, v: string): number {
  if (!/^\d+$/.test(v)) throw new SpecError(`${option}: ${key}=${v} is not a file descriptor number`);
  const n = Number(v);
  if (n < 3) throw new SpecError(`${option}: ${key}=${n} is stdin/stdout/stderr, not an inherited VFIO or iommufd fd`);
  return n;
}

function name(option: string, key: string, v: string): string {
  if (!NAME.test(v)) throw new SpecError(`${option}: ${key}=${v} is not a valid name (letters, digits, '_', '.', '-'; at most 64)`);
  return v;
}

export function parseSize(option: string, v: string): bigint {
  const m = /^(\d+)([KMG]?)$/i.exec(v);
  if (!m) throw new SpecError(`${option}: size=${v} is not a size (a number with an optional K, M or G)`);
  const shift = { '': 0n, K: 10n, M: 20n, G: 30n }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G'];
  const size = BigInt(m[1]!) << shift;
  if (size === 0n || size % 4096n !== 0n) throw new SpecError(`${option}: size=${v} must be a non-zero multiple of 4 KiB`);
  return size;
}

function parseAddress(option: string, v: string): bigint {
  if (!/^(0x[0-9a-f]+|\d+)$/i.test(v)) throw new SpecError(`${option}: gpa=${v} is not an address`);
  const a = BigInt(v);
  if (a % 4096n !== 0n) throw new SpecError(`${option}: gpa=${v} is not 4 KiB aligned`);
  return a;
}

export function parseIommu(text: string): IommuSpec {
  const p = pairs('--iommu', text, ['id', 'iommufd_fd']);
  const id = p.get('id');
  if (!id) throw new SpecError(`--iommu ${text}: id=<name> is required`);
  const spec: IommuSpec = { id: name('--iommu', 'id', id) };
  if (p.has('iommufd_fd')) spec.iommufdFd = fdNumber('--iommu', 'iommufd_fd', p.get('iommufd_fd')!);
  return spec;
}

export function parseVfio(text: string): VfioSpec {
  const p = pairs('--vfio', text, ['host', 'port', 'iommu', 'fd', 'group_fd']);
  const port = p.get('port');
  if (!port) throw new SpecError(`--vfio ${text}: port=<name> is required`);
  const spec: VfioSpec = { port: name('--vfio', 'port', port) };
  const host = p.get('host');
  if (host !== undefined) {
    const bdf = normalizeBdf(host);
    if (!bdf) throw new SpecError(`--vfio ${text}: host=${host} is not a PCI address (like 0000:01:00.0 or 01:00.0)`);
    spec.host = bdf;
  }
  if (p.has('iommu')) spec.iommu = name('--vfio', 'iommu', p.get('iommu')!);
  if (p.has('fd')) {
    spec.fd = fdNumber('--vfio', 'fd', p.get('fd')!);
    if (!spec.iommu) throw new SpecError(`--vfio ${text}: fd= is a VFIO cdev fd, which needs an iommufd context: add iommu=<id>`);
  }
  if (p.has('group_fd')) {
    spec.groupFd = fdNumber('--vfio', 'group_fd', p.get('group_fd')!);
    if (spec.iommu) throw new SpecError(`--vfio ${text}: group_fd= is for the legacy group path; with iommu=<id> pass the cdev as fd=<n>`);
    if (!spec.host) throw new SpecError(`--vfio ${text}: group_fd= needs host=<bdf> (the device's name in its group)`);
  }
  if (!spec.host && spec.fd === undefined) throw new SpecError(`--vfio ${text}: host=<bdf> is required (or fd=<n> with iommu=<id>)`);
  return spec;
}

export function parseMemory(text: string): MemorySpec {
  const p = pairs('--memory', text, ['size', 'gpa']);
  const size = p.get('size');
  if (!size) throw new SpecError(`--memory ${text}: size=<n> is required`);
  return { size: parseSize('--memory', size), gpa: p.has('gpa') ? parseAddress('--memory', p.get('gpa')!) : 0n };
}

/** Parse every --iommu/--vfio/--memory in argv (as `--opt value` or `--opt=value`) and check them together. */
export function parseRuntimeArgs(argv: readonly string[]): { spec: RuntimeSpec; rest: string[] } {
  const spec: RuntimeSpec = { iommu: [], vfio: [], memory: [] };
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const m = /^--(iommu|vfio|memory)(?:=(.*))?$/.exec(a);
    if (!m) { rest.push(a); continue; }
    const value = m[2] ?? argv[++i];
    if (value === undefined) throw new SpecError(`--${m[1]} needs a value`);
    if (m[1] === 'iommu') spec.iommu.push(parseIommu(value));
    else if (m[1] === 'vfio') spec.vfio.push(parseVfio(value));
    else spec.memory.push(parseMemory(value));
  }
  checkRuntimeSpec(spec);
  return { spec, rest };
}

export function checkRuntimeSpec(spec: RuntimeSpec): void {
  const ids = new Set<string>();
  for (const i of spec.iommu) {
    if (ids.has(i.id)) throw new SpecError(`--iommu id=${i.id} is given twice`);
    ids.add(i.id);
  }
  const ports = new Set<string>(), hosts = new Set<string>(), fds = new Set<number>(spec.iommu.flatMap((i) => (i.iommufdFd !== undefined ? [i.iommufdFd] : [])));
  for (const v of spec.vfio) {
    if (ports.has(v.port)) throw new SpecError(`--vfio port=${v.port} is used by two devices`);
    ports.add(v.port);
    if (v.host) { if (hosts.has(v.host)) throw new SpecError(`--vfio host=${v.host} is assigned twice`); hosts.add(v.host); }
    if (v.iommu && !ids.has(v.iommu)) throw new SpecError(`--vfio port=${v.port}: iommu=${v.iommu} names no --iommu id (known: ${[...ids].join(', ') || 'none'})`);
    for (const [key, fd] of [['fd', v.fd], ['group_fd', v.groupFd]] as const) {
      if (fd === undefined) continue;
      if (fds.has(fd)) throw new SpecError(`--vfio port=${v.port}: ${key}=${fd} is already used by another option`);
      fds.add(fd);
    }
  }
  const mem = [...spec.memory].sort((a, b) => (a.gpa < b.gpa ? -1 : 1));
  for (let i = 1; i < mem.length; i++) {
    const prev = mem[i - 1]!, cur = mem[i]!;
    if (prev.gpa + prev.size > cur.gpa) throw new SpecError(`--memory gpa=0x${cur.gpa.toString(16)} overlaps the region at 0x${prev.gpa.toString(16)}`);
  }
}
