// The DMA maps vfio-user clients ask for, as the runtime's guest memory: one table shared by
// every connection of the one client process the runtime serves (QEMU sends the same map of its
// RAM to each device's socket), refcounted by connection, so a region is mapped into the IOMMU
// backends (Runtime.addMemory: iommufd IOAS_MAP_FILE by the fd, the legacy container by the
// address this file mmaps) once, on its first map, and unmapped on its last unmap or when the
// last connection holding it goes away. A map without an fd, or a read-only one, is recorded and
// never reaches the IOMMU (the device cannot DMA to it; server-side DMA messages can).
import { fstatSync } from 'node:fs';
import { errnoNumber } from '../../native/errno.js';
import { C, errno, MAP_FAILED, raw, type Target } from '../../native/libc.js';
import { hex } from '../dma/iova-ranges.js';
import { OwnedFd } from '../fd.js';
import { type GuestRegion, type GuestRegionSpec, memfdSource } from '../index.js';

/** What ClientMemory maps through: the Runtime's guest-memory calls. */
export interface MemoryHost {
  addMemory(spec: GuestRegionSpec): GuestRegion;
  removeMemory(region: GuestRegion): void;
}

/** One DMA_MAP as a connection asked for it. `fd`: the caller's, duplicated here (it may close its own). */
export interface ClientMap {
  iova: bigint;
  size: bigint;
  /** Offset into the fd's file (ignored without an fd). */
  offset: bigint;
  fd?: Target;
  readOnly: boolean;
}

/** A refused map or unmap: the errno to answer and why. */
export class ClientMemoryError extends Error {
  constructor(
    readonly errnoName: 'EEXIST' | 'ENOENT' | 'EINVAL' | 'ENOMEM' | 'EFAULT',
    message: string,
  ) {
    super(message);
    this.name = 'ClientMemoryError';
  }
}

interface Entry {
  readonly iova: bigint;
  readonly size: bigint;
  /** The memory's identity (device, inode and offset of the file; 'anon' without an fd). */
  readonly key: string;
  readonly readOnly: boolean;
  readonly owners: Set<string>;
  /** Mapped into the IOMMU backends: the region, the fd kept for re-maps, the mmap. */
  mapped?: { region: GuestRegion; fd: OwnedFd; hva: bigint };
}

export class ClientMemory {
  readonly #entries = new Map<bigint, Entry>();

  constructor(readonly host: MemoryHost) {}

  /** Maps (or, for an identical map another connection made, shares) `m` for `owner`. */
  map(owner: string, m: ClientMap): 'mapped' | 'recorded' | 'shared' {
    const key = m.fd ? fileKey(m.fd, m.offset) : 'anon';
    const same = this.#entries.get(m.iova);
    if (same && same.size === m.size && same.key === key && same.readOnly === m.readOnly) {
      if (same.owners.has(owner))
        throw new ClientMemoryError('EEXIST', `${span(m)} is mapped by this connection already`);
      same.owners.add(owner);
      return 'shared';
    }
    const clash = this.#overlapping(m.iova, m.size);
    if (clash)
      throw new ClientMemoryError(
        'EEXIST',
        `${span(m)} overlaps ${span(clash)}, mapped by ${[...clash.owners].join(', ')} with other memory`,
      );
    const entry: Entry = { ...m, key, owners: new Set([owner]) };
    if (m.fd && !m.readOnly) entry.mapped = this.#mapFile(m, m.fd);
    this.#entries.set(m.iova, entry);
    return entry.mapped ? 'mapped' : 'recorded';
  }

  /** Drops `owner`'s map of exactly [iova, iova+size); the last owner's drop unmaps it. */
  unmap(owner: string, iova: bigint, size: bigint): void {
    const e = this.#entries.get(iova);
    if (!e || e.size !== size || !e.owners.has(owner))
      throw new ClientMemoryError(
        'ENOENT',
        `no map of exactly ${span({ iova, size })} by this connection`,
      );
    this.#drop(e, owner);
  }

  /** Everything `owner` holds, dropped (its connection went away); returns how many maps. */
  release(owner: string): number {
    let n = 0;
    for (const e of [...this.#entries.values()])
      if (e.owners.has(owner)) {
        this.#drop(e, owner);
        n++;
      }
    return n;
  }

  /** The maps by IOVA, each with its owners and whether it reached the IOMMU. */
  entries(): { iova: bigint; size: bigint; owners: string[]; mapped: boolean }[] {
    return [...this.#entries.values()]
      .sort((a, b) => (a.iova < b.iova ? -1 : 1))
      .map((e) => ({ iova: e.iova, size: e.size, owners: [...e.owners], mapped: !!e.mapped }));
  }

  /** The memory at [iova, iova+size) if one map holds all of it: for server-side DMA messages. */
  find(
    iova: bigint,
    size: bigint,
  ): { entry: { iova: bigint; size: bigint }; hva?: bigint } | undefined {
    for (const e of this.#entries.values())
      if (iova >= e.iova && iova + size <= e.iova + e.size)
        return { entry: e, ...(e.mapped ? { hva: e.mapped.hva + (iova - e.iova) } : {}) };
    return undefined;
  }

  #overlapping(iova: bigint, size: bigint): Entry | undefined {
    for (const e of this.#entries.values())
      if (iova < e.iova + e.size && e.iova < iova + size) return e;
    return undefined;
  }

  #mapFile(m: ClientMap, fd: Target): NonNullable<Entry['mapped']> {
    const own = dupFd(fd);
    const hva = raw.mmap(
      null,
      Number(m.size),
      C.PROT_READ | C.PROT_WRITE,
      C.MAP_SHARED,
      own.fd,
      m.offset,
    );
    if (hva === MAP_FAILED || hva === 0n) {
      const e = errno();
      own.close();
      throw new ClientMemoryError(
        e === errnoNumber('ENOMEM') ? 'ENOMEM' : 'EFAULT',
        `${span(m)}: its fd cannot be mapped read-write at offset ${hex(m.offset)} (errno ${e}): a memfd or file the client shares, opened read-write, large enough`,
      );
    }
    try {
      const region = this.host.addMemory({
        name: `client@${hex(m.iova)}`,
        gpa: m.iova,
        size: m.size,
        memory: memfdSource(own, m.offset, hva),
      });
      return { region, fd: own, hva };
    } catch (e) {
      raw.munmap(hva, Number(m.size));
      own.close();
      throw e;
    }
  }

  #drop(e: Entry, owner: string): void {
    e.owners.delete(owner);
    if (e.owners.size > 0) return;
    this.#entries.delete(e.iova);
    if (!e.mapped) return;
    try {
      this.host.removeMemory(e.mapped.region);
    } finally {
      raw.munmap(e.mapped.hva, Number(e.size));
      e.mapped.fd.close();
    }
  }
}

function fileKey(fd: Target, offset: bigint): string {
  const st = fstatSync(fd.fd, { bigint: true });
  return `${st.dev}:${st.ino}+${offset}`;
}

function dupFd(fd: Target): OwnedFd {
  const n = raw.fcntl(fd.fd, C.F_DUPFD_CLOEXEC, 0);
  if (n < 0)
    throw new ClientMemoryError(
      'EINVAL',
      `the map's fd ${fd.fd} cannot be duplicated (errno ${errno()})`,
    );
  return new OwnedFd(n, `client ${fd.path}`);
}

const span = (m: { iova: bigint; size: bigint }): string =>
  `[${hex(m.iova)}, ${hex(m.iova + m.size)})`;
