// The runtime as a library caller meets it, without a kernel: specs checked at Runtime.start and
// addDevice (InvalidSpec before any path or fd is touched), lookups that fail as NotFound or
// Conflict, checkAdd's dry run refusing as addDevice does, describe() showing the pieces each
// backend really mapped, and the CLI's help.

import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Runtime } from '../../src/coordinator/runtime.js';
import { hvaSource } from '../../src/dma/backend.js';
import type { ContainerBackend } from '../../src/dma/container-backend.js';
import type { IommufdContext } from '../../src/dma/iommufd-context.js';
import { ConflictError, InvalidSpecError, NotFoundError, VfrError } from '../../src/errors.js';
import { FakeBackend } from '../support/fake-dma-backend.js';

const MiB = 1n << 20n;
const LAB = [
  { start: 0n, last: 0xfedfffffn },
  { start: 0xfef00000n, last: 0x7fffffffffn },
];
const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

const isInvalid =
  (re: RegExp, field?: string) =>
  (e: unknown): boolean =>
    e instanceof InvalidSpecError &&
    e instanceof VfrError &&
    re.test(e.message) &&
    (field === undefined || e.field === field);

test('Runtime.start checks the spec before opening anything', async () => {
  for (const [spec, re, field] of [
    [
      { vfio: [{ port: 'x', bdf: '../../../etc' }] },
      /bdf=\.\.\/\.\.\/\.\.\/etc is not a PCI address/,
      'vfio[0].bdf',
    ],
    [{ iommu: [{ id: 'c', iommufdFd: 1 }] }, /is stdin\/stdout\/stderr/, 'iommu[0].iommufdFd'],
    [
      { vfio: [{ port: 'x', bdf: '00:04.0', iommu: 'nope' }] },
      /iommu=nope names no iommu id/,
      'vfio[0].iommu',
    ],
  ] as const) {
    let err: unknown;
    try {
      await Runtime.start(spec as never);
    } catch (e) {
      err = e;
    }
    assert.ok(isInvalid(re, field)(err), String(err));
  }
});

test('addDevice: bad spec is InvalidSpec, an unknown context NotFound, lookups of absent ports NotFound', async () => {
  const rt = await Runtime.start({});
  try {
    let err: unknown;
    try {
      await rt.addDevice({ port: 'x', bdf: '../../../etc' });
    } catch (e) {
      err = e;
    }
    assert.ok(
      isInvalid(/^vfio\[0\]: bdf=\.\.\/\.\.\/\.\.\/etc is not a PCI address/, 'vfio[0].bdf')(err),
      String(err),
    );
    err = undefined;
    try {
      await rt.addDevice({ port: 'x', bdf: '00:04.0', iommu: 'ctx9' });
    } catch (e) {
      err = e;
    }
    assert.ok(
      err instanceof NotFoundError &&
        err.code === 'VFR_ERR_NOT_FOUND' &&
        err.resource === 'context' &&
        err.id === 'ctx9',
      String(err),
    );
    assert.match((err as Error).message, "no iommufd context 'ctx9' (contexts: none)");
    assert.throws(
      () => rt.device('nope'),
      (e: unknown) =>
        e instanceof NotFoundError &&
        e.resource === 'port' &&
        /no device on port 'nope' \(ports: none\)/.test(e.message),
    );
    err = undefined;
    try {
      await rt.removeDevice('nope');
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof NotFoundError && err.id === 'nope');
    assert.throws(
      () => rt.createVIommu('v0', 'selftest', 'nope'),
      (e: unknown) =>
        e instanceof NotFoundError && /no device on port 'nope'/.test((e as Error).message),
    );
  } finally {
    await rt.shutdown();
  }
});

test('addDevice: a port or device already taken is a Conflict', async () => {
  const rt = await Runtime.start({});
  try {
    // A device entry as addDevice leaves it; only the bookkeeping matters here.
    rt.devices.set('nvme0', { port: 'nvme0', bdf: '0000:00:04.0' } as never);
    let err: unknown;
    try {
      await rt.addDevice({ port: 'nvme0', bdf: '00:05.0' });
    } catch (e) {
      err = e;
    }
    assert.ok(
      err instanceof ConflictError &&
        err.code === 'VFR_ERR_CONFLICT' &&
        err.resource === 'port' &&
        err.id === 'nvme0',
      String(err),
    );
    err = undefined;
    try {
      await rt.addDevice({ port: 'nvme1', bdf: '00:04.0' });
    } catch (e) {
      err = e;
    }
    assert.ok(
      err instanceof ConflictError && err.resource === 'device' && err.id === '0000:00:04.0',
      String(err),
    );
    assert.match((err as Error).message, '0000:00:04.0 is assigned already, on port nvme0');
  } finally {
    rt.devices.clear();
    await rt.shutdown();
  }
});

/** What a call threw (sync or async), or undefined. */
async function thrown(fn: () => unknown): Promise<unknown> {
  try {
    await fn();
  } catch (e) {
    return e;
  }
  return undefined;
}

