// Peer-to-peer DMA to a device BAR, on both DMA backends: the runtime maps the ivshmem's BAR2
// (1 MiB of RAM) for peers at an IOVA (Runtime.mapBarForPeers: a dma-buf of the BAR in the
// iommufd IOAS, the BAR's mmap by host address in the legacy container), the edu's DMA engine
// copies a pattern from guest RAM into the BAR through the IOMMU, and the pattern is read back
// through the ivshmem's ring. Memory decoding off and on revokes the dma-buf (iommufd) but not
// Type1's mapping (container); a re-map reaches the BAR again. After unmapBarForPeers a DMA to
// that IOVA no longer lands, and no IOMMU mapping, dma-buf fd or BAR mmap is left. On a kernel
// without CONFIG_VFIO_PCI_DMABUF the iommufd map is reported as failed (ENOTTY), not thrown.
// Needs lab/run --devices "... edu ivshmem".
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Runtime } from '../../src/coordinator/runtime.js';
import { memfdRegionSource } from '../../src/dma/backend.js';
import type { PeerAreaResult } from '../../src/dma/peer-bars.js';
import { MemfdRegion } from '../../src/memory/memfd-region.js';
import type { RingClient } from '../../src/ring/client.js';
import { loud } from '../support/hooks.js';
import { labDevices, requireLab } from '../support/lab.js';
import { skipBecause } from '../support/skip.js';

/** The edu's DMA engine (QEMU docs/specs/edu.txt): its addresses are masked to 28 bits. */
const EDU = { SRC: 0x80, DST: 0x88, COUNT: 0x90, CMD: 0x98, BUF: 0x40000 } as const;
const CMD_START = 1,
  CMD_TO_RAM = 2; // direction: from the edu's buffer out to the DMA address
const STAGING = 0x100000n; // a guest-RAM page the pattern is staged in
const BAR_IOVA = 0x8000000n; // where the BAR is mapped for peers (< 256 MiB: the edu's mask)
const SHM_BAR = 2,
  AT = 0x3000, // where in the BAR the edu writes
  // Less than the edu's 4 KiB buffer: QEMU 7.2's range check is off by one and aborts QEMU on
  // a transfer that ends at the buffer's end ("DMA range 0x40000-0x40fff out of bounds").
  LEN = 2048;

/** DMAR fault lines for a write to `iova`: the IOMMU refused the device (dmesg). */
const faultsAt = (iova: bigint): number => {
  try {
    const want = `fault addr 0x${iova.toString(16)} `;
    return execFileSync('dmesg', { encoding: 'utf8' })
      .split('\n')
      .filter((l) => l.includes('DMAR') && l.includes(want)).length;
  } catch {
    return 0;
  }
};

const dmaBufFds = (): string[] =>
  readdirSync('/proc/self/fd').filter((f) => {
    try {
      return readlinkSync(`/proc/self/fd/${f}`).includes('dmabuf');
    } catch {
      return false;
    }
  });
const vfioMaps = (): number =>
  readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => l.includes('vfio')).length;

