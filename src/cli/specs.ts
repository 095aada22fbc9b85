// The device-assignment options of the CLI, as argv text:
//   --iommu id=<name>[,iommufd_fd=<n>]              an iommufd context (one IOAS), optionally pre-opened
//   --vfio host=<bdf>,port=<name>[,iommu=<id>][,fd=<n>|,group_fd=<n>]   a device; iommu= picks the
//                                                    cdev/iommufd path, without it the legacy group/container
//                                                    path; fd= is a pre-opened VFIO cdev fd (host= is then
//                                                    optional), group_fd= a pre-opened VFIO group fd (legacy)
//   --memory size=<n>[K|M|G][,gpa=<addr>]            guest RAM (a memfd) mapped for DMA at IOVA == GPA
// This file only turns the key=value text into the runtime's spec object; what the values may be
// is checked where every caller's spec is, in src/coordinator/spec.ts (with messages in CLI terms).

import {
  normalizeRuntimeSpec,
  type RuntimeSpec,
  type SpecKind,
  type SpecStyle,
} from '../coordinator/spec.js';
import { InvalidSpecError } from '../errors.js';

export type {
  DeviceSpec,
  IommuSpec,
  MemorySpec,
  RuntimeSpec,
} from '../coordinator/spec.js';

/** The CLI's keys for the spec's camelCase ones; host= is the spec's bdf (QEMU's -device vfio-pci,host=). */
const CLI_KEYS: Record<string, string> = {
  iommufdFd: 'iommufd_fd',
  groupFd: 'group_fd',
  bdf: 'host',
};
const SPEC_KEYS = new Map(Object.entries(CLI_KEYS).map(([spec, cli]) => [cli, spec]));
const ALLOWED: Record<SpecKind, readonly string[]> = {
  iommu: ['id', 'iommufd_fd'],
  vfio: ['host', 'port', 'iommu', 'fd', 'group_fd'],
  memory: ['size', 'gpa'],
};

/** key=value pairs of one option, rejecting unknown and repeated keys; values stay text. */
function pairs(kind: SpecKind, text: string): Record<string, string> {
  const option = `--${kind}`,
    allowed = ALLOWED[kind];
  const out: Record<string, string> = {};
  if (text.trim() === '')
    throw new InvalidSpecError(
      `${option} needs a value (${allowed.map((k) => `${k}=...`).join(',')})`,
      kind,
    );
  for (const part of text.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new InvalidSpecError(`${option} ${text}: '${part}' is not key=value`, kind);
    const key = part.slice(0, eq).trim(),
      value = part.slice(eq + 1).trim();
    if (!allowed.includes(key))
      throw new InvalidSpecError(
        `${option} ${text}: unknown key '${key}' (known: ${allowed.join(', ')})`,
        kind,
      );
    const specKey = SPEC_KEYS.get(key) ?? key;
    if (specKey in out) throw new InvalidSpecError(`${option} ${text}: '${key}' given twice`, kind);
    if (value === '') throw new InvalidSpecError(`${option} ${text}: '${key}' has no value`, kind);
    out[specKey] = value;
  }
  return out;
}

/** Parse every --iommu/--vfio/--memory in argv (as `--opt value` or `--opt=value`) and check them together. */
export function parseRuntimeArgs(argv: readonly string[]): { spec: RuntimeSpec; rest: string[] } {
  const input = { iommu: [] as object[], vfio: [] as object[], memory: [] as object[] };
  const texts: Record<SpecKind, string[]> = { iommu: [], vfio: [], memory: [] };
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const m = /^--(iommu|vfio|memory)(?:=(.*))?$/.exec(a);
    if (!m) {
      rest.push(a);
      continue;
    }
    const kind = m[1] as SpecKind;
    const value = m[2] ?? argv[++i];
    if (value === undefined) throw new InvalidSpecError(`--${kind} needs a value`, kind);
    input[kind].push(pairs(kind, value));
    texts[kind].push(value);
  }
  const style: SpecStyle = {
    option: (kind) => `--${kind}`,
    entry: (kind, index) => `--${kind} ${texts[kind][index]}`,
    key: (key) => CLI_KEYS[key] ?? key,
  };
  return { spec: normalizeRuntimeSpec(input, style), rest };
}
