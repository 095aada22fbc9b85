// Each error kind as the HTTP API answers it, on real sockets over a device-less Runtime: the
// status its kind carries, its code, message, hint and fields (bigints as hex), whichever
// class it is; and the kinds the add-device route meets itself (a bad body, an unknown context,
// a port or device taken, a context that exists, a host function not on vfio-pci) with the
// messages Runtime.checkAdd gives a library caller.
import { mkdtempSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { serveApi } from '../../src/api/cli.js';
import { type ApiCall, apiCall } from '../../src/api/client.js';
import type { ApiServer } from '../../src/api/server.js';
import { Runtime } from '../../src/coordinator/runtime.js';
import { ERR, HostSetupError, withHint } from '../../src/errors.js';
import { SYSFS_PCI } from '../../src/platform/pci-sysfs.js';
import { openCdev } from '../../src/vfio/open.js';
import { samples } from '../support/error-thrower.js';

const t = suite('HTTP API error answers');
const dir = mkdtempSync(join(tmpdir(), 'vfr-api-err-'));
const path = join(dir, 'api.sock');
let rt: Runtime, server: ApiServer;
/** What the host's vm.info hook throws next. */
let next: unknown;

type Answer = { status: number; error: Record<string, unknown> };
const call = async (c: ApiCall): Promise<Answer> => {
  const r = await apiCall(path, c);
  return { status: r.status, error: (r.json as { error: Record<string, unknown> }).error };
};
const info = (e: unknown): Promise<Answer> => {
  next = e;
  return call({ method: 'GET', path: '/api/v1/vm.info' });
};
const add = (body: unknown) => call({ method: 'PUT', path: '/api/v1/vm.add-device', body });

/** What an answer's fields must be: the error's own fields, bigints as hex. */
const json = (v: unknown): unknown =>
  JSON.parse(JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? `0x${x.toString(16)}` : x)));

t.before(async () => {
  rt = await Runtime.start({});
  server = serveApi(
    rt,
    { socket: path },
    {
      info: () => {
        throw next;
      },
    },
  ).server;
});
t.after(async () => {
  await server.close();
  rt.devices.clear();
  rt.contexts.clear();
  await rt.shutdown();
  rmSync(dir, { recursive: true, force: true });
});

const STATUS: Record<string, number> = {
  NotFoundError: 404,
  ConflictError: 409,
  InvalidSpecError: 400,
  HostSetupError: 409,
  KernelError: 500,
  WorkerExitedError: 503,
  RingClosedError: 503,
  DeviceFailedError: 503,
  PartialInvalidationError: 500,
  NestingSetupError: 500,
  RingError: 502,
  GsiRouterError: 500,
  BootError: 400,
  ApiError: 405,
  ConfigError: 422,
  IovaHoleError: 409,
  OutsideAccessError: 500,
  SysError: 500,
};

for (const kind of Object.keys(samples))
  t(`${kind}: ${STATUS[kind]} with its code, message and fields`, async () => {
    const e = samples[kind]!() as Error & Record<string, unknown>;
    const a = await info(e);
    assert.is(a.status, STATUS[kind]);
    assert.is(a.error.status, a.status);
    assert.is(a.error.code, kind === 'SysError' ? ERR.KERNEL : e.code);
    assert.is(a.error.message, e.message);
    for (const [k, v] of Object.entries(e))
      if (!['name', 'code', 'status', 'hint', 'cause'].includes(k) && v !== undefined)
        assert.equal(a.error[k], json(v), `${kind}.${k}`);
    if (kind === 'SysError') assert.is(a.error.errnoName, 'EBUSY');
  });

t('the hint rides as a field; an error outside the taxonomy is 500 VFR_ERR_INTERNAL', async () => {
  const hinted = withHint(
    new HostSetupError('0000:00:04.0 is not bound to vfio-pci', '0000:00:04.0'),
    'bind it',
  );
  const a = await info(hinted);
  assert.equal(
    [a.status, a.error.code, a.error.hint, a.error.bdf],
    [409, ERR.HOST_SETUP, 'bind it', '0000:00:04.0'],
  );
  const plain = await info(new TypeError('a bug'));
  assert.equal(
    [plain.status, plain.error.code, plain.error.message],
    [500, 'VFR_ERR_INTERNAL', 'a bug'],
  );
});

/** What Runtime.checkAdd throws for `spec`, for comparing with the API's answer. */
function refusal(spec: unknown, opts?: { newContext?: boolean }): Error {
  try {
    rt.checkAdd(spec, opts);
  } catch (e) {
    return e as Error;
  }
  throw new Error(`checkAdd took ${JSON.stringify(spec)}`);
}

/** A host PCI function not bound to vfio-pci, if this host has one. */
function nonVfioFunction(): string | undefined {
  let all: string[] = [];
  try {
    all = readdirSync(SYSFS_PCI);
  } catch {}
  return all.find((bdf) => {
    if (bdf === '0000:00:04.0') return false; // the fake nvme0's
    try {
      return basename(readlinkSync(join(SYSFS_PCI, bdf, 'driver'))) !== 'vfio-pci';
    } catch {
      return true; // no driver: not vfio-pci either
    }
  });
}

t('add-device refusals answer as Runtime.checkAdd refuses a library caller', async () => {
  // Bookkeeping only: a device on nvme0 and a context ctx0 whose attach opens the cdev as the
  // real one does first (openCdev: HostSetupError for a function not on vfio-pci).
  rt.devices.set('nvme0', { port: 'nvme0', bdf: '0000:00:04.0' } as never);
  rt.contexts.set('ctx0', {
    close: () => {},
    attachPciDevice: (bdf: string) => {
      openCdev(bdf);
      throw new Error(`${bdf} was opened: not expected here`);
    },
  } as never);
  const bad = await add({ port: 'a b', iommu: 'ctx0', bdf: '00:05.0' });
  assert.equal([bad.status, bad.error.code, bad.error.field], [400, ERR.INVALID_SPEC, 'port']);
  assert.match(String(bad.error.message), /^vm\.add-device: port=a b is not a valid name/);
  for (const [spec, status, resource] of [
    [{ port: 'n1', iommu: 'ctx9', bdf: '00:05.0' }, 404, 'context'],
    [{ port: 'nvme0', iommu: 'ctx0', bdf: '00:05.0' }, 409, 'port'],
    [{ port: 'n1', iommu: 'ctx0', bdf: '00:04.0' }, 409, 'device'],
  ] as const) {
    const a = await add(spec);
    const lib = refusal(spec) as Error & { code: string; id: string };
    assert.equal(
      [a.status, a.error.code, a.error.resource, a.error.id, a.error.message],
      [status, lib.code, resource, lib.id, lib.message],
      JSON.stringify(spec),
    );
  }
  const host = nonVfioFunction();
  if (host) {
    const a = await add({ port: 'n1', iommu: 'ctx0', bdf: host });
    assert.equal([a.status, a.error.code, a.error.bdf], [409, ERR.HOST_SETUP, host]);
    assert.match(String(a.error.message), /is not bound to vfio-pci/);
  }
  rt.devices.clear();
  rt.contexts.clear();
});

t.run();
