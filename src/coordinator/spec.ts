// The runtime's one front door for what to run: the spec types (iommufd contexts, devices, guest
// memory) and their validation. normalizeRuntimeSpec takes a plain object — what a library
// caller passes, what the HTTP API parses from JSON, what the CLI builds from argv text —
// checks every field and the spec as a whole, and returns it normalized (BDFs in full form,
// sizes and addresses as bigint). Every mistake is an InvalidSpecError naming the field.
import { InvalidSpecError } from '../errors.js';
import { normalizeBdf } from '../platform/pci-sysfs.js';

export interface IommuSpec {
  id: string;
  iommufdFd?: number;
}
/**
 * A device: bdf picks it by PCI address (the CLI's host=); fd is a pre-opened cdev (iommufd),
 * groupFd a pre-opened group (legacy).
 */
export interface DeviceSpec {
  port: string;
  bdf?: string;
  iommu?: string;
  fd?: number;
  groupFd?: number;
}
export interface MemorySpec {
  size: bigint;
  gpa: bigint;
}
export interface RuntimeSpec {
  iommu: IommuSpec[];
  vfio: DeviceSpec[];
  memory: MemorySpec[];
}

/** Numbers may come as numbers, bigints or strings (JSON, argv); sizes as "16M", addresses as "0x1000". */
export interface RuntimeSpecInput {
  iommu?: readonly unknown[];
  vfio?: readonly unknown[];
  memory?: readonly unknown[];
}

export type SpecKind = 'iommu' | 'vfio' | 'memory';

/** How messages name an option, one entry of it, and a key: as JSON paths, or as CLI options. */
export interface SpecStyle {
  option(kind: SpecKind): string;
  entry(kind: SpecKind, index: number): string;
  key(key: string): string;
  /** The error's `field` for `key` of an entry; by default its JSON path (`vfio[1].bdf`). */
  field?(kind: SpecKind, index: number, key?: string): string | undefined;
  /** The keys messages list as known; by default all of the entry's (the HTTP API takes no fds in JSON). */
  keys?(kind: SpecKind): readonly string[];
}

/** The `field` an error about `key` of entry `index` carries, as `style` names it. */
export function fieldPath(
  style: SpecStyle,
  kind: SpecKind,
  index: number,
  key?: string,
): string | undefined {
  if (style.field) return style.field(kind, index, key);
  return `${kind}[${index}]${key ? `.${key}` : ''}`;
}

export const OBJECT_STYLE: SpecStyle = {
  option: (k) => k,
  entry: (k, i) => `${k}[${i}]`,
  key: (k) => k,
};

const NAME = /^[A-Za-z0-9_.-]{1,64}$/;
const KEYS: Record<SpecKind, readonly string[]> = {
  iommu: ['id', 'iommufdFd'],
  vfio: ['bdf', 'port', 'iommu', 'fd', 'groupFd'],
  memory: ['size', 'gpa'],
};
const U64_END = 1n << 64n;

/**
 * A value as an error message shows it. String() throws on an object without a prototype
 * (`{"size": {"__proto__": null}}` from JSON; the spec fuzzer found it), so objects are shown
 * as JSON.
 */
function show(v: unknown): string {
  if (v === null || typeof v !== 'object') return String(v);
  try {
    return JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? `${x}n` : x)) ?? typeof v;
  } catch {
    return Array.isArray(v) ? 'an array' : 'an object';
  }
}

// Specs that came out of normalizeRuntimeSpec: passing one again costs nothing.
const normalized = new WeakSet<object>();

/** Reads one entry's fields, with messages prefixed by the entry's name and errors naming its path. */
class Entry {
  readonly fields: Record<string, unknown>;
  constructor(
    readonly kind: SpecKind,
    readonly index: number,
    input: unknown,
    readonly style: SpecStyle,
  ) {
    const known = style.keys?.(kind) ?? KEYS[kind];
    if (typeof input !== 'object' || input === null || Array.isArray(input)) {
      throw this.error(`must be an object with ${known.map((k) => style.key(k)).join(', ')}`);
    }
    this.fields = input as Record<string, unknown>;
    for (const k of Object.keys(this.fields)) {
      if (!KEYS[kind].includes(k)) {
        throw this.error(`unknown key '${k}' (known: ${known.join(', ')})`, k);
      }
    }
  }

  error(what: string, key?: string): InvalidSpecError {
    return new InvalidSpecError(
      `${this.style.entry(this.kind, this.index)}: ${what}`,
      fieldPath(this.style, this.kind, this.index, key),
    );
  }

  has(key: string): boolean {
    return this.fields[key] !== undefined;
  }
  k(key: string): string {
    return this.style.key(key);
  }