test('checkAdd: a dry run refusing what addDevice refuses, with the same error, changing nothing', async () => {
  const rt = await Runtime.start({});
  try {
    // Bookkeeping only: a device on nvme0 and a context ctx0, as addDevice/addContext leave them.
    rt.devices.set('nvme0', { port: 'nvme0', bdf: '0000:00:04.0' } as never);
    rt.contexts.set('ctx0', { close: () => {} } as never);
    for (const [spec, cls, where] of [
      [{ port: 'nvme0', iommu: 'ctx0', bdf: '00:05.0' }, ConflictError, 'port nvme0'],
      [{ port: 'nvme1', iommu: 'ctx0', bdf: '00:04.0' }, ConflictError, 'device 0000:00:04.0'],
      [{ port: 'nvme1', iommu: 'ctx9', bdf: '00:05.0' }, NotFoundError, 'context ctx9'],
      [{ port: 'nvme1', bdf: 'x' }, InvalidSpecError, 'vfio[0].bdf'],
    ] as const) {
      const dry = (await thrown(() => rt.checkAdd(spec))) as Record<string, unknown>;
      const real = (await thrown(() => rt.addDevice(spec))) as Record<string, unknown>;
      assert.ok(dry instanceof cls, `${where}: ${String(dry)}`);
      assert.ok(real instanceof cls, `${where}: addDevice: ${String(real)}`);
      for (const k of ['code', 'message', 'resource', 'id', 'field'])
        assert.is(real[k], dry[k], `${where}: the same ${k}`);
    }
    const made = await thrown(() =>
      rt.checkAdd({ port: 'n2', iommu: 'ctx0', bdf: '00:06.0' }, { newContext: true }),
    );
    const again = await thrown(() => rt.addContext({ id: 'ctx0' }));
    assert.ok(made instanceof ConflictError && made.resource === 'context', String(made));
    assert.is((again as Error).message, (made as Error).message, 'as addContext says it');
    assert.equal(rt.checkAdd({ port: 'n2', iommu: 'ctx0', bdf: '00:06.0' }), {
      port: 'n2',
      bdf: '0000:00:06.0',
      iommu: 'ctx0',
    });
    assert.ok(rt.checkAdd({ port: 'n2', iommu: 'ctx1', bdf: '00:06.0' }, { newContext: true }));
    assert.equal([[...rt.devices.keys()], [...rt.contexts.keys()]], [['nvme0'], ['ctx0']]);
  } finally {
    rt.devices.clear();
    rt.contexts.clear();
    await rt.shutdown();
  }
});

test('describe() shows the pieces each backend mapped: a region split around a reserved window', async () => {
  const rt = await Runtime.start({});
  const closable = <T extends object>(b: T): T => Object.assign(b, { close: () => {} });
  const legacy = closable(new FakeBackend('vfio-container', 'container'));
  const ctx = closable(Object.assign(new FakeBackend('ctx0'), { ioasId: 2, deviceCount: 1 }));
  rt.container = legacy as unknown as ContainerBackend;
  rt.contexts.set('ctx0', ctx as unknown as IommufdContext);
  rt.memory.addBackend(legacy);
  rt.memory.addBackend(ctx);
  legacy.attach(LAB);
  ctx.attach([
    { start: 0n, last: 0xfe7fffffn },
    { start: 0xfe900000n, last: 0xffffffffffn },
  ]);
  try {
    rt.addMemory({
      name: 'high',
      gpa: 0xfe000000n,
      size: 32n * MiB,
      memory: hvaSource(0x7f0000000000n),
    });
    const d = rt.describe();
    assert.equal(
      d.memory,
      [{ name: 'high', gpa: '0xfe000000', size: '0x2000000' }],
      'the region as registered',
    );
    assert.equal(
      d.container?.mapped,
      [
        { region: 'high', iova: '0xfe000000', size: '0xe00000' },
        { region: 'high', iova: '0xfef00000', size: '0x1100000' },
      ],
      'around the MSI window 0xfee00000-0xfeefffff',
    );
    assert.equal(
      d.contexts.map((c) => [c.id, c.mapped]),
      [
        [
          'ctx0',
          [
            { region: 'high', iova: '0xfe000000', size: '0x800000' },
            { region: 'high', iova: '0xfe900000', size: '0x1700000' },
          ],
        ],
      ],
      'the context has its own hole',
    );
    assert.throws(
      () =>
        rt.addMemory({
          name: 'again',
          gpa: 0xfe000000n,
          size: MiB,
          memory: hvaSource(0x7f0000000000n),
        }),
      (e: unknown) => e instanceof ConflictError && e.resource === 'region' && e.id === 'high',
    );
    assert.throws(
      () =>
        rt.addMemory({ name: 'odd', gpa: 0x800n, size: MiB, memory: hvaSource(0x7f0000000000n) }),
      (e: unknown) =>
        e instanceof InvalidSpecError && /must be multiples of the 4 KiB page size/.test(e.message),
    );
    assert.throws(
      () => rt.memory.removeRegion(0x1000n),
      (e: unknown) => e instanceof NotFoundError && e.resource === 'region',
    );
  } finally {
    await rt.shutdown();
  }
});

const cli = (...args: string[]) =>
  spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 });

test('--help, -h, <command> --help and help print the usage and exit 0; no command exits 2', () => {
  for (const args of [
    ['--help'],
    ['-h'],
    ['run', '--help'],
    ['devices', '-h'],
    ['check', '--help'],
    ['help'],
  ]) {
    const r = cli(...args);
    assert.is(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stdout, /^usage: vfio-runtime <command>/, args.join(' '));
  }
  const none = cli();
  assert.is(none.status, 2);
  assert.match(none.stderr, /^usage: vfio-runtime <command>/);
  const bad = cli('run', '--vfio', 'port=x,host=../../etc');
  assert.is(bad.status, 2, 'a bad spec exits 2');
  assert.match(bad.stderr, 'host=../../etc is not a PCI address');
});

test.run();
