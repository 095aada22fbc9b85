// Test worker: throws each error kind through comlink on request, so errors.test.ts can check
// what arrives on the other side of a real worker_threads boundary.
import { parentPort } from 'node:worker_threads';
import { errnoNumber, SysError } from '../../native/errno.js';
import { Comlink, installErrorTransfer, nodeEndpoint } from '../../src/control/comlink-node.js';
import {
  ApiError,
  BootError,
  ConfigError,
  ConflictError,
  DeviceFailedError,
  GsiRouterError,
  HostSetupError,
  InvalidSpecError,
  IovaHoleError,
  KernelError,
  NestingSetupError,
  NotFoundError,
  OutsideAccessError,
  PartialInvalidationError,
  RingClosedError,
  RingError,
  WorkerExitedError,
} from '../../src/errors.js';

const sys = (errno: string): SysError =>
  new SysError('VFIO_DEVICE_BIND_IOMMUFD', '/dev/vfio/devices/vfio0', errnoNumber(errno));

/** One error of each kind, by the name the test asks for. */
export const samples: Record<string, () => Error> = {
  NotFoundError: () => new NotFoundError("no device on port 'x'", 'port', 'x'),
  ConflictError: () => new ConflictError('port x already has a device', 'port', 'x'),
  InvalidSpecError: () =>
    new InvalidSpecError('vfio[0]: bdf=../etc is not a PCI address', 'vfio[0].bdf'),
  HostSetupError: () => new HostSetupError('0000:00:04.0 is not bound to vfio-pci', '0000:00:04.0'),
  KernelError: () =>
    new KernelError(sys('EINVAL'), { bdf: '0000:00:04.0', port: 'nvme0', hint: 'stop it' }),
  WorkerExitedError: () => new WorkerExitedError('device worker nvme0 exited (code 1)', 'nvme0', 1),
  RingClosedError: () => new RingClosedError('device ring is closed (device shut down)'),
  DeviceFailedError: () =>
    new DeviceFailedError('device nvme0 has failed: 6 restarts in 60 s', 'nvme0', 'restarts'),
  PartialInvalidationError: () =>
    new PartialInvalidationError(
      new SysError('IOMMU_HWPT_INVALIDATE', '/dev/iommu', errnoNumber('EINVAL')),
      1,
      2,
      'applied 1 of 2 entries',
    ),
  NestingSetupError: () =>
    new NestingSetupError(
      'IOMMU_VIOMMU_ALLOC on /dev/iommu: EINVAL',
      'vIOMMU',
      [{ what: 'nesting parent HWPT', id: 7 }],
      new SysError('IOMMU_VIOMMU_ALLOC', '/dev/iommu', errnoNumber('EINVAL')),
    ),
  RingError: () =>
    new RingError(
      'BAR_READ BAR1 offset 0x0 size 4: BAD_BAR (no such BAR)',
      2,
      'BAD_BAR',
      'BAR_READ BAR1 offset 0x0 size 4',
    ),
  GsiRouterError: () =>
    new GsiRouterError(
      'KVM_SET_GSI_ROUTING with 42 entries refused: KVM_SET_GSI_ROUTING on vm: EINVAL',
      new SysError('KVM_SET_GSI_ROUTING', 'vm', errnoNumber('EINVAL')),
    ),
  BootError: () => new BootError('kernel /boot/x is not a bzImage: no HdrS magic'),
  ApiError: () => new ApiError(405, '/api/v1/vm.info takes GET, not PUT'),
  ConfigError: () => new ConfigError('only type 0 (endpoint) headers can be assigned, not bridges'),
  IovaHoleError: () =>
    new IovaHoleError(
      'guest range 0xfee00000-0xfeefffff lies entirely in the reserved IOVA hole 0xfee00000-0xfeefffff',
      { iova: 0xfee00000n, length: 0x100000n },
      { start: 0xfee00000n, last: 0xfeefffffn },
      [{ start: 0n, last: 0xfedfffffn }],
    ),
  OutsideAccessError: () =>
    new OutsideAccessError("config access 0x1000/4 outside vfio0's config region", 0x1000, 4),
  SysError: () => sys('EBUSY'),
};

export interface Thrower {
  throwKind(kind: string): never;
}

if (parentPort) {
  installErrorTransfer();
  Comlink.expose(
    {
      throwKind: (kind: string) => {
        throw samples[kind]!();
      },
    },
    nodeEndpoint(parentPort),
  );
}
