// NVMe DMA end to end, on both DMA backends: guest RAM in a memfd mapped by the guest-memory
// table, admin queues and a buffer in guest RAM, the controller programmed and its doorbell rung
// through the device worker's ring, and an Identify Controller whose data lands in guest RAM.
// Also a kernel-chosen IOVA for the buffer, and a removed region that the device can no longer reach.

import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, openSync, writeSync } from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { DeviceHandle } from '../../src/coordinator/device-handle.js';
import { type DmaBackend, memfdRegionSource } from '../../src/dma/backend.js';
import { ContainerBackend } from '../../src/dma/container-backend.js';
import { GuestMemory } from '../../src/dma/guest-memory.js';
import { IommufdContext } from '../../src/dma/iommufd-context.js';
import { MemfdRegion } from '../../src/memory/memfd-region.js';
import { loud } from '../support/hooks.js';
import { labDevice, requireLab } from '../support/lab.js';
import { md5, modelNumber, NvmeAdmin } from '../support/nvme-admin.js';

/** DMAR fault lines in the kernel log (the IOMMU refusing a device access). */
function dmarFaults(): string[] {
  try {
    return execFileSync('dmesg', { encoding: 'utf8' })
      .split('\n')
      .filter((l) => l.includes('DMAR') && l.includes('fault'));
  } catch {
    return [];
  }
}

const MiB = 1n << 20n;
const RAM = { gpa: 0n, size: 16n * MiB };
const SQ = 0x10000n,
  CQ = 0x20000n,
  BUF = 0x30000n;

for (const kind of ['iommufd', 'container'] as const) {
  const s = suite(`NVMe Identify by DMA (${kind})`);
  const st: {
    backend?: DmaBackend & { close(): void };
    ram?: MemfdRegion;
    extra?: MemfdRegion;
    chosen?: MemfdRegion;
    handle?: DeviceHandle;
    detach?: () => void;
    table?: GuestMemory;
    nvme?: NvmeAdmin;
  } = {};

  s.before(
    loud('before', async () => {
      requireLab();
      st.ram = new MemfdRegion(`${kind}-guest-ram`, Number(RAM.size));
      st.backend =
        kind === 'iommufd'
          ? IommufdContext.open(`nvme-${kind}`)
          : ContainerBackend.open(`nvme-${kind}`);
      const dev = st.backend.attachPciDevice(labDevice('nvme'));
      st.detach = () => dev.detach();
      st.table = new GuestMemory();
      st.table.addBackend(st.backend);
      st.table.addRegion({
        name: 'ram',
        gpa: RAM.gpa,
        size: RAM.size,
        memory: memfdRegionSource(st.ram),
      });
      st.handle = await DeviceHandle.start({ name: `nvme-${kind}`, device: dev.device });
      st.nvme = new NvmeAdmin(st.handle.client(), {
        ram: st.ram.bytes,
        ramGpa: RAM.gpa,
        sqGpa: SQ,
        cqGpa: CQ,
      });
      st.nvme.enable();
    }),
  );
  s.after(
    loud('after', async () => {
      await st.handle?.shutdown();
      st.detach?.();
      st.backend?.close();
      for (const m of [st.ram, st.extra, st.chosen]) m?.close();
    }),
  );

  s('Identify Controller: the data lands in guest RAM', () => {
    const page = st.ram!.bytes.subarray(Number(BUF), Number(BUF) + 4096);
    page.fill(0);
    assert.is(st.nvme!.identifyController(BUF), 0, 'completion status');
    console.log(
      `    ${kind}: model "${modelNumber(page)}", VID 0x${Buffer.from(page).readUInt16LE(0).toString(16)}`,
    );
    assert.is(modelNumber(page), 'QEMU NVMe Ctrl');
    assert.ok(st.table!.isMapped(BUF, 4096n));
  });

  s('Identify into a buffer at a kernel-chosen IOVA', () => {
    st.chosen = new MemfdRegion(`${kind}-chosen`, 4096);
    const iova = st.backend!.mapAnywhere(4096n, memfdRegionSource(st.chosen));
    console.log(`    ${kind}: buffer at IOVA 0x${iova.toString(16)}`);
    assert.ok(iova >= RAM.size, 'outside guest RAM');
    assert.is(st.nvme!.identifyController(iova), 0);
    assert.is(modelNumber(st.chosen.bytes), 'QEMU NVMe Ctrl');
    st.backend!.unmap(iova, 4096n);
  });

  s(
    '4 MiB of blocks the host wrote into the backing file are read by DMA (an I/O queue pair)',
    () => {
      const page = st.ram!.bytes.subarray(Number(BUF), Number(BUF) + 4096);
      assert.is(st.nvme!.identifyController(BUF), 0);
      const serial = Buffer.from(page.subarray(4, 24)).toString('latin1').trim(); // lab/run: serial=lab<n>, file nvme<n>.img
      const file = `/lab/nvme${serial.replace(/^lab/, '')}.img`;
      if (!existsSync(file)) {
        console.log(`    ${kind}: skipped: no backing file ${file} (not under lab/run)`);
        return;
      }
      const data = randomBytes(4 << 20),
        at = 1 << 20;
      const fd = openSync(file, 'r+');
      try {
        writeSync(fd, data, 0, data.length, at);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      const buf = 0x400000n;
      st.ram!.bytes.fill(0, Number(buf), Number(buf) + data.length);
      st.nvme!.readBlocks({
        nsid: 1,
        offset: BigInt(at),
        bytes: data.length,
        bufGpa: buf,
        cqGpa: 0x40000n,
        sqGpa: 0x50000n,
        prpGpa: 0x60000n,
      });
      const got = st.ram!.bytes.subarray(Number(buf), Number(buf) + data.length);
      console.log(
        `    ${kind}: ${file} (serial ${serial}): 4 MiB read through an I/O queue, md5 ${md5(got)} (written ${md5(data)})`,
      );
      assert.ok(Buffer.from(got).equals(data), 'the blocks read by DMA are the bytes written');
    },
  );

  s('memory added while the device runs is reachable; once removed, DMA to it fails', () => {
    st.extra = new MemfdRegion(`${kind}-extra`, 1 << 20);
    const gpa = 0x2000000n;
    const region = st.table!.addRegion({
      name: 'extra',
      gpa,
      size: MiB,
      memory: memfdRegionSource(st.extra),
    });
    assert.is(st.nvme!.identifyController(gpa), 0);
    assert.is(modelNumber(st.extra.bytes), 'QEMU NVMe Ctrl');
    st.extra.bytes.fill(0, 0, 4096);
    st.table!.removeRegion(region);
    assert.not.ok(st.table!.isMapped(gpa, 4096n), 'the table says unmapped');
    // QEMU's NVMe model completes the command with status 0 even when its DMA write fails, so the
    // proof is the memory itself: the buffer is still mapped in this process, and the device
    // could no longer reach it through the IOMMU.
    const status = st.nvme!.identifyController(gpa);
    const fault = dmarFaults().findLast((l) => l.includes(`fault addr 0x${gpa.toString(16)}`));
    console.log(
      `    ${kind}: Identify into the removed region: status 0x${status.toString(16)}; kernel: ${fault ?? '(no DMAR fault line)'}`,
    );
    assert.is(
      st.extra.bytes.subarray(0, 4096).every((b) => b === 0),
      true,
      'nothing landed in the removed memory',
    );
    assert.is(st.nvme!.identifyController(BUF), 0, 'the controller still works for mapped memory');
  });

  s.run();
}