  name(key: string, required: boolean): string | undefined {
    const v = this.fields[key];
    if (v === undefined) {
      if (required) throw this.error(`${this.k(key)}=<name> is required`, key);
      return undefined;
    }
    if (typeof v !== 'string' || !NAME.test(v)) {
      throw this.error(
        `${this.k(key)}=${show(v)} is not a valid name (letters, digits, '_', '.', '-'; at most 64)`,
        key,
      );
    }
    return v;
  }

  fd(key: string): number | undefined {
    const v = this.fields[key];
    if (v === undefined) return undefined;
    const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) {
      throw this.error(`${this.k(key)}=${show(v)} is not a file descriptor number`, key);
    }
    if (n < 3) {
      throw this.error(
        `${this.k(key)}=${n} is stdin/stdout/stderr, not an inherited VFIO or iommufd fd`,
        key,
      );
    }
    return n;
  }

  bdf(): string | undefined {
    const v = this.fields.bdf;
    if (v === undefined) return undefined;
    const bdf = typeof v === 'string' ? normalizeBdf(v) : undefined;
    if (!bdf) {
      throw this.error(
        `${this.k('bdf')}=${show(v)} is not a PCI address (like 0000:01:00.0 or 01:00.0)`,
        'bdf',
      );
    }
    return bdf;
  }

  /** A byte count: a non-negative integer, or a string of digits with an optional K, M or G. */
  size(): bigint {
    const v = this.fields.size;
    if (v === undefined) throw this.error(`${this.k('size')}=<n> is required`, 'size');
    const m = typeof v === 'string' ? /^(\d+)([KMG]?)$/i.exec(v) : undefined;
    let size: bigint | undefined;
    if (m)
      size =
        BigInt(m[1]!) <<
        { '': 0n, K: 10n, M: 20n, G: 30n }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G'];
    else if (typeof v === 'bigint' || (typeof v === 'number' && Number.isSafeInteger(v)))
      size = BigInt(v);
    if (size === undefined || size < 0n) {
      throw this.error(
        `size=${show(v)} is not a size (a number with an optional K, M or G)`,
        'size',
      );
    }
    if (size === 0n || size % 4096n !== 0n) {
      throw this.error(`size=${show(v)} must be a non-zero multiple of 4 KiB`, 'size');
    }
    return size;
  }

  /** A guest physical address: a non-negative integer, or a string in decimal or 0x hex. */
  address(key: string): bigint {
    const v = this.fields[key];
    if (v === undefined) return 0n;
    let a: bigint | undefined;
    if (typeof v === 'string' && /^(0x[0-9a-f]+|\d+)$/i.test(v)) a = BigInt(v);
    else if (typeof v === 'bigint' || (typeof v === 'number' && Number.isSafeInteger(v)))
      a = BigInt(v);
    if (a === undefined || a < 0n) throw this.error(`${key}=${show(v)} is not an address`, key);
    if (a % 4096n !== 0n) throw this.error(`${key}=${show(v)} is not 4 KiB aligned`, key);
    return a;
  }
}

function iommuSpec(e: Entry): IommuSpec {
  const spec: IommuSpec = { id: e.name('id', true)! };
  const fd = e.fd('iommufdFd');
  if (fd !== undefined) spec.iommufdFd = fd;
  return spec;
}

/** One device entry on its own (what Runtime.addDevice takes); `index`/`style` only shape messages. */
export function normalizeDeviceSpec(
  input: unknown,
  index = 0,
  style: SpecStyle = OBJECT_STYLE,
): DeviceSpec {
  const e = new Entry('vfio', index, input, style);
  const spec: DeviceSpec = { port: e.name('port', true)! };
  const bdf = e.bdf();
  if (bdf !== undefined) spec.bdf = bdf;
  const iommu = e.name('iommu', false);
  if (iommu !== undefined) spec.iommu = iommu;
  const fd = e.fd('fd');
  if (fd !== undefined) {
    spec.fd = fd;
    if (!spec.iommu) {
      throw e.error(
        `${e.k('fd')}= is a VFIO cdev fd, which needs an iommufd context: add iommu=<id>`,
        'fd',
      );
    }
  }
  const groupFd = e.fd('groupFd');
  if (groupFd !== undefined) {
    spec.groupFd = groupFd;
    if (spec.iommu) {
      throw e.error(
        `${e.k('groupFd')}= is for the legacy group path; with iommu=<id> pass the cdev as ${e.k('fd')}=<n>`,
        'groupFd',
      );
    }
    if (!spec.bdf) {
      throw e.error(
        `${e.k('groupFd')}= needs ${e.k('bdf')}=<bdf> (the device's name in its group)`,
        'groupFd',
      );
    }
  }
  if (!spec.bdf && spec.fd === undefined) {
    throw e.error(`${e.k('bdf')}=<bdf> is required (or ${e.k('fd')}=<n> with iommu=<id>)`, 'bdf');
  }
  return spec;
}

