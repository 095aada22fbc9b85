// The DMA layer on the real lab kernel, both backends through the one DmaBackend interface:
// map/unmap of memfd memory, guest RAM split around the reserved MSI window (checked by
// asking the kernel: a fixed map over a mapped page fails EEXIST, a hole page is refused, a
// free page maps), kernel-chosen IOVAs, unmap-all, regions added and removed while a device
// is attached, devices leaving and coming back; iommufd: two NVMe sharing one IOAS, a
// pre-opened fd, an attach refused because of a mapping in a reserved region; the errors
// (/dev/iommu missing, a region in a hole, RLIMIT_MEMLOCK too low).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { SysError } from '../../native/errno.js';
import * as iommufd from '../../native/iommufd.js';
import { C, raw } from '../../native/libc.js';
import {
  type DmaBackend,
  type GuestMemorySource,
  memfdRegionSource,
} from '../../src/dma/backend.js';
import { ContainerBackend } from '../../src/dma/container-backend.js';
import { GuestMemory, type RecheckReport } from '../../src/dma/guest-memory.js';
import { IommufdContext } from '../../src/dma/iommufd-context.js';
import {
  formatRanges,
  formatSpan,
  hex,
  IovaHoleError,
  type IovaSpan,
  splitGuestRange,
} from '../../src/dma/iova-ranges.js';
import { MemfdRegion } from '../../src/memory/memfd-region.js';
import type { MemlockReport } from '../support/dma-memlock-child.js';
import { loud } from '../support/hooks.js';
import { labDevice, labDevices, requireLab } from '../support/lab.js';
import { skipBecause } from '../support/skip.js';

const MiB = 1n << 20n;
const PAGE = 0x1000n;
const HIGH = { gpa: 0xfe000000n, size: 32n * MiB }; // spans the MSI window the kernel reserves

type Kind = 'iommufd' | 'container';
type Closable = DmaBackend & { close(): void };
const openBackend = (kind: Kind, name: string): Closable =>
  kind === 'iommufd' ? IommufdContext.open(name) : ContainerBackend.open(name);

/** Ask the kernel about one page: a fixed map fails EEXIST if mapped, is refused in a hole, succeeds (and is undone) if free. */
function probe(b: DmaBackend, iova: bigint, page: GuestMemorySource): 'mapped' | 'hole' | 'free' {
  try {
    b.mapFixed(iova, PAGE, page);
  } catch (e) {
    if (e instanceof SysError && e.code === 'EEXIST') return 'mapped';
    if (e instanceof SysError && (e.code === 'EINVAL' || e.code === 'ENOSPC')) return 'hole';
    throw e;
  }
  assert.is(b.unmap(iova, PAGE), PAGE, `probe page at ${hex(iova)} unmaps`);
  return 'free';
}

/** The kernel agrees with a list of mapped spans: first and last page of each mapped, and the pages around them not. */
function kernelAgrees(b: DmaBackend, mapped: readonly IovaSpan[], page: GuestMemorySource): void {
  for (const m of mapped) {
    assert.is(probe(b, m.iova, page), 'mapped', `first page of ${formatSpan(m)}`);
    assert.is(probe(b, m.iova + m.length - PAGE, page), 'mapped', `last page of ${formatSpan(m)}`);
    for (const edge of [m.iova - PAGE, m.iova + m.length]) {
      if (edge < 0n || mapped.some((x) => x.iova <= edge && edge < x.iova + x.length)) continue;
      assert.ok(
        probe(b, edge, page) !== 'mapped',
        `page ${hex(edge)} next to ${formatSpan(m)} is not mapped`,
      );
    }
  }
}

const sameSpans = (a: readonly IovaSpan[], b: readonly IovaSpan[]): void =>
  assert.equal(
    a.map((m) => formatSpan(m)),
    b.map((m) => formatSpan(m)),
  );

