// Error kinds: stable codes and fields, `instanceof` for each kind and the base, the hint and
// the HTTP status as fields, kinds kept by withHint/withPrefix, and all of it intact after the
// error crossed from a worker thread to this one through comlink.

import { Worker } from 'node:worker_threads';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { errnoNumber, SysError } from '../../native/errno.js';
import { Comlink, installErrorTransfer, nodeEndpoint } from '../../src/control/comlink-node.js';
import { explainBindFailure, explainUnsafeInterrupts } from '../../src/dma/diagnose.js';
import {
  ApiError,
  attributeKernelError,
  BootError,
  ConfigError,
  ConflictError,
  DeviceFailedError,
  ERR,
  ERROR_CLASSES,
  errnoNameOf,
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
  statusOf,
  VfrError,
  WorkerExitedError,
  withHint,
  withPrefix,
} from '../../src/errors.js';
import { samples, type Thrower } from '../support/error-thrower.js';
import { supportUrl } from '../support/threads.js';

/** What each kind must carry: its class, code, and fields a caller branches on. */
const expected: Record<
  string,
  { cls: abstract new (...a: never[]) => Error; code: string; fields: Record<string, unknown> }
> = {
  NotFoundError: { cls: NotFoundError, code: ERR.NOT_FOUND, fields: { resource: 'port', id: 'x' } },
  ConflictError: { cls: ConflictError, code: ERR.CONFLICT, fields: { resource: 'port', id: 'x' } },
  InvalidSpecError: {
    cls: InvalidSpecError,
    code: ERR.INVALID_SPEC,
    fields: { field: 'vfio[0].bdf' },
  },
  HostSetupError: { cls: HostSetupError, code: ERR.HOST_SETUP, fields: { bdf: '0000:00:04.0' } },
  KernelError: {
    cls: KernelError,
    code: ERR.KERNEL,
    fields: {
      errno: 22,
      errnoName: 'EINVAL',
      call: 'VFIO_DEVICE_BIND_IOMMUFD',
      target: '/dev/vfio/devices/vfio0',
      bdf: '0000:00:04.0',
      port: 'nvme0',
    },
  },
  WorkerExitedError: {
    cls: WorkerExitedError,
    code: ERR.WORKER_EXITED,
    fields: { worker: 'nvme0', exitCode: 1 },
  },
  RingClosedError: { cls: RingClosedError, code: ERR.RING_CLOSED, fields: {} },
  DeviceFailedError: {
    cls: DeviceFailedError,
    code: ERR.DEVICE_FAILED,
    fields: { device: 'nvme0', reason: 'restarts' },
  },
  PartialInvalidationError: {
    cls: PartialInvalidationError,
    code: ERR.PARTIAL_INVALIDATION,
    fields: {
      consumed: 1,
      entries: 2,
      errno: 22,
      errnoName: 'EINVAL',
      call: 'IOMMU_HWPT_INVALIDATE',
    },
  },
  NestingSetupError: {
    cls: NestingSetupError,
    code: ERR.NESTING_SETUP,
    fields: {
      step: 'vIOMMU',
      undone: [{ what: 'nesting parent HWPT', id: 7 }],
      errno: 22,
      errnoName: 'EINVAL',
      call: 'IOMMU_VIOMMU_ALLOC',
    },
  },
  RingError: {
    cls: RingError,
    code: ERR.RING_REQUEST,
    fields: { status: 2, statusName: 'BAD_BAR', request: 'BAR_READ BAR1 offset 0x0 size 4' },
  },
  GsiRouterError: {
    cls: GsiRouterError,
    code: ERR.GSI_ROUTING,
    fields: { errno: 22, errnoName: 'EINVAL', call: 'KVM_SET_GSI_ROUTING' },
  },
  BootError: { cls: BootError, code: ERR.BOOT, fields: {} },
  ApiError: { cls: ApiError, code: ERR.HTTP, fields: { status: 405, statusCode: 405 } },
  ConfigError: { cls: ConfigError, code: ERR.DEVICE_CONFIG, fields: {} },
  IovaHoleError: {
    cls: IovaHoleError,
    code: ERR.IOVA_HOLE,
    fields: {
      span: { iova: 0xfee00000n, length: 0x100000n },
      hole: { start: 0xfee00000n, last: 0xfeefffffn },
      allowed: [{ start: 0n, last: 0xfedfffffn }],
    },
  },
  OutsideAccessError: {
    cls: OutsideAccessError,
    code: ERR.OUTSIDE_ACCESS,
    fields: { offset: 0x1000, size: 4 },
  },
  SysError: {
    cls: SysError,
    code: 'EBUSY',
    fields: { errno: 16, call: 'VFIO_DEVICE_BIND_IOMMUFD' },
  },
};