function memorySpec(e: Entry): MemorySpec {
  const size = e.size(),
    gpa = e.address('gpa');
  if (gpa + size > U64_END) {
    throw e.error(
      `gpa=0x${gpa.toString(16)} + size=0x${size.toString(16)} passes the end of the 64-bit address space`,
      'gpa',
    );
  }
  return { size, gpa };
}

function list(input: RuntimeSpecInput, kind: SpecKind): readonly unknown[] {
  const v = input[kind];
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw new InvalidSpecError(`${kind} must be an array`, kind);
  return v;
}

/**
 * Validate and normalize a whole spec: each entry, then the entries together (ids, ports, BDFs
 * and fds unique, every iommu= naming a context, memory regions not overlapping).
 */
export function normalizeRuntimeSpec(
  input: RuntimeSpecInput | RuntimeSpec,
  style: SpecStyle = OBJECT_STYLE,
): RuntimeSpec {
  if (typeof input === 'object' && input !== null && normalized.has(input))
    return input as RuntimeSpec;
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new InvalidSpecError(
      'a runtime spec must be an object with iommu, vfio and memory arrays',
    );
  }
  for (const k of Object.keys(input)) {
    if (!['iommu', 'vfio', 'memory'].includes(k)) {
      throw new InvalidSpecError(
        `unknown key '${k}' in a runtime spec (known: iommu, vfio, memory)`,
        k,
      );
    }
  }
  const spec: RuntimeSpec = {
    iommu: list(input, 'iommu').map((x, i) => iommuSpec(new Entry('iommu', i, x, style))),
    vfio: list(input, 'vfio').map((x, i) => normalizeDeviceSpec(x, i, style)),
    memory: list(input, 'memory').map((x, i) => memorySpec(new Entry('memory', i, x, style))),
  };
  checkTogether(spec, style);
  // Frozen, so a spec checked once stays as checked when it is passed again.
  for (const list of [spec.iommu, spec.vfio, spec.memory]) {
    list.forEach((x) => Object.freeze(x));
    Object.freeze(list);
  }
  normalized.add(Object.freeze(spec));
  return spec;
}

function checkTogether(spec: RuntimeSpec, style: SpecStyle): void {
  const opt = style.option,
    key = style.key;
  const ids = new Set<string>();
  spec.iommu.forEach((c, i) => {
    if (ids.has(c.id)) {
      throw new InvalidSpecError(`${opt('iommu')} id=${c.id} is given twice`, `iommu[${i}].id`);
    }
    ids.add(c.id);
  });
  const ports = new Set<string>(),
    bdfs = new Set<string>();
  const fds = new Set<number>(
    spec.iommu.flatMap((c) => (c.iommufdFd !== undefined ? [c.iommufdFd] : [])),
  );
  spec.vfio.forEach((v, i) => {
    const at = `vfio[${i}]`;
    if (ports.has(v.port)) {
      throw new InvalidSpecError(
        `${opt('vfio')} port=${v.port} is used by two devices`,
        `${at}.port`,
      );
    }
    ports.add(v.port);
    if (v.bdf) {
      if (bdfs.has(v.bdf)) {
        throw new InvalidSpecError(
          `${opt('vfio')} ${key('bdf')}=${v.bdf} is assigned twice`,
          `${at}.bdf`,
        );
      }
      bdfs.add(v.bdf);
    }
    if (v.iommu && !ids.has(v.iommu)) {
      const known = [...ids].join(', ') || 'none';
      throw new InvalidSpecError(
        `${opt('vfio')} port=${v.port}: iommu=${v.iommu} names no ${opt('iommu')} id (known: ${known})`,
        `${at}.iommu`,
      );
    }
    for (const [k, fd] of [
      ['fd', v.fd],
      ['groupFd', v.groupFd],
    ] as const) {
      if (fd === undefined) continue;
      if (fds.has(fd)) {
        throw new InvalidSpecError(
          `${opt('vfio')} port=${v.port}: ${key(k)}=${fd} is already used by another option`,
          `${at}.${k}`,
        );
      }
      fds.add(fd);
    }
  });
  const mem = spec.memory
    .map((m, i) => ({ ...m, i }))
    .sort((a, b) => (a.gpa < b.gpa ? -1 : a.gpa > b.gpa ? 1 : 0));
  for (let i = 1; i < mem.length; i++) {
    const prev = mem[i - 1]!,
      cur = mem[i]!;
    if (prev.gpa + prev.size > cur.gpa) {
      throw new InvalidSpecError(
        `${opt('memory')} gpa=0x${cur.gpa.toString(16)} overlaps the region at 0x${prev.gpa.toString(16)}`,
        `memory[${cur.i}].gpa`,
      );
    }
  }
}
