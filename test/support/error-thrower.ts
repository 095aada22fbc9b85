// Test worker: throws each error kind through comlink on request, so errors.test.ts can check
// what arrives on the other side of a real worker_threads boundary.
import { parentPort } from 'node:worker_threads';
import { errnoNumber, SysError } from '../../native/errno.js';
import { Comlink, installErrorTransfer, nodeEndpoint } from '../../src/control/comlink-node.js';
import {
  ConflictError,
  DeviceFailedError,
  HostSetupError,
  InvalidSpecError,
  KernelError,
  NestingSetupError,
  NotFoundError,
  PartialInvalidationError,
  RingClosedError,
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