function check(kind: string, e: unknown, where: string): void {
  const x = expected[kind]!;
  assert.ok(e instanceof x.cls, `${where}: ${kind} arrives as ${(e as Error)?.constructor?.name}`);
  assert.ok(e instanceof Error, `${where}: ${kind} is an Error`);
  assert.is((e as unknown as { code: string }).code, x.code, `${where}: ${kind} code`);
  assert.is((e as Error).name, kind, `${where}: ${kind} name`);
  assert.is((e as Error).message, samples[kind]!().message, `${where}: ${kind} message`);
  for (const [k, v] of Object.entries(x.fields))
    assert.equal((e as unknown as Record<string, unknown>)[k], v, `${where}: ${kind}.${k}`);
  assert.is(e instanceof VfrError, kind !== 'SysError', `${where}: ${kind} instanceof VfrError`);
}

test('every code has a class, and every kind here has a code there', () => {
  for (const code of Object.values(ERR)) assert.ok(ERROR_CLASSES.has(code), code);
  assert.is(
    Object.keys(samples).length,
    Object.values(ERR).length + 1,
    'one sample per code, plus SysError',
  );
});

test('in the thread that threw: class, code, fields', () => {
  for (const kind of Object.keys(samples)) check(kind, samples[kind]!(), 'here');
});

test('a KernelError is still a SysError, names the device, and keeps the errno name apart', () => {
  const e = samples.KernelError!() as KernelError;
  assert.ok(e instanceof SysError);
  assert.match(
    e.message,
    /^0000:00:04\.0, port nvme0: VFIO_DEVICE_BIND_IOMMUFD on \/dev\/vfio\/devices\/vfio0: EINVAL \(stop it\)$/,
  );
  assert.is(errnoNameOf(e), 'EINVAL');
  const more = withHint(e, 'and more');
  assert.ok(more instanceof KernelError);
  assert.is((more as KernelError).bdf, '0000:00:04.0');
  assert.match(more.message, /EINVAL \(stop it; and more\)$/);
  const plain = withHint(new SysError('X', '/dev/y', 16, 'first'), 'second');
  assert.ok(plain instanceof SysError && !(plain instanceof KernelError));
  assert.is((plain as SysError).code, 'EBUSY', 'a SysError keeps its errno name as code');
  assert.is(plain.message, 'X on /dev/y: EBUSY (first; second)');
});

test('the hint is a field; withHint and withPrefix keep the kind, its fields and its status', () => {
  const sys = new SysError('open', '/dev/vfio/7', 16, 'stop the holder');
  assert.is(sys.hint, 'stop the holder', 'a SysError keeps the hint it was made with');
  const host = new HostSetupError('0000:00:04.0 is not bound to vfio-pci', '0000:00:04.0');
  const hinted = withHint(withHint(host, 'bind it'), 'then retry');
  assert.ok(hinted instanceof HostSetupError && hinted instanceof VfrError);
  assert.equal(
    [hinted.code, hinted.bdf, hinted.hint, hinted.statusCode],
    [ERR.HOST_SETUP, '0000:00:04.0', 'bind it; then retry', 409],
  );
  assert.is(hinted.message, '0000:00:04.0 is not bound to vfio-pci (bind it; then retry)');
  assert.ok(hinted.cause instanceof HostSetupError, 'the cause is the error before the hint');
  const plain = withHint(new TypeError('x'), 'y');
  assert.equal([plain.message, plain.hint, statusOf(plain)], ['x (y)', 'y', 500]);
  const at = withPrefix(
    new InvalidSpecError('bdf=x is not a PCI address', 'vfio[0].bdf'),
    '--vfio port=a',
  );
  assert.ok(at instanceof InvalidSpecError, 'a device spec error stays one (the CLI exits 2)');
  assert.equal(
    [at.message, at.field],
    ['--vfio port=a: bdf=x is not a PCI address', 'vfio[0].bdf'],
  );
  const k = withPrefix(samples.KernelError!(), 'vm');
  assert.ok(
    k instanceof KernelError && k instanceof SysError && (k as KernelError).bdf === '0000:00:04.0',
  );
  assert.equal(
    Object.values(ERR).map(
      (c) => (ERROR_CLASSES.get(c) as unknown as { statusCode: number }).statusCode > 0,
    ),
    Object.values(ERR).map(() => true),
    'every kind carries a status',
  );
});

