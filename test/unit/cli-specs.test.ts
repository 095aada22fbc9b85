// The CLI's --iommu/--vfio/--memory specs and the runtime's spec front door (plain objects, as
// JSON gives them): what they accept, and a clear error, naming the field, for each mistake.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseRuntimeArgs } from '../../src/cli/specs.js';
import { normalizeRuntimeSpec, type RuntimeSpecInput } from '../../src/coordinator/spec.js';
import { InvalidSpecError, NotFoundError } from '../../src/errors.js';
import { cdevOf, driverOf, iommuGroupOf, sysfsDir } from '../../src/platform/pci-sysfs.js';

test('a full command line', () => {
  const { spec, rest } = parseRuntimeArgs([
    '--iommu',
    'id=ctx0',
    '--iommu=id=ctx1,iommufd_fd=3',
    '--vfio',
    'host=00:04.0,port=nvme0,iommu=ctx0',
    '--vfio',
    'host=0000:00:05.0,port=nic0',
    '--vfio',
    'port=nvme1,iommu=ctx1,fd=4',
    '--memory',
    'size=16M',
    '--memory',
    'size=1G,gpa=0x100000000',
    '--once',
  ]);
  assert.equal(spec.iommu, [{ id: 'ctx0' }, { id: 'ctx1', iommufdFd: 3 }]);
  assert.equal(spec.vfio, [
    { port: 'nvme0', bdf: '0000:00:04.0', iommu: 'ctx0' },
    { port: 'nic0', bdf: '0000:00:05.0' },
    { port: 'nvme1', iommu: 'ctx1', fd: 4 },
  ]);
  assert.equal(spec.memory, [
    { size: 16n << 20n, gpa: 0n },
    { size: 1n << 30n, gpa: 0x100000000n },
  ]);
  assert.equal(rest, ['--once']);
});

const bad: [string[], RegExp][] = [
  [['--vfio', 'host=00:04.0'], /port=<name> is required/],
  [['--vfio', 'port=a'], /host=<bdf> is required \(or fd=<n> with iommu=<id>\)/],
  [['--vfio', 'host=4.0,port=a'], /host=4.0 is not a PCI address/],
  [
    ['--vfio', 'host=00:04.0,port=a,speed=9'],
    /unknown key 'speed' \(known: host, port, iommu, fd, group_fd\)/,
  ],
  [['--vfio', 'host=00:04.0,port=a,port=b'], /'port' given twice/],
  [['--vfio', 'host=00:04.0,port=a,iommu=nope'], /iommu=nope names no --iommu id \(known: none\)/],
  [['--vfio', 'port=a,fd=5'], /fd= is a VFIO cdev fd, which needs an iommufd context/],
  [
    ['--iommu', 'id=c', '--vfio', 'host=00:04.0,port=a,iommu=c,group_fd=5'],
    /group_fd= is for the legacy group path/,
  ],
  [['--vfio', 'port=a,group_fd=5'], /group_fd= needs host=<bdf>/],
  [
    ['--iommu', 'id=c,iommufd_fd=3', '--vfio', 'host=00:04.0,port=a,group_fd=3'],
    /group_fd=3 is already used/,
  ],
  [['--iommu', 'id=c,iommufd_fd=1'], /iommufd_fd=1 is stdin\/stdout\/stderr/],
  [['--iommu', 'id=c,iommufd_fd=x'], /iommufd_fd=x is not a file descriptor number/],
  [['--iommu', 'id=c', '--iommu', 'id=c'], /--iommu id=c is given twice/],
  [['--iommu', 'iommufd_fd=3'], /id=<name> is required/],
  [['--iommu', 'id=a b'], /not a valid name/],
  [
    ['--vfio', 'host=00:04.0,port=a', '--vfio', 'host=0000:00:04.0,port=b'],
    /host=0000:00:04.0 is assigned twice/,
  ],
  [
    ['--vfio', 'host=00:04.0,port=a', '--vfio', 'host=00:05.0,port=a'],
    /port=a is used by two devices/,
  ],
  [['--memory', 'size=3'], /must be a non-zero multiple of 4 KiB/],
  [['--memory', 'size=1M,gpa=0x800'], /not 4 KiB aligned/],
  [['--memory', 'size=2M', '--memory', 'size=1M,gpa=0x100000'], /overlaps the region at 0x0/],
  [['--vfio'], /--vfio needs a value/],
  [['--vfio', 'host'], /'host' is not key=value/],
];
for (const [argv, re] of bad) {
  test(`rejects ${argv.join(' ')}`, () => {
    assert.throws(
      () => parseRuntimeArgs(argv),
      (e: unknown) => e instanceof InvalidSpecError && re.test((e as Error).message),
    );
  });
}

// ---------------------------------------------------------------- the front door (plain objects)

