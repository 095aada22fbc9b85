// Child process of the RLIMIT_MEMLOCK lab test: lowers its own RLIMIT_MEMLOCK, then on each
// backend attaches the device and registers guest RAM larger than the limit, and prints one
// JSON line with what happened. The parent starts it with or without CAP_IPC_LOCK (setpriv),
// because the capability exempts root from the limit on both backends.
//   node dma-memlock-child.js '{"bdf":"0000:00:04.0","limit":"1048576","size":"8388608"}'
import { readFileSync } from 'node:fs';
import { SysError } from '../../native/errno.js';
import { encode } from '../../native/layout.js';
import { C, raw, rlimit } from '../../native/libc.js';
import { type DmaBackend, memfdRegionSource } from '../../src/dma/backend.js';
import { ContainerBackend } from '../../src/dma/container-backend.js';
import { GuestMemory } from '../../src/dma/guest-memory.js';
import { IommufdContext } from '../../src/dma/iommufd-context.js';
import { MemfdRegion } from '../../src/memory/memfd-region.js';

export interface MemlockOutcome {
  kind: string;
  ok: boolean;
  code?: string;
  message?: string;
  vmLck: string;
}
export interface MemlockReport {
  capEff: string;
  limit: string;
  outcomes: MemlockOutcome[];
}

const args = JSON.parse(process.argv[2] ?? '{}') as { bdf: string; limit: string; size: string };
const limit = BigInt(args.limit),
  size = BigInt(args.size);
if (
  raw.prlimit(0, C.RLIMIT_MEMLOCK, encode(rlimit, { rlim_cur: limit, rlim_max: limit }), null) < 0
)
  throw new Error('prlimit(RLIMIT_MEMLOCK) failed');
const status = (key: string): string =>
  readFileSync('/proc/self/status', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${key}:`))
    ?.split(/\s+/)
    .slice(1)
    .join(' ') ?? '?';

const ram = new MemfdRegion('memlock-ram', Number(size));
const outcomes: MemlockOutcome[] = [];
for (const kind of ['iommufd', 'container'] as const) {
  const backend: DmaBackend & { close(): void } =
    kind === 'iommufd' ? IommufdContext.open('memlock') : ContainerBackend.open('memlock');
  const dev = backend.attachPciDevice(args.bdf);
  const table = new GuestMemory();
  table.addBackend(backend);
  try {
    table.addRegion({ name: 'ram', gpa: 0x100000000n, size, memory: memfdRegionSource(ram) });
    outcomes.push({ kind, ok: true, vmLck: status('VmLck') });
    table.close();
  } catch (e) {
    outcomes.push({
      kind,
      ok: false,
      code: e instanceof SysError ? e.code : undefined,
      message: (e as Error).message,
      vmLck: status('VmLck'),
    });
  }
  dev.detach();
  backend.close();
}
ram.close();
console.log(
  JSON.stringify({ capEff: status('CapEff'), limit: args.limit, outcomes } satisfies MemlockReport),
);
