// The runtime as the CLI and a hosting VMM start it: named iommufd contexts shared by devices,
// the legacy path beside them, pre-opened fds only, and the errors a user meets.

import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { C, raw } from '../../native/libc.js';
import type { RuntimeDescription } from '../../src/coordinator/runtime.js';
import { cdevOf, iommuGroupOf } from '../../src/platform/pci-sysfs.js';
import { labDevice, labDevices, nonVfioFunction, requireLab } from '../support/lab.js';
import { skipBecause } from '../support/skip.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const cli = (...args: string[]) =>
  spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 300_000 });

const t = suite('runtime: CLI and pre-opened fds');
t.before(() => requireLab());

const nvmes = labDevices('nvme');
if (nvmes.length < 2 && typeof process.env.CI === 'undefined') {
  skipBecause(
    t,
    'two NVMe on one --iommu id share one IOAS; the e1000e runs on the legacy path beside them',
    `this guest has ${nvmes.length} NVMe; run the lab with --devices "nvme nvme e1000e edu"`,
  );
} else {
  t(
    'two NVMe on one --iommu id share one IOAS; the e1000e runs on the legacy path beside them',
    () => {
      const [a, b] = nvmes;
      const r = cli(
        'run',
        '--iommu',
        'id=ctx0',
        '--vfio',
        `host=${a},port=nvme0,iommu=ctx0`,
        '--vfio',
        `host=${b},port=nvme1,iommu=ctx0`,
        '--vfio',
        `host=${labDevice('e1000e')},port=nic0`,
        '--memory',
        'size=16M',
        '--once',
        '--json',
      );
      assert.is(r.status, 0, r.stderr);
      const d = JSON.parse(r.stdout) as RuntimeDescription;
      const [n0, n1, nic] = d.devices;
      console.log(
        `    nvme0 IOAS ${n0!.ioasId}, nvme1 IOAS ${n1!.ioasId}, nic0 on ${nic!.backend}; contexts: ${JSON.stringify(d.contexts.map((c) => [c.id, c.ioasId, c.devices]))}`,
      );
      assert.is(d.contexts.length, 1);
      assert.is(d.contexts[0]!.devices, 2);
      assert.ok(n0!.ioasId !== undefined && n0!.ioasId === n1!.ioasId, 'one IOAS for both');
      assert.is(nic!.backend, 'container:vfio-container');
      assert.equal(d.container?.devices, [labDevice('e1000e')]);
      assert.equal(d.memory, [{ name: 'ram0', gpa: '0x0', size: '0x1000000' }]);
    },
  );
}

t('started with fds only (no /dev path, no sysfs), the runtime runs NVMe Identify', () => {
  const iommu = raw.open('/dev/iommu', C.O_RDWR, 0);
  const cdev = raw.open(cdevOf(labDevice('nvme'))!, C.O_RDWR, 0);
  assert.ok(iommu >= 0 && cdev >= 0);
  try {
    const child = fileURLToPath(new URL('../support/fds-only-child.js', import.meta.url));
    const r = spawnSync(process.execPath, [child], {
      encoding: 'utf8',
      timeout: 300_000,
      stdio: ['ignore', 'pipe', 'pipe', iommu, cdev],
      env: { ...process.env, VFIO_RUNTIME_SYSFS_PCI: '/nonexistent' },
    });
    assert.is(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as {
      status: number;
      model: string;
      path: string;
    };
    console.log(`    child: ${JSON.stringify(out)}`);
    assert.equal([out.status, out.model], [0, 'QEMU NVMe Ctrl']);
    assert.match(out.path, /\(fd 4\)$/);
  } finally {
    raw.close(iommu);
    raw.close(cdev);
  }
});

t('the legacy path with a pre-opened group fd and no sysfs', () => {
  const bdf = labDevice('e1000e');
  const group = raw.open(`/dev/vfio/${iommuGroupOf(bdf)}`, C.O_RDWR, 0);
  assert.ok(group >= 0);
  try {
    const r = spawnSync(
      process.execPath,
      [CLI, 'run', '--vfio', `host=${bdf},port=nic0,group_fd=3`, '--once', '--json'],
      {
        encoding: 'utf8',
        timeout: 300_000,
        stdio: ['ignore', 'pipe', 'pipe', group],
        env: { ...process.env, VFIO_RUNTIME_SYSFS_PCI: '/nonexistent' },
      },
    );
    assert.is(r.status, 0, r.stderr);
    const d = JSON.parse(r.stdout) as RuntimeDescription;
    console.log(
      `    nic0 on ${d.devices[0]!.backend}: ${d.devices[0]!.description.path}, MSI-X ${d.devices[0]!.description.msix?.vectors}`,
    );
    assert.match(d.devices[0]!.description.path, /\/dev\/vfio\/\d+ \(fd 3\) \(0000:00:0/);
  } finally {
    raw.close(group);
  }
});

t('errors name what was wrong', () => {
  const bdf = nonVfioFunction();
  let r = cli('run', '--iommu', 'id=c', '--vfio', `host=${bdf},port=x,iommu=c`, '--once');
  assert.is(r.status, 1);
  assert.match(r.stderr, `${bdf} is not bound to vfio-pci`);
  r = cli('run', '--vfio', 'host=00:04.0,port=x,iommu=nope', '--once');
  assert.is(r.status, 2);
  assert.match(r.stderr, 'iommu=nope names no --iommu id');
  r = cli(
    'run',
    '--iommu',
    'id=c,iommufd_fd=999',
    '--vfio',
    `host=${labDevice('nvme')},port=x,iommu=c`,
    '--once',
  );
  assert.is(r.status, 1);
  assert.match(r.stderr, 'iommufd fd 999 is not open in this process');
});

t('a device already in use by another runtime is refused, with the device named', async () => {
  const first = spawn(
    process.execPath,
    [CLI, 'run', '--iommu', 'id=a', '--vfio', `host=${labDevice('nvme')},port=x,iommu=a`],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  try {
    let out = '';
    await new Promise<void>((resolve, reject) => {
      first.stdout!.on('data', (b: Buffer) => {
        out += b.toString();
        if (out.includes('x: ')) resolve();
      });
      first.once('exit', (code) =>
        reject(new Error(`the first runtime exited (${code}) before it was ready: ${out}`)),
      );
    });
    const r = cli(
      'run',
      '--iommu',
      'id=b',
      '--vfio',
      `host=${labDevice('nvme')},port=y,iommu=b`,
      '--once',
    );
    console.log(`    busy: ${r.stderr.trim()}`);
    assert.is(r.status, 1);
    assert.match(
      r.stderr,
      /VFIO_DEVICE_BIND_IOMMUFD on \/dev\/vfio\/devices\/vfio\d+: (EINVAL|EBUSY)/,
    );
  } finally {
    first.kill('SIGTERM');
    if (first.exitCode === null) await once(first, 'exit');
  }
});

t.run();