// ---------------------------------------------------------------- both backends
for (const kind of ['iommufd', 'container'] as const) {
  const s = suite(`DMA backend: ${kind}`);
  const st: { backend?: Closable; ram?: MemfdRegion; page?: MemfdRegion; detach?: () => void } = {};
  const b = (): Closable => st.backend!;
  const pg = (): GuestMemorySource => memfdRegionSource(st.page!);

  s.before(
    loud('before', () => {
      requireLab();
      st.ram = new MemfdRegion(`${kind}-ram`, 64 << 20);
      st.page = new MemfdRegion(`${kind}-probe`, 4096);
      st.backend = openBackend(kind, `dma-${kind}`);
      st.detach = () => {};
    }),
  );
  s.after(
    loud('after', () => {
      try {
        st.detach?.();
      } finally {
        st.backend?.close();
        st.ram?.close();
        st.page?.close();
      }
    }),
  );

  s('attach NVMe; map and unmap a memfd-backed range', () => {
    const dev = b().attachPciDevice(labDevice('nvme'));
    st.detach = () => dev.detach();
    assert.ok(b().active);
    console.log(
      `    ${kind}: allowed ${formatRanges(b().allowedRanges())}, alignment ${hex(b().iovaAlignment())}`,
    );
    b().mapFixed(0x100000n, 4n * MiB, memfdRegionSource(st.ram!));
    kernelAgrees(b(), [{ iova: 0x100000n, length: 4n * MiB }], pg());
    assert.is(b().unmap(0x100000n, 4n * MiB), 4n * MiB);
    assert.is(probe(b(), 0x100000n, pg()), 'free');
    assert.is(b().unmap(0x100000n, 4n * MiB), 0n, 'nothing left to unmap');
  });

  s('guest RAM across the reserved window: mapped set = guest range minus the hole', () => {
    const table = new GuestMemory();
    table.addBackend(b());
    const r = table.addRegion({
      name: 'high',
      gpa: HIGH.gpa,
      size: HIGH.size,
      memory: memfdRegionSource(st.ram!),
    });
    const { pieces, skipped } = splitGuestRange(r, b().allowedRanges(), {
      alignment: b().iovaAlignment(),
    });
    console.log(
      `    ${kind}: pieces ${pieces.map(formatSpan).join(', ')}; hole ${skipped.map((x) => formatSpan(x)).join(', ')}`,
    );
    assert.is(pieces.length, 2);
    sameSpans(table.mappingsOf(b()), pieces);
    sameSpans(b().mappings(), pieces);
    kernelAgrees(b(), pieces, pg());
    for (const h of skipped) {
      assert.is(probe(b(), h.iova, pg()), 'hole');
      assert.is(probe(b(), h.iova + h.length - PAGE, pg()), 'hole');
    }
    const holeBytes = skipped.reduce((n, x) => n + x.length, 0n);
    assert.is(
      table.removeRegion(r).get(b()),
      HIGH.size - holeBytes,
      'removeRegion: the kernel unmapped the guest range minus the hole',
    );
    assert.is(probe(b(), HIGH.gpa, pg()), 'free');
    // The same pieces, unmapped by one call over the whole guest range.
    for (const p of pieces)
      b().mapFixed(p.iova, p.length, memfdRegionSource(st.ram!, p.iova - HIGH.gpa));
    assert.is(
      b().unmap(HIGH.gpa, HIGH.size),
      HIGH.size - holeBytes,
      'one unmap over the guest range',
    );
  });

  s('kernel-chosen IOVA (mapAnywhere) lands in free, allowed space', () => {
    b().mapFixed(0x1000n, 2n * MiB - PAGE, memfdRegionSource(st.ram!)); // occupy the lowest IOVAs
    const iova = b().mapAnywhere(MiB, memfdRegionSource(st.ram!, 4n * MiB));
    console.log(`    ${kind}: chose ${hex(iova)}`);
    assert.ok(iova >= 2n * MiB, `chosen IOVA ${hex(iova)} overlaps the fixed mapping`);
    assert.ok(
      b()
        .allowedRanges()
        .some((r) => r.start <= iova && iova + MiB - 1n <= r.last),
    );
    assert.is(probe(b(), iova, pg()), 'mapped');
    assert.is(b().unmap(iova, MiB), MiB);
    assert.is(b().unmap(0x1000n, 2n * MiB - PAGE), 2n * MiB - PAGE);
  });

  s('unmap all', () => {
    b().mapFixed(0x100000n, MiB, memfdRegionSource(st.ram!));
    b().mapFixed(0x40000000n, 2n * MiB, memfdRegionSource(st.ram!, MiB));
    b().mapAnywhere(MiB, memfdRegionSource(st.ram!, 4n * MiB));
    assert.is(b().unmapAll(), 4n * MiB);
    assert.equal(b().mappings(), []);
    assert.is(probe(b(), 0x40000000n, pg()), 'free');
    assert.is(b().unmapAll(), 0n);
  });

  s('an unmap that would cut a mapping in two is refused with the mapping named', () => {
    b().mapFixed(0x200000n, 2n * MiB, memfdRegionSource(st.ram!));
    try {
      b().unmap(0x200000n, PAGE);
      assert.unreachable();
    } catch (e) {
      assert.instance(e, SysError);
      console.log(`    ${(e as Error).message}`);
      assert.match((e as Error).message, 'would cut mapping 0x200000-0x3fffff in two');
    }
    assert.is(b().unmap(0x200000n, 2n * MiB), 2n * MiB);
  });

  s(
    'regions added and removed while the device is attached: the table and the kernel agree',
    () => {
      const reports: RecheckReport[] = [];
      const table = new GuestMemory({ onRecheck: (r) => reports.push(r) });
      table.addBackend(b());
      const low = table.addRegion({
        name: 'low',
        gpa: 0n,
        size: 8n * MiB,
        memory: memfdRegionSource(st.ram!),
      });
      table.addRegion({
        name: 'high',
        gpa: HIGH.gpa,
        size: HIGH.size,
        memory: memfdRegionSource(st.ram!, 8n * MiB),
      });
      table.addRegion({
        name: 'above-4g',
        gpa: 0x100000000n,
        size: 4n * MiB,
        memory: memfdRegionSource(st.ram!, 40n * MiB),
      });
      sameSpans(b().mappings(), table.mappingsOf(b()));
      kernelAgrees(b(), table.mappingsOf(b()), pg());
      assert.is(table.removeRegion(low).get(b()), 8n * MiB);
      sameSpans(b().mappings(), table.mappingsOf(b()));
      assert.is(probe(b(), 0n, pg()), 'free');
      assert.ok(table.isMapped(0x100000000n, 4n * MiB) && !table.isMapped(0n, PAGE));
      assert.equal(table.translate(0x100001000n)?.hva, st.ram!.hva + 40n * MiB + PAGE);

      // The device leaves: the kernel drops the address space, the table follows.
      st.detach!();
      st.detach = () => {};
      assert.not.ok(b().active);
      assert.equal(table.mappingsOf(b()), []);
      assert.is(reports.at(-1)?.dropped.length, 3);
      // It comes back: every registered region is mapped again, and the kernel agrees.
      const dev = b().attachPciDevice(labDevice('nvme'));
      st.detach = () => dev.detach();
      assert.is(reports.at(-1)?.added.length, 3);
      sameSpans(b().mappings(), table.mappingsOf(b()));
      kernelAgrees(b(), table.mappingsOf(b()), pg());
      table.close();
      assert.equal(b().mappings(), []);
    },
  );

  s('a region entirely inside a hole is refused with the range and the hole named', () => {
    const table = new GuestMemory();
    table.addBackend(b());
    try {
      table.addRegion({ gpa: 0xfee00000n, size: MiB, memory: memfdRegionSource(st.ram!) });
      assert.unreachable();
    } catch (e) {
      assert.instance(e, IovaHoleError);
      console.log(`    ${(e as Error).message}`);
      assert.match(
        (e as Error).message,
        'guest range 0xfee00000-0xfeefffff lies entirely in the reserved IOVA hole 0xfee00000-0xfeefffff',
      );
    }
    assert.equal(b().mappings(), []);
    table.close();
  });

  s.run();
}

