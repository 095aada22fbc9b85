// Foundation lab tests: the ground ../shared/lab/selftest.c covers, from TypeScript, against
// the real lab kernel: iommufd IOAS, cdev bind/attach, region info, the legacy container,
// an e1000e MSI-X interrupt on a VFIO eventfd, KVM irqfd; and the error paths.
import { connect, createServer } from 'node:net';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { SysError } from '../../native/errno.js';
import * as iommufd from '../../native/iommufd.js';
import * as kvm from '../../native/kvm.js';
import { decode } from '../../native/layout.js';
import { C, MAP_FAILED, raw, view } from '../../native/libc.js';
import { PCI } from '../../native/pci-regs.js';
import * as vfio from '../../native/vfio.js';
import { OwnedFd } from '../../src/fd.js';
import { createEventfd, drainEventfd, pollReadable, signalEventfd } from '../../src/irq/eventfd.js';
import { MemfdRegion } from '../../src/memory/memfd-region.js';
import { openCdev, openContainer, openGroup, openIommufd } from '../../src/vfio/open.js';
import { labDevice, nonVfioFunction, requireLab } from '../support/lab.js';

const V = vfio.VFIO_C;
const MSI_LO = 0xfee00000n,
  MSI_HI = 0xfeefffffn;

/** Expect fn to throw a SysError for `call` with errno `code`. */
function throwsSys(fn: () => unknown, call: string, code: string | string[]): SysError {
  try {
    fn();
  } catch (e) {
    assert.instance(e, SysError, String(e));
    const err = e as SysError;
    assert.is(err.call, call);
    assert.ok(
      [code].flat().includes(err.code),
      `expected ${[code].flat().join('|')}, got ${err.message}`,
    );
    assert.ok(err.message.includes(`${call} on `) && err.message.includes(err.code), err.message);
    return err;
  }
  assert.unreachable(`${call} did not fail`);
  throw new Error('unreachable');
}

const readU32 = (t: { fd: number; path: string }, off: bigint): number => {
  const b = Buffer.alloc(4);
  assert.is(raw.pread(t.fd, b, 4, off), 4, `pread at ${off}`);
  return b.readUInt32LE();
};
const writeU32 = (t: { fd: number; path: string }, off: bigint, v: number): void => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  assert.is(raw.pwrite(t.fd, b, 4, off), 4, `pwrite at ${off}`);
};

// ---------------------------------------------------------------- iommufd + cdev
const io = suite('iommufd and cdev (NVMe)');
const s: { iommu?: OwnedFd; dev?: OwnedFd; ioas?: number; devId?: number; ram?: MemfdRegion } = {};

io.before(() => {
  requireLab();
  s.iommu = openIommufd();
  s.ioas = iommufd.ioasAlloc(s.iommu);
  s.dev = openCdev(labDevice('nvme'));
  s.ram = new MemfdRegion('guest-ram', 8 << 20);
});
io.after(() => {
  s.dev?.close();
  s.ram?.close();
  s.iommu?.close();
});

io('bind and attach the NVMe cdev; IOVA ranges show the reserved MSI window', () => {
  s.devId = vfio.deviceBindIommufd(s.dev!, s.iommu!.fd);
  assert.ok(s.devId > 0);
  vfio.deviceAttachIommufdPt(s.dev!, s.ioas!);
  const { ranges } = iommufd.ioasIovaRanges(s.iommu!, s.ioas!);
  console.log(
    `    ranges: ${ranges.map((r) => `0x${r.start.toString(16)}-0x${r.last.toString(16)}`).join(', ')}`,
  );
  assert.ok(ranges.length >= 2);
  assert.ok(
    !ranges.some((r) => r.start <= MSI_HI && r.last >= MSI_LO),
    'a range overlaps the MSI window',
  );
  assert.ok(ranges.some((r) => r.last === 0xfedfffffn));
  assert.ok(ranges.some((r) => r.start === 0xfef00000n));
});

io('IOAS_MAP at a fixed IOVA, MAP_FILE at a kernel-chosen IOVA, UNMAP', () => {
  const t = s.iommu!,
    ioas = s.ioas!;
  assert.is(iommufd.ioasMap(t, ioas, s.ram!.hva, 4n << 20n, 0x100000n), 0x100000n);
  const chosen = iommufd.ioasMapFile(t, ioas, s.ram!.fd.fd, 4n << 20n, 1n << 20n);
  console.log(`    kernel chose IOVA 0x${chosen.toString(16)}`);
  assert.ok(
    chosen + (1n << 20n) <= 0x100000n || chosen >= 0x100000n + (4n << 20n),
    'kernel-chosen IOVA overlaps the fixed mapping',
  );
  assert.is(iommufd.ioasUnmap(t, ioas, chosen, 1n << 20n), 1n << 20n);
  assert.is(iommufd.ioasUnmap(t, ioas, 0x100000n, 4n << 20n), 4n << 20n);
});

