// Error kinds: stable codes and fields, `instanceof` for each kind and the base, and all of it
// intact after the error crossed from a worker thread to this one through comlink.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Worker } from 'node:worker_threads';
import { SysError } from '../../native/errno.js';
import { Comlink, installErrorTransfer, nodeEndpoint } from '../../src/control/comlink-node.js';
import {
  ConflictError, ERR, ERROR_CLASSES, HostSetupError, InvalidSpecError, KernelError, NestingSetupError,
  NotFoundError, PartialInvalidationError, RingClosedError, VfrError, WorkerExitedError, errnoNameOf, withHint,
} from '../../src/errors.js';
import { supportUrl } from '../support/threads.js';
import { type Thrower, samples } from '../support/error-thrower.js';

/** What each kind must carry: its class, code, and fields a caller branches on. */
const expected: Record<string, { cls: abstract new (...a: never[]) => Error; code: string; fields: Record<string, unknown> }> = {
  NotFoundError: { cls: NotFoundError, code: ERR.NOT_FOUND, fields: { resource: 'port', id: 'x' } },
  ConflictError: { cls: ConflictError, code: ERR.CONFLICT, fields: { resource: 'port', id: 'x' } },
  InvalidSpecError: { cls: InvalidSpecError, code: ERR.INVALID_SPEC, fields: { field: 'vfio[0].host' } },
  HostSetupError: { cls: HostSetupError, code: ERR.HOST_SETUP, fields: { bdf: '0000:00:04.0' } },
  KernelError: {
    cls: KernelError, code: ERR.KERNEL,
    fields: { errno: 22, errnoName: 'EINVAL', call: 'VFIO_DEVICE_BIND_IOMMUFD', target: '/dev/vfio/devices/vfio0', bdf: '0000:00:04.0', port: 'nvme0' },
  },
  WorkerExitedError: { cls: WorkerExitedError, code: ERR.WORKER_EXITED, fields: { worker: 'nvme0', exitCode: 1 } },
  RingClosedError: { cls: RingClosedError, code: ERR.RING_CLOSED, fields: {} },
  PartialInvalidationError: {
    cls: PartialInvalidationError, code: ERR.PARTIAL_INVALIDATION,
    fields: { consumed: 1, entries: 2, errno: 22, errnoName: 'EINVAL', call: 'IOMMU_HWPT_INVALIDATE' },
  },
  NestingSetupError: {
    cls: NestingSetupError, code: ERR.NESTING_SETUP,
    fields: { step: 'vIOMMU', undone: [{ what: 'nesting parent HWPT', id: 7 }], errno: 22, errnoName: 'EINVAL', call: 'IOMMU_VIOMMU_ALLOC' },
  },
  SysError: { cls: SysError, code: 'EBUSY', fields: { errno: 16, call: 'VFIO_DEVICE_BIND_IOMMUFD' } },
};

function check(kind: string, e: unknown, where: string): void {
  const x = expected[kind]!;
  assert.ok(e instanceof x.cls, `${where}: ${kind} arrives as ${(e as Error)?.constructor?.name}`);
  assert.ok(e instanceof Error, `${where}: ${kind} is an Error`);
  assert.is((e as unknown as { code: string }).code, x.code, `${where}: ${kind} code`);
  assert.is((e as Error).name, kind, `${where}: ${kind} name`);
  assert.is((e as Error).message, samples[kind]!().message, `${where}: ${kind} message`);
  for (const [k, v] of Object.entries(x.fields)) assert.equal((e as unknown as Record<string, unknown>)[k], v, `${where}: ${kind}.${k}`);
  assert.is(e instanceof VfrError, kind !== 'SysError', `${where}: ${kind} instanceof VfrError`);
}

test('every code has a class, and every kind here has a code there', () => {
  for (const code of Object.values(ERR)) assert.ok(ERROR_CLASSES.has(code), code);
  assert.is(Object.keys(samples).length, Object.values(ERR).length + 1, 'one sample per code, plus SysError');
});

test('in the thread that threw: class, code, fields', () => {
  for (const kind of Object.keys(samples)) check(kind, samples[kind]!(), 'here');
});

test('a KernelError is still a SysError, names the device, and keeps the errno name apart', () => {
  const e = samples.KernelError!() as KernelError;
  assert.ok(e instanceof SysError);
  assert.match(e.message, /^0000:00:04\.0, port nvme0: VFIO_DEVICE_BIND_IOMMUFD on \/dev\/vfio\/devices\/vfio0: EINVAL \(stop it\)$/);
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

test('across a worker_threads boundary (comlink): class by code, code, fields, message', async () => {
  installErrorTransfer();
  const w = new Worker(supportUrl('error-thrower.js'));
  try {
    const api = Comlink.wrap<Thrower>(nodeEndpoint(w));
    for (const kind of Object.keys(samples)) {
      let caught: unknown;
      try { await api.throwKind(kind); } catch (e) { caught = e; }
      assert.ok(caught !== undefined, `${kind} was thrown`);
      check(kind, caught, 'coordinator');
    }
  } finally { await w.terminate(); }
});

test.run();