// ---------------------------------------------------------------- iommufd only
const io = suite('DMA: iommufd contexts');
const ram = { r: undefined as MemfdRegion | undefined };
io.before(
  loud('before', () => {
    requireLab();
    ram.r = new MemfdRegion('iommufd-ram', 64 << 20);
  }),
);
io.after(loud('after', () => ram.r?.close()));

const nvmes = labDevices('nvme');
if (nvmes.length < 2) {
  skipBecause(
    io,
    'two NVMe naming one context share one IOAS',
    `this guest has ${nvmes.length} NVMe bound to vfio-pci; run the lab with --devices "nvme nvme e1000e edu"`,
  );
} else {
  io('two NVMe naming one context share one IOAS', () => {
    const ctx = IommufdContext.open('shared');
    const table = new GuestMemory();
    table.addBackend(ctx);
    table.addRegion({ name: 'ram', gpa: 0n, size: 16n * MiB, memory: memfdRegionSource(ram.r!) });
    const a = ctx.attachPciDevice(nvmes[0]!);
    const bdev = ctx.attachPciDevice(nvmes[1]!);
    try {
      console.log(
        `    ${a.bdf}: dev ${a.devId} ioas ${a.ioasId} pt ${a.ptId}; ${bdev.bdf}: dev ${bdev.devId} ioas ${bdev.ioasId} pt ${bdev.ptId}`,
      );
      assert.is(a.ioasId, bdev.ioasId);
      assert.is(ctx.ioasId, a.ioasId);
      assert.is(ctx.deviceCount, 2);
      assert.equal(bdev.invalid, []);
      assert.equal(table.mappingsOf(ctx).length, 1, 'mapped once, into the IOAS both devices use');
      a.detach();
      assert.is(ctx.ioasId, bdev.ioasId, 'the IOAS stays while a device remains');
      assert.ok(table.isMapped(0n, 16n * MiB, ctx));
    } finally {
      a.detach();
      bdev.detach();
    }
    assert.is(ctx.ioasId, undefined);
    table.close();
    ctx.close();
  });
}

