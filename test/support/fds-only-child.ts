// Child process for the pre-opened-fd test: given only inherited fd numbers (3: /dev/iommu,
// 4: an NVMe VFIO cdev) and no sysfs, it starts the runtime and runs NVMe Identify by DMA.
import { Runtime } from '../../src/coordinator/runtime.js';
import { modelNumber, NvmeAdmin } from './nvme-admin.js';

const rt = await Runtime.start({
  iommu: [{ id: 'ctx', iommufdFd: 3 }],
  vfio: [{ port: 'nvme0', iommu: 'ctx', fd: 4 }],
  memory: [{ size: 16n << 20n, gpa: 0n }],
});
try {
  const ram = rt.ram[0]!.bytes;
  const nvme = new NvmeAdmin(rt.device('nvme0').client(), {
    ram,
    ramGpa: 0n,
    sqGpa: 0x10000n,
    cqGpa: 0x20000n,
  });
  nvme.enable();
  const status = nvme.identifyController(0x30000n);
  console.log(
    JSON.stringify({
      status,
      model: modelNumber(ram.subarray(0x30000, 0x31000)),
      path: rt.describe().devices[0]!.description.path,
    }),
  );
} finally {
  await rt.shutdown();
}
