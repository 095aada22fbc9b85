// Kernel failures of DMA calls turned into errors that name the fix: ENOMEM from pinning
// (RLIMIT_MEMLOCK, and how each backend accounts pinned pages), an unmap that would cut a
// mapping in two, an attach refused because existing mappings overlap the device's reserved
// IOVA regions, a cdev bind refused because someone else holds the device, EPERM for MSIs the
// platform cannot isolate. The errno stays: a SysError comes back as a SysError with a longer hint.
import { readFileSync, realpathSync } from 'node:fs';
import { basename } from 'node:path';
import { SysError } from '../../native/errno.js';
import { decode } from '../../native/layout.js';
import { C, raw, rlimit } from '../../native/libc.js';
import { withHint } from '../errors.js';
import { iommuGroupOf, pciPath, SYSFS_PCI } from '../platform/pci-sysfs.js';
import type { DmaMapping } from './backend.js';
import {
  formatRange,
  formatSize,
  formatSpan,
  type IovaRange,
  rangeToSpan,
  spansOverlap,
  U64_MAX,
} from './iova-ranges.js';

/** Capability numbers from <linux/capability.h>. */
export const CAP_IPC_LOCK = 14;

const statusLine = (key: string): string | undefined => {
  try {
    return readFileSync('/proc/self/status', 'utf8')
      .split('\n')
      .find((l) => l.startsWith(`${key}:`))
      ?.slice(key.length + 1)
      .trim();
  } catch {
    return undefined;
  }
};

/** Whether this process has `cap` in its effective set (/proc/self/status CapEff). */
export function hasCapability(cap: number): boolean {
  const eff = statusLine('CapEff');
  return eff !== undefined && ((BigInt(`0x${eff}`) >> BigInt(cap)) & 1n) === 1n;
}

/** This process's RLIMIT_MEMLOCK (soft limit; U64_MAX is unlimited). */
export function memlockLimit(): bigint {
  const out = Buffer.alloc(rlimit.size);
  if (raw.prlimit(0, C.RLIMIT_MEMLOCK, null, out) < 0) return U64_MAX;
  return decode(rlimit, out).rlim_cur;
}

const formatLimit = (n: bigint): string => (n === U64_MAX ? 'unlimited' : formatSize(n));

/**
 * Explain a failed map. ENOMEM while pinning is nearly always RLIMIT_MEMLOCK: the kernel pins
 * every mapped page. Accounting differs: iommufd charges the pages to the user (all of its
 * processes together) and skips accounting entirely for CAP_IPC_LOCK; Type1 charges this
 * process's locked memory (VmLck) even with CAP_IPC_LOCK, but then does not enforce the limit.
 */
export function explainMapFailure(
  e: unknown,
  kind: 'iommufd' | 'container',
  length: bigint,
): unknown {
  if (!(e instanceof SysError) || e.code !== 'ENOMEM') return e;
  if (hasCapability(CAP_IPC_LOCK)) {
    return withHint(
      e,
      `pinning ${formatSize(length)} for DMA failed although this process has CAP_IPC_LOCK, so no RLIMIT_MEMLOCK applies: the host is short of memory it can pin`,
    );
  }
  const limit = formatLimit(memlockLimit());
  const fix =
    'raise RLIMIT_MEMLOCK to cover all guest memory (ulimit -l, prlimit --memlock, systemd LimitMEMLOCK=), or run with CAP_IPC_LOCK';
  const how =
    kind === 'iommufd'
      ? `iommufd charges pinned pages to user ${process.getuid?.() ?? '?'} (all its processes together) against this process's RLIMIT_MEMLOCK of ${limit}`
      : `VFIO Type1 charges pinned pages to this process's locked memory (VmLck ${statusLine('VmLck') ?? '?'} before this call) against its RLIMIT_MEMLOCK of ${limit}`;
  return withHint(
    e,
    `pinning ${formatSize(length)} for DMA exceeds the locked-memory limit: ${how}; ${fix}`,
  );
}

/** Explain an unmap the kernel refused because it would cut mappings in two. */
export function explainBisect(
  e: unknown,
  span: { iova: bigint; length: bigint },
  cut: readonly DmaMapping[],
): unknown {
  if (cut.length === 0) return e;
  return withHint(
    e,
    `unmap ${formatSpan(span)} would cut ${cut.map((m) => `mapping ${formatSpan(m)}`).join(', ')} in two: unmap whole mappings, as they were mapped`,
  );
}

export interface ReservedRegion {
  readonly range: IovaRange;
  readonly type: string;
}