io('a map over an already mapped range fails with EEXIST', () => {
  const t = s.iommu!,
    ioas = s.ioas!;
  iommufd.ioasMap(t, ioas, s.ram!.hva, 2n << 20n, 0x200000n);
  throwsSys(
    () => iommufd.ioasMap(t, ioas, s.ram!.hva, 2n << 20n, 0x300000n),
    'IOMMU_IOAS_MAP',
    'EEXIST',
  );
  assert.is(iommufd.ioasUnmap(t, ioas, 0n, 0xffffffffffffffffn), 2n << 20n, 'unmap all');
});

io('a map inside the reserved MSI window is refused', () => {
  throwsSys(
    () => iommufd.ioasMap(s.iommu!, s.ioas!, s.ram!.hva, 1n << 20n, MSI_LO),
    'IOMMU_IOAS_MAP',
    ['EINVAL', 'ENOSPC'],
  );
});

io('region info of every BAR and the config region; NVMe VS reads 0x10400', () => {
  const bars = [0, 1, 2, 3, 4, 5].map((i) => vfio.deviceGetRegionInfo(s.dev!, i));
  const bar0 = bars[0]!;
  assert.is(bar0.size, 0x4000n, 'NVMe BAR0 is 16 KiB');
  assert.ok(
    bar0.flags & V.VFIO_REGION_INFO_FLAG_READ && bar0.flags & V.VFIO_REGION_INFO_FLAG_WRITE,
  );
  for (const [i, b] of bars.entries())
    console.log(
      `    BAR${i}: size 0x${b.size.toString(16)} offset 0x${b.offset.toString(16)} flags 0x${b.flags.toString(16)} caps [${b.caps.map((c) => c.id).join(',')}]`,
    );
  const cfg = vfio.deviceGetRegionInfo(s.dev!, V.VFIO_PCI_CONFIG_REGION_INDEX);
  assert.is(cfg.size, 4096n, 'PCIe config space is 4 KiB');
  assert.is(readU32(s.dev!, cfg.offset) & 0xffff, 0x1b36, 'vendor id through the config region');
  assert.is(readU32(s.dev!, bar0.offset + 0x8n), 0x10400, 'NVMe VS');
  const info = vfio.deviceGetInfo(s.dev!);
  assert.ok(info.flags & V.VFIO_DEVICE_FLAGS_PCI);
  assert.is(info.num_regions, 9);
  const msix = vfio.deviceGetIrqInfo(s.dev!, V.VFIO_PCI_MSIX_IRQ_INDEX);
  assert.is(msix.count, 65);
});

io('a second bind of the same device fails', () => {
  const other = openIommufd();
  const again = openCdev(labDevice('nvme'));
  try {
    const e = throwsSys(() => vfio.deviceBindIommufd(again, other.fd), 'VFIO_DEVICE_BIND_IOMMUFD', [
      'EBUSY',
      'EINVAL',
    ]);
    console.log(`    ${e.message}`);
  } finally {
    again.close();
    other.close();
  }
});

io('DESTROY: an IOAS in use is busy; a free one goes; destroying it twice is ENOENT', () => {
  throwsSys(() => iommufd.destroy(s.iommu!, s.ioas!), 'IOMMU_DESTROY', 'EBUSY');
  const spare = iommufd.ioasAlloc(s.iommu!);
  iommufd.destroy(s.iommu!, spare);
  throwsSys(() => iommufd.destroy(s.iommu!, spare), 'IOMMU_DESTROY', 'ENOENT');
  vfio.deviceDetachIommufdPt(s.dev!);
  iommufd.destroy(s.iommu!, s.ioas!);
});

io('a device not bound to vfio-pci gets a clear error', () => {
  const bdf = nonVfioFunction();
  try {
    openCdev(bdf);
    assert.unreachable();
  } catch (e) {
    const m = (e as Error).message;
    assert.match(m, `${bdf} is not bound to vfio-pci`);
    assert.match(m, 'driver_override');
  }
});

io.run();

