// The CLI's --iommu/--vfio/--memory specs: what they accept, and a clear error for each mistake.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SpecError, parseRuntimeArgs } from '../../src/cli/specs.js';

test('a full command line', () => {
  const { spec, rest } = parseRuntimeArgs([
    '--iommu', 'id=ctx0', '--iommu=id=ctx1,iommufd_fd=3',
    '--vfio', 'host=00:04.0,port=nvme0,iommu=ctx0', '--vfio', 'host=0000:00:05.0,port=nic0',
    '--vfio', 'port=nvme1,iommu=ctx1,fd=4', '--memory', 'size=16M', '--memory', 'size=1G,gpa=0x100000000', '--once',
  ]);
  assert.equal(spec.iommu, [{ id: 'ctx0' }, { id: 'ctx1', iommufdFd: 3 }]);
  assert.equal(spec.vfio, [
    { port: 'nvme0', host: '0000:00:04.0', iommu: 'ctx0' },
    { port: 'nic0', host: '0000:00:05.0' },
    { port: 'nvme1', iommu: 'ctx1', fd: 4 },
  ]);
  assert.equal(spec.memory, [{ size: 16n << 20n, gpa: 0n }, { size: 1n << 30n, gpa: 0x100000000n }]);
  assert.equal(rest, ['--once']);
});

const bad: [string[], RegExp][] = [
  [['--vfio', 'host=00:04.0'], /port=<name> is required/],
  [['--vfio', 'port=a'], /host=<bdf> is required \(or fd=<n> with iommu=<id>\)/],
  [['--vfio', 'host=4.0,port=a'], /host=4.0 is not a PCI address/],
  [['--vfio', 'host=00:04.0,port=a,speed=9'], /unknown key 'speed' \(known: host, port, iommu, fd, group_fd\)/],
  [['--vfio', 'host=00:04.0,port=a,port=b'], /'port' given twice/],
  [['--vfio', 'host=00:04.0,port=a,iommu=nope'], /iommu=nope names no --iommu id \(known: none\)/],
  [['--vfio', 'port=a,fd=5'], /fd= is a VFIO cdev fd, which needs an iommufd context/],
  [['--iommu', 'id=c', '--vfio', 'host=00:04.0,port=a,iommu=c,group_fd=5'], /group_fd= is for the legacy group path/],
  [['--vfio', 'port=a,group_fd=5'], /group_fd= needs host=<bdf>/],
  [['--iommu', 'id=c,iommufd_fd=3', '--vfio', 'host=00:04.0,port=a,group_fd=3'], /group_fd=3 is already used/],
  [['--iommu', 'id=c,iommufd_fd=1'], /iommufd_fd=1 is stdin\/stdout\/stderr/],
  [['--iommu', 'id=c,iommufd_fd=x'], /iommufd_fd=x is not a file descriptor number/],
  [['--iommu', 'id=c', '--iommu', 'id=c'], /--iommu id=c is given twice/],
  [['--iommu', 'iommufd_fd=3'], /id=<name> is required/],
  [['--iommu', 'id=a b'], /not a valid name/],
  [['--vfio', 'host=00:04.0,port=a', '--vfio', 'host=0000:00:04.0,port=b'], /host=0000:00:04.0 is assigned twice/],
  [['--vfio', 'host=00:04.0,port=a', '--vfio', 'host=00:05.0,port=a'], /port=a is used by two devices/],
  [['--memory', 'size=3'], /must be a non-zero multiple of 4 KiB/],
  [['--memory', 'size=1M,gpa=0x800'], /not 4 KiB aligned/],
  [['--memory', 'size=2M', '--memory', 'size=1M,gpa=0x100000'], /overlaps the region at 0x0/],
  [['--vfio'], /--vfio needs a value/],
  [['--vfio', 'host'], /'host' is not key=value/],
];
for (const [argv, re] of bad) {
  test(`rejects ${argv.join(' ')}`, () => {
    assert.throws(() => parseRuntimeArgs(argv), (e: unknown) => e instanceof SpecError && re.test((e as Error).message));
  });
}

test.run();