/** The IOMMU group's reserved regions of a PCI function, from sysfs ([] if unreadable). */
export function reservedRegionsOf(bdf: string): ReservedRegion[] {
  const file = pciPath(bdf, 'iommu_group', 'reserved_regions');
  try {
    return readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((line) => {
        const [s, l, type] = line.trim().split(/\s+/);
        return { range: { start: BigInt(s!), last: BigInt(l!) }, type: type ?? '?' };
      });
  } catch {
    return [];
  }
}

/** The PCI address behind a VFIO cdev node (/dev/vfio/devices/vfioN), if sysfs says. */
export function bdfOfCdev(path: string): string | undefined {
  // An inherited fd's path reads "/dev/vfio/devices/vfio3 (fd 4)": the node is the first word.
  const node = basename(path.split(' ')[0]!);
  if (!/^vfio\d+$/.test(node)) return undefined;
  try {
    return basename(realpathSync(`/sys/class/vfio-dev/${node}/device`));
  } catch {
    return undefined;
  }
}

/**
 * Explain an attach the kernel refused (iommufd EADDRINUSE, Type1 EINVAL) when mappings
 * already made overlap the reserved regions of the device being attached.
 */
export function explainAttachConflict(
  e: unknown,
  bdf: string | undefined,
  mappings: readonly DmaMapping[],
  name: string,
): unknown {
  if (!(e instanceof SysError) || !['EADDRINUSE', 'EINVAL'].includes(e.code)) return e;
  const reserved = bdf ? reservedRegionsOf(bdf) : [];
  const clashes = mappings.filter((m) =>
    reserved.some((r) => spansOverlap(m, rangeToSpan(r.range))),
  );
  if (clashes.length === 0) {
    if (e.code !== 'EADDRINUSE') return e;
    return withHint(
      e,
      `an existing mapping of ${name} overlaps an IOVA range this device reserves${bdf ? ` (see ${SYSFS_PCI}/${bdf}/iommu_group/reserved_regions)` : ''}: unmap it, then attach`,
    );
  }
  const regions = reserved.map((r) => `${formatRange(r.range)} ${r.type}`).join(', ');
  return withHint(
    e,
    `mappings of ${name} overlap reserved IOVA regions of ${bdf} (${regions}) and are invalid for it: ${clashes.map((m) => formatSpan(m)).join(', ')}; unmap them, or attach devices before mapping guest memory`,
  );
}

/**
 * Explain a refused VFIO_DEVICE_BIND_IOMMUFD. EINVAL: the device is open already through another
 * cdev fd (the cdev path allows one open at a time: another process, or another context of this
 * one, has it), or this very fd was bound before. EBUSY: the device's legacy group is in use.
 */
export function explainBindFailure(e: unknown, path: string): unknown {
  if (!(e instanceof SysError)) return e;
  const bdf = bdfOfCdev(path),
    dev = bdf ?? path;
  const group = bdf ? iommuGroupOf(bdf) : undefined;
  const groupNode = group === undefined ? 'its /dev/vfio/<group>' : `/dev/vfio/${group}`;
  switch (e.code) {
    case 'EINVAL':
      return withHint(
        e,
        `${dev} is already open and bound to an iommufd elsewhere: another process (a VMM, or a second runtime) or another --iommu context of this one holds it (\`fuser -v ${path.split(' ')[0]}\` names a process): stop that holder, or have it hand this process its iommufd and cdev fds (iommufd_fd=<n>, fd=<n>); a cdev fd binds once, so a fd this process bound before must be closed and the cdev opened again`,
      );
    case 'EBUSY':
      return withHint(
        e,
        `${dev}'s legacy VFIO group ${groupNode} is in use (a VMM or runtime on the group/container path holds it): stop that holder, or use the legacy path here too (omit iommu=, and pass its group fd as group_fd=<n>)`,
      );
    case 'EPERM':
      return explainUnsafeInterrupts(e, 'iommufd');
    case 'ENODEV':
    case 'ENXIO':
      return withHint(
        e,
        `${dev} went away (unplugged, or unbound from vfio-pci): bind it to vfio-pci again and reopen its cdev`,
      );
    default:
      return e;
  }
}

/**
 * Explain EPERM from an attach (iommufd) or VFIO_SET_IOMMU (Type1): the kernel refuses a device
 * whose MSIs the platform cannot isolate (no interrupt remapping), unless told to allow it.
 */
export function explainUnsafeInterrupts(e: unknown, kind: 'iommufd' | 'container'): unknown {
  if (!(e instanceof SysError) || e.code !== 'EPERM') return e;
  const param =
    kind === 'iommufd'
      ? 'iommufd allow_unsafe_interrupts=1'
      : 'vfio_iommu_type1 allow_unsafe_interrupts=1';
  return withHint(
    e,
    `the platform cannot isolate this device's MSIs (interrupt remapping is off or missing): enable it (intremap=on, or the IOMMU's interrupt remapping in firmware), or, trusting the device and guest, load ${param}`,
  );
}