// ---------------------------------------------------------------- legacy container + MSI-X
const legacy = suite('legacy group/container and an e1000e MSI-X interrupt');
const l: { container?: OwnedFd; group?: OwnedFd; dev?: OwnedFd; ram?: MemfdRegion; efd?: OwnedFd } =
  {};
legacy.before(() => {
  requireLab();
  l.ram = new MemfdRegion('legacy-ram', 4 << 20);
});
legacy.after(() => {
  l.efd?.close();
  l.dev?.close();
  l.group?.close();
  l.container?.close();
  l.ram?.close();
});

legacy('group, container, Type1v2, IOVA range capability, MAP_DMA/UNMAP_DMA', () => {
  const bdf = labDevice('e1000e');
  l.container = openContainer();
  assert.is(vfio.getApiVersion(l.container), V.VFIO_API_VERSION);
  assert.is(vfio.checkExtension(l.container, V.VFIO_TYPE1v2_IOMMU), 1);
  const { group } = openGroup(bdf);
  l.group = group;
  vfio.groupSetContainer(group, l.container.fd);
  vfio.setIommu(l.container, V.VFIO_TYPE1v2_IOMMU);
  const info = vfio.iommuGetInfo(l.container);
  assert.ok(info.iovaRanges.length >= 2, 'IOVA range capability lists the hole');
  assert.ok(!info.iovaRanges.some((r) => r.start <= MSI_HI && r.end >= MSI_LO));
  vfio.mapDma(l.container, l.ram!.hva, 0x100000n, 4n << 20n);
  l.dev = new OwnedFd(vfio.groupGetDeviceFd(group, bdf), `${group.path} (${bdf})`);
  assert.is(vfio.unmapDma(l.container, 0x100000n, 4n << 20n), 4n << 20n);
  throwsSys(() => vfio.groupGetDeviceFd(group, '0000:ff:1f.7'), 'VFIO_GROUP_GET_DEVICE_FD', [
    'ENODEV',
    'EINVAL',
  ]);
});

legacy('e1000e raises MSI-X vector 0 on a VFIO eventfd', () => {
  const dev = l.dev!;
  const msix = vfio.deviceGetIrqInfo(dev, V.VFIO_PCI_MSIX_IRQ_INDEX);
  assert.is(msix.count, 5);
  l.efd = createEventfd();
  vfio.deviceSetIrqs(
    dev,
    V.VFIO_PCI_MSIX_IRQ_INDEX,
    0,
    1,
    V.VFIO_IRQ_SET_DATA_EVENTFD | V.VFIO_IRQ_SET_ACTION_TRIGGER,
    [l.efd.fd],
  );
  const cfg = vfio.deviceGetRegionInfo(dev, V.VFIO_PCI_CONFIG_REGION_INDEX);
  const cmd = Buffer.alloc(2);
  raw.pread(dev.fd, cmd, 2, cfg.offset + BigInt(PCI.PCI_COMMAND));
  cmd.writeUInt16LE(cmd.readUInt16LE() | PCI.PCI_COMMAND_MEMORY | PCI.PCI_COMMAND_MASTER);
  raw.pwrite(dev.fd, cmd, 2, cfg.offset + BigInt(PCI.PCI_COMMAND));
  const bar0 = vfio.deviceGetRegionInfo(dev, 0).offset;
  writeU32(dev, bar0 + 0xe4n, 1 << 3); // IVAR: RxQ0 -> vector 0, valid
  writeU32(dev, bar0 + 0xd0n, 0xffffffff); // IMS
  writeU32(dev, bar0 + 0xc8n, 0x00100000 | 0x80); // ICS: RxQ0 + RXT0
  assert.equal(pollReadable([l.efd.fd], 3000), [0], 'no interrupt within 3 s');
  assert.ok(drainEventfd(l.efd.fd) > 0n);
  vfio.deviceSetIrqs(
    dev,
    V.VFIO_PCI_MSIX_IRQ_INDEX,
    0,
    0,
    V.VFIO_IRQ_SET_DATA_NONE | V.VFIO_IRQ_SET_ACTION_TRIGGER,
  );
});

legacy.run();