test('a plain object (as JSON gives it) normalizes to the same spec the CLI makes', () => {
  const fromArgv = parseRuntimeArgs([
    '--iommu',
    'id=ctx0,iommufd_fd=3',
    '--vfio',
    'host=00:04.0,port=nvme0,iommu=ctx0',
    '--vfio',
    'port=nvme1,iommu=ctx0,fd=4',
    '--memory',
    'size=16M',
    '--memory',
    'size=1G,gpa=0x100000000',
  ]).spec;
  const fromJson = normalizeRuntimeSpec(
    JSON.parse(
      JSON.stringify({
        iommu: [{ id: 'ctx0', iommufdFd: 3 }],
        vfio: [
          { bdf: '00:04.0', port: 'nvme0', iommu: 'ctx0' },
          { port: 'nvme1', iommu: 'ctx0', fd: '4' },
        ],
        memory: [{ size: '16M' }, { size: 1 << 30, gpa: '0x100000000' }],
      }),
    ) as RuntimeSpecInput,
  );
  assert.equal(fromJson, fromArgv);
  assert.ok(
    Object.isFrozen(fromJson) && Object.isFrozen(fromJson.vfio[0]),
    'checked once, then frozen',
  );
  assert.is(normalizeRuntimeSpec(fromJson), fromJson, 'a normalized spec passes again as it is');
  assert.equal(normalizeRuntimeSpec({}), { iommu: [], vfio: [], memory: [] });
});

const badObjects: [unknown, RegExp, string | undefined][] = [
  [
    { vfio: [{ port: 'a', bdf: '../../../etc' }] },
    /^vfio\[0\]: bdf=\.\.\/\.\.\/\.\.\/etc is not a PCI address/,
    'vfio[0].bdf',
  ],
  [{ vfio: [{ port: 'a', bdf: '0000:00:04.0/../../x' }] }, /is not a PCI address/, 'vfio[0].bdf'],
  [
    { vfio: [{ port: '../x', bdf: '00:04.0' }] },
    /port=\.\.\/x is not a valid name/,
    'vfio[0].port',
  ],
  [{ vfio: [{ port: 'a', bdf: 7 }] }, /bdf=7 is not a PCI address/, 'vfio[0].bdf'],
  [{ vfio: [{ port: 'a', bdf: '00:04.0', speed: 9 }] }, /unknown key 'speed'/, 'vfio[0].speed'],
  [
    { vfio: [{ port: 'a', iommu: 'c', fd: 2 }], iommu: [{ id: 'c' }] },
    /fd=2 is stdin\/stdout\/stderr/,
    'vfio[0].fd',
  ],
  [
    { vfio: [{ port: 'a', iommu: 'c', fd: 3.5 }], iommu: [{ id: 'c' }] },
    /fd=3.5 is not a file descriptor number/,
    'vfio[0].fd',
  ],
  [
    { vfio: [{ port: 'a', bdf: '00:04.0', groupFd: 5, iommu: 'c' }], iommu: [{ id: 'c' }] },
    /groupFd= is for the legacy group path/,
    'vfio[0].groupFd',
  ],
  [
    { vfio: [{ port: 'a', bdf: '00:04.0', iommu: 'nope' }] },
    /iommu=nope names no iommu id \(known: none\)/,
    'vfio[0].iommu',
  ],
  [
    {
      vfio: [
        { port: 'a', bdf: '00:04.0' },
        { port: 'a', bdf: '00:05.0' },
      ],
    },
    /port=a is used by two devices/,
    'vfio[1].port',
  ],
  [
    {
      memory: [
        { size: '8K', gpa: 0 },
        { size: 4096, gpa: 4096 },
      ],
    },
    /overlaps the region at 0x0/,
    'memory[1].gpa',
  ],
  [{ memory: [{ size: -4096 }] }, /is not a size/, 'memory[0].size'],
  // An object without a prototype: String() of it threw a TypeError, not the spec error (fuzz).
  [{ memory: [{ size: Object.create(null) }] }, /size=\{\} is not a size/, 'memory[0].size'],
  [
    { memory: [{ size: '1M', gpa: '0xffffffffffff0000' }] },
    /passes the end of the 64-bit address space/,
    'memory[0].gpa',
  ],
  [{ iommu: 'ctx0' }, /iommu must be an array/, 'iommu'],
  [{ devices: [] }, /unknown key 'devices' in a runtime spec/, 'devices'],
  [null, /must be an object/, undefined],
];
for (const [input, re, field] of badObjects) {
  test(`rejects the object ${JSON.stringify(input)}`, () => {
    assert.throws(
      () => normalizeRuntimeSpec(input as RuntimeSpecInput),
      (e: unknown) =>
        e instanceof InvalidSpecError &&
        e.code === 'VFR_ERR_INVALID_SPEC' &&
        re.test(e.message) &&
        e.field === field,
    );
  });
}

test('CLI messages keep the option text and the CLI key names; errors carry the JSON path', () => {
  try {
    parseRuntimeArgs(['--vfio', 'port=a,host=00:04.0,group_fd=2']);
    assert.unreachable();
  } catch (e) {
    assert.instance(e, InvalidSpecError);
    assert.is(
      (e as Error).message,
      '--vfio port=a,host=00:04.0,group_fd=2: group_fd=2 is stdin/stdout/stderr, not an inherited VFIO or iommufd fd',
    );
    assert.is((e as InvalidSpecError).field, 'vfio[0].groupFd');
  }
});

test('sysfs lookups take checked PCI addresses only', () => {
  for (const fn of [driverOf, iommuGroupOf, cdevOf, sysfsDir]) {
    assert.throws(
      () => fn('../../../etc'),
      (e: unknown) =>
        e instanceof InvalidSpecError &&
        /'..\/..\/..\/etc' is not a PCI address/.test((e as Error).message),
    );
  }
  assert.throws(
    () => sysfsDir('ffff:ff:1f.7'),
    (e: unknown) =>
      e instanceof NotFoundError && e.resource === 'pci-function' && e.id === 'ffff:ff:1f.7',
  );
});

test.run();