test('across a worker_threads boundary (comlink): class by code, code, fields, message', async () => {
  installErrorTransfer();
  const w = new Worker(supportUrl('error-thrower.js'));
  try {
    const api = Comlink.wrap<Thrower>(nodeEndpoint(w));
    for (const kind of Object.keys(samples)) {
      let caught: unknown;
      try {
        await api.throwKind(kind);
      } catch (e) {
        caught = e;
      }
      assert.ok(caught !== undefined, `${kind} was thrown`);
      check(kind, caught, 'coordinator');
    }
  } finally {
    await w.terminate();
  }
});

const bind = (code: string): SysError =>
  new SysError('VFIO_DEVICE_BIND_IOMMUFD', '/dev/vfio/devices/vfio7 (fd 4)', errnoNumber(code));

test('the hint of a refused cdev bind matches its errno', () => {
  const inval = explainBindFailure(bind('EINVAL'), '/dev/vfio/devices/vfio7 (fd 4)') as SysError;
  assert.is(inval.code, 'EINVAL', 'still the kernel errno');
  assert.match(inval.message, /already open and bound to an iommufd elsewhere: another process/);
  assert.match(
    inval.message,
    /stop that holder, or have it hand this process its iommufd and cdev fds/,
  );
  const busy = explainBindFailure(bind('EBUSY'), '/dev/vfio/devices/vfio7') as SysError;
  assert.match(busy.message, /legacy VFIO group .* is in use .*use the legacy path here too/);
  const perm = explainBindFailure(bind('EPERM'), '/dev/vfio/devices/vfio7') as SysError;
  assert.match(
    perm.message,
    /cannot isolate this device's MSIs .*iommufd allow_unsafe_interrupts=1/,
  );
  const gone = explainBindFailure(bind('ENODEV'), '/dev/vfio/devices/vfio7') as SysError;
  assert.match(gone.message, /went away .*bind it to vfio-pci again/);
  const setIommu = explainUnsafeInterrupts(
    new SysError('VFIO_SET_IOMMU', '/dev/vfio/vfio', errnoNumber('EPERM')),
    'container',
  ) as SysError;
  assert.match(setIommu.message, /vfio_iommu_type1 allow_unsafe_interrupts=1/);
  const other = bind('EFAULT');
  assert.is(
    explainBindFailure(other, '/dev/vfio/devices/vfio7'),
    other,
    'no guess for an errno without a known cause',
  );
});

test('the runtime attributes a kernel error to its device, keeping call, node and errno readable', () => {
  const e = attributeKernelError(withHint(bind('EINVAL'), 'held elsewhere'), {
    bdf: '0000:00:04.0',
    port: 'y',
  });
  assert.ok(e instanceof KernelError && e instanceof SysError && e instanceof VfrError);
  const k = e as KernelError;
  assert.equal(
    [k.code, k.errnoName, k.errno, k.bdf, k.port],
    ['VFR_ERR_KERNEL', 'EINVAL', 22, '0000:00:04.0', 'y'],
  );
  assert.match(
    k.message,
    /VFIO_DEVICE_BIND_IOMMUFD on \/dev\/vfio\/devices\/vfio\d+ \(fd 4\): EINVAL \(held elsewhere\)$/,
  );
  assert.ok(k.message.startsWith('0000:00:04.0, port y: '));
  assert.is(attributeKernelError(k, { bdf: 'other' }), k, 'attributed once');
  const plain = new Error('not a kernel error');
  assert.is(attributeKernelError(plain, { bdf: 'x' }), plain);
});

test.run();