// ---------------------------------------------------------------- KVM
const k = suite('KVM irqchip, MSI route and irqfd');
k('a VM with irqchip, an MSI GSI route and an irqfd that KVM consumes', () => {
  requireLab();
  const sys = OwnedFd.open('/dev/kvm', C.O_RDWR);
  try {
    assert.is(kvm.getApiVersion(sys), kvm.KVM_C.KVM_API_VERSION);
    assert.ok(kvm.checkExtension(sys, kvm.KVM_C.KVM_CAP_IRQFD) > 0);
    const vm = new OwnedFd(kvm.createVm(sys), 'kvm-vm');
    try {
      kvm.createIrqchip(vm);
      kvm.setGsiRouting(vm, [
        {
          gsi: 40,
          type: kvm.KVM_C.KVM_IRQ_ROUTING_MSI,
          u: { msi: { address_lo: 0xfee00000, address_hi: 0, data: 0x30 } },
        },
      ]);
      const efd = createEventfd();
      kvm.irqfd(vm, { fd: efd.fd, gsi: 40 });
      signalEventfd(efd.fd);
      // KVM's irqfd reads the counter when it injects: userspace must find nothing left.
      assert.is(drainEventfd(efd.fd), 0n, 'the irqfd signal was not consumed by KVM');
      kvm.irqfd(vm, { fd: efd.fd, gsi: 40, flags: kvm.KVM_C.KVM_IRQFD_FLAG_DEASSIGN });
      signalEventfd(efd.fd);
      assert.is(drainEventfd(efd.fd), 1n, 'after DEASSIGN the signal stays for userspace');
      efd.close();
    } finally {
      vm.close();
    }
  } finally {
    sys.close();
  }
});
k.run();

// ---------------------------------------------------------------- a minimal VMM
const vmm = suite('KVM: memory region, vCPU and KVM_RUN (a minimal VMM)');
vmm('a real-mode guest writes a port and halts', () => {
  requireLab();
  const sys = OwnedFd.open('/dev/kvm', C.O_RDWR);
  const vm = new OwnedFd(kvm.createVm(sys), 'kvm-vm');
  const ram = new MemfdRegion('vmm-ram', 0x10000);
  try {
    // mov al, 0x42 ; out 0x10, al ; hlt
    ram.bytes.set([0xb0, 0x42, 0xe6, 0x10, 0xf4], 0x1000);
    kvm.setUserMemoryRegion(vm, {
      slot: 0,
      flags: 0,
      guest_phys_addr: 0n,
      memory_size: 0x10000n,
      userspace_addr: ram.hva,
    });
    const vcpu = new OwnedFd(kvm.createVcpu(vm, 0), 'kvm-vcpu0');
    const runSize = kvm.getVcpuMmapSize(sys);
    const runPtr = raw.mmap(null, runSize, C.PROT_READ | C.PROT_WRITE, C.MAP_SHARED, vcpu.fd, 0);
    assert.ok(runPtr !== MAP_FAILED, 'mmap kvm_run');
    const run = Buffer.from(view(runPtr, runSize));
    const sregs = kvm.getSregs(vcpu);
    sregs.cs.base = 0n;
    sregs.cs.selector = 0;
    kvm.setSregs(vcpu, sregs);
    kvm.setRegs(vcpu, { ...kvm.getRegs(vcpu), rip: 0x1000n, rflags: 0x2n });
    kvm.run(vcpu);
    const exit = decode(kvm.kvm_run, run);
    assert.is(exit.exit_reason, kvm.KVM_C.KVM_EXIT_IO, `exit reason ${exit.exit_reason}`);
    const io = exit.exit.io;
    assert.equal(
      [io.direction, io.size, io.port, io.count],
      [kvm.KVM_C.KVM_EXIT_IO_OUT, 1, 0x10, 1],
    );
    assert.is(run[Number(io.data_offset)], 0x42, 'the byte the guest wrote');
    kvm.run(vcpu);
    assert.is(decode(kvm.kvm_run, run).exit_reason, kvm.KVM_C.KVM_EXIT_HLT);
    assert.is(kvm.getRegs(vcpu).rip, 0x1005n, 'stopped after hlt');
    raw.munmap(runPtr, runSize);
    vcpu.close();
  } finally {
    ram.close();
    vm.close();
    sys.close();
  }
});

// lab/run brings lo up: a --metrics-listen 127.0.0.1:<port> inside the lab was unreachable.
const net = suite('the lab itself');
net('loopback: a 127.0.0.1 listener inside the lab takes a connection', async () => {
  const server = createServer((c) => c.end('hi'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  const got = await new Promise<string>((resolve, reject) => {
    let data = '';
    connect(port, '127.0.0.1')
      .on('data', (b) => (data += b))
      .on('end', () => resolve(data))
      .on('error', reject);
  });
  await new Promise((r) => server.close(r));
  assert.is(got, 'hi');
});

vmm.run();
net.run();