/** One edu DMA of LEN bytes; resolves when the engine says it is done (100 ms of QEMU time). */
async function eduDma(c: RingClient, src: bigint, dst: bigint, cmd: number): Promise<void> {
  c.barWrite(0, EDU.SRC, 4, Number(src));
  c.barWrite(0, EDU.SRC + 4, 4, 0);
  c.barWrite(0, EDU.DST, 4, Number(dst));
  c.barWrite(0, EDU.DST + 4, 4, 0);
  c.barWrite(0, EDU.COUNT, 4, LEN);
  c.barWrite(0, EDU.CMD, 4, cmd | CMD_START);
  const until = Date.now() + 10_000;
  while (c.barRead(0, EDU.CMD, 4) & CMD_START) {
    if (Date.now() > until) throw new Error('the edu DMA did not finish in 10 s');
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Whether the running kernel can export a BAR as a dma-buf (CONFIG_VFIO_PCI_DMABUF). */
const DMA_BUF_KERNEL = (() => {
  try {
    return / vfio_pci_core_feature_dma_buf$/m.test(readFileSync('/proc/kallsyms', 'utf8'));
  } catch {
    return false;
  }
})();

const show = (kind: string, results: readonly PeerAreaResult[]): void => {
  for (const r of results)
    console.log(
      `    ${kind}: ${r.backend} via ${r.via} at ${r.iova} (+0x${r.size.toString(16)}): ${r.ok ? 'mapped' : `${r.errno}: ${r.reason}`}`,
    );
};

const pattern = (seed: number): Uint8Array =>
  Uint8Array.from({ length: LEN }, (_, i) => (i * 7 + seed) & 0xff);

for (const kind of ['iommufd', 'container'] as const) {
  const s = suite(`P2P DMA into a BAR (${kind})`);
  const st: { rt?: Runtime; ram?: MemfdRegion } = {};
  const ready = labDevices('edu').length > 0 && labDevices('ivshmem').length > 0;

  s.before(
    loud('before', async () => {
      requireLab();
      if (!ready) return;
      const iommu = kind === 'iommufd' ? { iommu: 'p2p' } : {};
      st.rt = await Runtime.start({
        iommu: kind === 'iommufd' ? [{ id: 'p2p' }] : [],
        vfio: [
          { port: 'edu', bdf: labDevices('edu')[0]!, ...iommu },
          { port: 'shm', bdf: labDevices('ivshmem')[0]!, ...iommu },
        ],
        memory: [],
      });
      st.ram = new MemfdRegion(`p2p-${kind}`, 4096);
      st.rt.addMemory({
        name: 'staging',
        gpa: STAGING,
        size: 4096n,
        memory: memfdRegionSource(st.ram),
      });
      for (const port of ['edu', 'shm']) {
        const c = st.rt.device(port).client();
        c.cfgWrite(0x4, 2, c.cfgRead(0x4, 2) | 0x6); // memory space + bus master
      }
    }),
  );
  s.after(
    loud('after', async () => {
      await st.rt?.shutdown();
      st.ram?.close();
    }),
  );

  const NAME =
    'the edu DMAs into the ivshmem BAR through the IOMMU; after decoding off/on, a re-map and an unmap';
  if (!ready) {
    skipBecause(
      s,
      NAME,
      'no edu and ivshmem bound to vfio-pci: lab/run --devices "... edu ivshmem"',
    );
  } else if (kind === 'iommufd' && !DMA_BUF_KERNEL) {
    s('without VFIO_DEVICE_FEATURE_DMA_BUF the map is reported (ENOTTY), not thrown', () => {
      const results = st.rt!.mapBarForPeers('shm', SHM_BAR, BAR_IOVA);
      show(kind, results);
      assert.equal(
        results.map((r) => [r.via, r.ok, r.errno]),
        [['dma-buf', false, 'ENOTTY']],
      );
      assert.match(results[0]!.reason!, /CONFIG_VFIO_PCI_DMABUF/);
      assert.is(st.rt!.unmapBarForPeers('shm', SHM_BAR), 0n, 'nothing was mapped');
      assert.is(dmaBufFds().length, 0, 'no dma-buf fd');
    });
    skipBecause(
      s,
      NAME,
      'this kernel has no VFIO_DEVICE_FEATURE_DMA_BUF (CONFIG_VFIO_PCI_DMABUF, which needs CONFIG_PCI_P2PDMA; vfio_pci_core_feature_dma_buf is not in /proc/kallsyms)',
    );
  } else {
    s(NAME, async () => {
      const rt = st.rt!,
        edu = rt.device('edu').client(),
        shm = rt.device('shm').client();
      const fdsBefore = dmaBufFds().length,
        mapsBefore = vfioMaps();
      const bar = rt.device('shm').description.bars.find((b) => b.index === SHM_BAR)!;
      assert.equal(bar.mappable, [[0, 1 << 20]], 'the whole 1 MiB BAR2 is mappable');
      const got = new Uint8Array(LEN);
      shm.barWriteBulk(SHM_BAR, AT, new Uint8Array(LEN));
      /** The edu copies pattern(seed) from guest RAM into the BAR's IOVA; returns what the BAR holds then. */
      const push = async (seed: number): Promise<number> => {
        st.ram!.bytes.set(pattern(seed));
        await eduDma(edu, STAGING, BigInt(EDU.BUF), 0);
        await eduDma(edu, BigInt(EDU.BUF), BAR_IOVA + BigInt(AT), CMD_TO_RAM);
        shm.barReadBulk(SHM_BAR, AT, got);
        for (const k of [1, 2, 3, 4, 5]) if (Buffer.from(got).equals(pattern(k))) return k;
        return 0;
      };
      const map = (): void => {
        const results = rt.mapBarForPeers('shm', SHM_BAR, BAR_IOVA);
        show(kind, results);
        assert.equal(
          results.map((r) => [r.via, r.ok]),
          [[kind === 'iommufd' ? 'dma-buf' : 'host-address', true]],
          results[0]?.reason,
        );
      };

      map();
      assert.equal(
        rt.describe().peerBars.map((p) => [p.port, p.bar, p.iova]),
        [['shm', SHM_BAR, `0x${BAR_IOVA.toString(16)}`]],
      );
      assert.is(await push(1), 1, 'the P2P write landed in the BAR');

      // Memory decoding off and on again: VFIO revokes a dma-buf (iommufd drops its mapping for
      // good); Type1 keeps the PFN mapping, so the legacy mapping still reaches the BAR.
      const cmd = shm.cfgRead(0x4, 2);
      shm.cfgWrite(0x4, 2, cmd & ~0x2);
      shm.cfgWrite(0x4, 2, cmd);
      const afterToggle = await push(2);
      console.log(
        `    ${kind}: after memory decoding off/on the old mapping ${afterToggle === 2 ? 'still reaches the BAR' : 'no longer reaches the BAR (revoked)'}`,
      );
      assert.is(afterToggle, kind === 'iommufd' ? 1 : 2);

      // What the VMM does on decoding off/on: unmap, map again; the new mapping reaches it.
      rt.unmapBarForPeers('shm', SHM_BAR);
      map();
      assert.is(await push(3), 3, 'the re-mapped BAR takes the P2P write');

      // Unmapped: the DMA faults in the IOMMU and the BAR keeps pattern 3.
      assert.is(rt.unmapBarForPeers('shm', SHM_BAR), 1n << 20n, 'the whole BAR unmapped');
      const faults = faultsAt(BAR_IOVA + BigInt(AT));
      assert.is(await push(4), 3, 'no DMA landed once unmapped');
      const refused = faultsAt(BAR_IOVA + BigInt(AT)) - faults;
      console.log(`    ${kind}: after unmap the IOMMU refused the write (${refused} DMAR fault)`);
      assert.ok(refused > 0, 'the IOMMU reported the refused write');

      const backend = rt.devices.get('shm')!.backend;
      assert.equal(
        backend.mappings().filter((m) => m.iova >= BAR_IOVA && m.iova < BAR_IOVA + (1n << 20n)),
        [],
        'no IOMMU mapping of the BAR left',
      );
      assert.equal(rt.describe().peerBars, []);
      assert.is(dmaBufFds().length, fdsBefore, 'no dma-buf fd left');
      assert.is(vfioMaps(), mapsBefore, 'no mmap of the BAR left');
    });
  }
  s.run();
}