io('the IOAS is destroyed when the last device leaves (the kernel no longer knows its id)', () => {
  const ctx = IommufdContext.open('refcount');
  const dev = ctx.attachPciDevice(labDevice('nvme'));
  const id = dev.ioasId;
  ctx.mapFixed(0x100000n, MiB, memfdRegionSource(ram.r!));
  dev.detach();
  assert.is(ctx.ioasId, undefined);
  assert.equal(ctx.mappings(), []);
  try {
    iommufd.destroy(ctx.iommufd, id);
    assert.unreachable();
  } catch (e) {
    assert.is((e as SysError).code, 'ENOENT');
  }
  const again = ctx.attachPciDevice(labDevice('nvme'));
  assert.ok(again.ioasId !== undefined);
  again.detach();
  ctx.close();
});

io('a pre-opened iommufd fd works; a wrong or closed fd is named', () => {
  const fd = raw.open('/dev/iommu', C.O_RDWR | C.O_CLOEXEC, 0);
  assert.ok(fd >= 0);
  const ctx = IommufdContext.open('pre-opened', { fd });
  assert.match(ctx.iommufd.path, `/dev/iommu (fd ${fd})`);
  const dev = ctx.attachPciDevice(labDevice('nvme'));
  ctx.mapFixed(0x100000n, 2n * MiB, memfdRegionSource(ram.r!));
  assert.is(ctx.unmap(0x100000n, 2n * MiB), 2n * MiB);
  dev.detach();
  ctx.close();
  assert.is(raw.close(fd), -1, 'the context owned the fd and closed it');

  const notIommu = raw.dup(ram.r!.fd.fd);
  try {
    IommufdContext.open('memfd', { fd: notIommu });
    assert.unreachable();
  } catch (e) {
    console.log(`    ${(e as Error).message}`);
    assert.match(
      (e as Error).message,
      `/memfd:iommufd-ram (deleted) (fd ${notIommu}) is not an iommufd: pass an fd opened on /dev/iommu`,
    );
  }
  try {
    IommufdContext.open('closed', { fd: 987 });
    assert.unreachable();
  } catch (e) {
    assert.match((e as Error).message, 'iommufd fd 987 is not open in this process');
  }
});

io('/dev/iommu missing: the error names the fix', () => {
  try {
    IommufdContext.open('missing', { path: '/nonexistent/iommu' });
    assert.unreachable();
  } catch (e) {
    console.log(`    ${(e as Error).message}`);
    assert.match((e as Error).message, '/nonexistent/iommu does not exist');
    assert.match((e as Error).message, 'CONFIG_IOMMUFD');
  }
});

io(
  "an attach refused because a mapping lies in the device's reserved region names the mapping",
  () => {
    const ctx = IommufdContext.open('conflict');
    // Before any device the IOAS allows everything: this mapping covers the MSI window.
    ctx.mapFixed(HIGH.gpa, HIGH.size, memfdRegionSource(ram.r!));
    try {
      ctx.attachPciDevice(labDevice('nvme'));
      assert.unreachable();
    } catch (e) {
      console.log(`    ${(e as Error).message}`);
      assert.instance(e, SysError);
      assert.is((e as SysError).code, 'EADDRINUSE');
      assert.match((e as Error).message, '0xfee00000-0xfeefffff msi');
      assert.match((e as Error).message, 'are invalid for it: 0xfe000000-0xffffffff');
    }
    assert.is(ctx.unmapAll(), HIGH.size);
    const dev = ctx.attachPciDevice(labDevice('nvme')); // a fresh cdev fd: the failed one stayed bound and was closed
    assert.ok(ctx.active);
    dev.detach();
    ctx.close();
  },
);

io.run();

// ---------------------------------------------------------------- container only
const ct = suite('DMA: legacy container');
ct('one container for every group; mapping before any group is a clear error', () => {
  requireLab();
  const c = ContainerBackend.open('shared');
  const r = new MemfdRegion('container-ram', 4 << 20);
  try {
    assert.throws(
      () => c.mapFixed(0x100000n, MiB, memfdRegionSource(r)),
      /no group is attached yet .* attach a device first/,
    );
    const a = c.attachPciDevice(labDevice('nvme'));
    const e = c.attachPciDevice(labDevice('e1000e'));
    console.log(`    groups ${c.groupIds.join(', ')}; ranges ${formatRanges(c.allowedRanges())}`);
    assert.is(c.groupIds.length, 2);
    c.mapFixed(0x100000n, MiB, memfdRegionSource(r));
    e.detach();
    assert.ok(c.active, 'still active with one group');
    assert.is(c.unmap(0x100000n, MiB), MiB);
    a.detach();
    assert.not.ok(c.active);
  } finally {
    r.close();
    c.close();
  }
});
ct.run();

// ---------------------------------------------------------------- RLIMIT_MEMLOCK
const ml = suite('DMA: RLIMIT_MEMLOCK');
const child = join(dirname(fileURLToPath(import.meta.url)), '../support/dma-memlock-child.js');
const setpriv = ['/usr/bin/setpriv', '/bin/setpriv', '/usr/sbin/setpriv'].find((p) =>
  existsSync(p),
);

function runChild(dropIpcLock: boolean): MemlockReport {
  const args = JSON.stringify({
    bdf: labDevice('nvme'),
    limit: String(1n * MiB),
    size: String(8n * MiB),
  });
  const cmd = dropIpcLock
    ? [setpriv!, '--bounding-set', '-ipc_lock', process.execPath, child, args]
    : [process.execPath, child, args];
  const r = spawnSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8', timeout: 120_000 });
  assert.is(r.status, 0, `child failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as MemlockReport;
}

ml('root with CAP_IPC_LOCK is exempt: 8 MiB pins under a 1 MiB limit on both backends', () => {
  requireLab();
  const rep = runChild(false);
  for (const o of rep.outcomes)
    console.log(`    ${o.kind}: ${o.ok ? 'mapped' : o.message}; VmLck ${o.vmLck}`);
  assert.equal(
    rep.outcomes.map((o) => [o.kind, o.ok]),
    [
      ['iommufd', true],
      ['container', true],
    ],
  );
});

if (!setpriv) {
  skipBecause(
    ml,
    'without CAP_IPC_LOCK a low RLIMIT_MEMLOCK fails the map with the fix named',
    'setpriv (util-linux) not found: it is what drops CAP_IPC_LOCK in the child',
  );
} else {
  ml('without CAP_IPC_LOCK a low RLIMIT_MEMLOCK fails the map with the fix named', () => {
    const rep = runChild(true);
    console.log(`    child CapEff ${rep.capEff}, RLIMIT_MEMLOCK ${rep.limit}`);
    assert.is((BigInt(`0x${rep.capEff}`) >> 14n) & 1n, 0n, 'CAP_IPC_LOCK dropped');
    for (const o of rep.outcomes) {
      console.log(`    ${o.kind}: ${o.message}`);
      assert.is(o.ok, false);
      assert.is(o.code, 'ENOMEM');
      assert.match(o.message!, 'exceeds the locked-memory limit');
      assert.match(o.message!, 'raise RLIMIT_MEMLOCK');
      assert.match(o.message!, 'CAP_IPC_LOCK');
      assert.match(
        o.message!,
        o.kind === 'iommufd'
          ? 'iommufd charges pinned pages to user 0'
          : 'VFIO Type1 charges pinned pages to this process',
      );
    }
  });
}
ml.run();
