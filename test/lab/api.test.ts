// The HTTP API on the real kernel: this test is the privileged helper (it opens the NVMe's VFIO
// cdev and /dev/iommu) and passes the fds by SCM_RIGHTS to a runtime serving the API on a Unix
// socket. Add with a new context, the bad requests only a kernel can show (duplicate port, a
// device assigned twice, a function not bound to vfio-pci), remove (waiting, and polled), and
// 20 add/remove cycles: after every removal the process holds the fds it held before and the
// IOAS has no mapping of the device's; the remote client (`vfio-runtime remote`) adding a device
// whose cdev it opened itself.
import { execFile } from 'node:child_process';
import { mkdtempSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { C, close, open } from '../../native/libc.js';
import { cdevOf, serveApi } from '../../src/api/cli.js';
import { type ApiReply, apiCall } from '../../src/api/client.js';
import type { ApiServer } from '../../src/api/server.js';
import { Runtime } from '../../src/coordinator/runtime.js';
import { labDevice, labDevices, nonVfioFunction, requireLab } from '../support/lab.js';
import { type ProcessState, processState, settledState } from '../support/process-state.js';

const t = suite('HTTP API: devices added and removed with fds passed by SCM_RIGHTS');
const dir = mkdtempSync(join(tmpdir(), 'vfr-api-lab-'));
const path = join(dir, 'api.sock');
const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
let rt: Runtime, server: ApiServer;

/** What the fds this process opened since `before` point at (for a failure's message). */
const extra = (before: ProcessState, now: ProcessState): string =>
  now.fds
    .filter((f) => !before.fds.includes(f))
    .map((f) => {
      try {
        return `${f} -> ${readlinkSync(`/proc/self/fd/${f}`)}`;
      } catch {
        return f;
      }
    })
    .join(', ');
const err = (r: ApiReply): string => (r.json as { error: { message: string } }).error.message;

/** As a privileged helper: open the fds, pass them with the request, close our copies. */
async function add(body: object, open_: string[]): Promise<ApiReply> {
  const fds = open_.map((p) => open(p, C.O_RDWR));
  try {
    return await apiCall(path, { method: 'PUT', path: '/api/v1/vm.add-device', body, fds });
  } finally {
    for (const fd of fds) close(fd);
  }
}
const remove = (id: string, wait = true): Promise<ApiReply> =>
  apiCall(path, {
    method: 'PUT',
    path: '/api/v1/vm.remove-device',
    body: wait ? { id } : { id, wait: false },
  });

t.before(async () => {
  requireLab();
  rt = await Runtime.start({
    iommu: [{ id: 'ctx0' }],
    vfio: [],
    memory: [{ size: 16n << 20n, gpa: 0n }],
  });
  server = serveApi(rt, { socket: path }).server;
  // A first call and a first add open what stays open for good (libuv's reserve fd of a loop's
  // first listen, seen as one extra fd after the first add; the runner now takes the main
  // loop's): warm both up before any test counts fds.
  await apiCall(path, { method: 'GET', path: '/api/v1/vm.info' });
  await rt.addDevice({ port: 'warm-up', bdf: labDevice('nvme'), iommu: 'ctx0' });
  await rt.removeDevice('warm-up');
});
t.after(async () => {
  await server?.close();
  await rt?.shutdown();
  rmSync(dir, { recursive: true, force: true });
});

t(
  'add with a new context (cdev + /dev/iommu), the kernel-side bad requests, remove: nothing left',
  async () => {
    const bdf = labDevice('nvme');
    const cdev = cdevOf(bdf);
    const before = processState();
    const a = await add({ port: 'nvme1', iommu: 'ctx1' }, [cdev, '/dev/iommu']);
    assert.is(a.status, 200, a.body);
    const j = a.json as {
      id: string;
      bdf: string;
      newContext: boolean;
      ioasId: number;
      ms: number;
    };
    assert.equal([j.id, j.bdf, j.newContext], ['nvme1', bdf, true]);
    const info = (await apiCall(path, { method: 'GET', path: '/api/v1/vm.info' })).json as {
      contexts: { id: string; mapped: unknown[] }[];
      devices: {
        port: string;
        worker: string;
        irq: { mode: string };
        description: { bars: unknown[] };
      }[];
    };
    const ctx1 = info.contexts.find((c) => c.id === 'ctx1')!;
    assert.ok(ctx1.mapped.length > 0, 'guest memory is mapped into the new context');
    const dev = info.devices.find((d) => d.port === 'nvme1')!;
    assert.is(dev.worker, 'running');
    assert.ok(
      dev.description.bars.length > 0 && dev.irq.mode !== undefined,
      'BARs and interrupt state',
    );

    const dup = await add({ port: 'nvme1', iommu: 'ctx0' }, [cdev]);
    assert.is(dup.status, 409);
    assert.match(err(dup), /port nvme1 already has a device: remove it first or pick another port/);
    const twice = await add({ port: 'nvme2', iommu: 'ctx0' }, [cdev]);
    assert.is(twice.status, 409);
    assert.match(err(twice), new RegExp(`${bdf} is assigned already, on port nvme1`));
    const other = nonVfioFunction();
    const notVfio = await add({ port: 'x', iommu: 'ctx0', bdf: other }, []);
    console.log(`    not bound to vfio-pci: ${notVfio.status} ${err(notVfio)}`);
    assert.is(notVfio.status, 409);
    assert.match(err(notVfio), /vfio-pci/);
    const ctxAgain = await add({ port: 'nvme3', iommu: 'ctx0' }, ['/dev/iommu']);
    assert.is(ctxAgain.status, 400, 'an iommufd for a context that exists');

    const r = await remove('nvme1');
    assert.is(r.status, 200, r.body);
    const rj = r.json as { state: string; ms: number };
    assert.is(rj.state, 'removed');
    console.log(`    add with a new context ${j.ms} ms; removal ${rj.ms} ms`);
    assert.ok(!rt.contexts.has('ctx1'), 'the context made for the device went with it');
    const after = await settledState(before);
    assert.equal(
      after.fds,
      before.fds,
      `the process holds the fds it held before the device came (extra: ${extra(before, after)})`,
    );
    assert.is(after.threads, before.threads, 'and its threads');
  },
);

/** The CLI as a child, asynchronously (this process serves its requests meanwhile). */
function cli(...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], (e, stdout, stderr) =>
      resolve({ status: e ? ((e as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

t('the remote client opens the cdev itself and passes it; remove-device through it', async () => {
  const bdf = labDevice('nvme');
  const before = processState();
  const a = await cli(
    'remote',
    '--api-socket',
    path,
    'add-device',
    `port=viacli,iommu=ctx0,bdf=${bdf}`,
  );
  assert.is(a.status, 0, a.stdout + a.stderr);
  assert.is((JSON.parse(a.stdout) as { bdf: string }).bdf, bdf);
  assert.ok(rt.devices.has('viacli'));
  const r = await cli('remote', '--api-socket', path, 'remove-device', 'viacli');
  assert.is(r.status, 0, r.stdout + r.stderr);
  assert.is((JSON.parse(r.stdout) as { state: string }).state, 'removed');
  const after = await settledState(before);
  assert.equal(after.fds, before.fds, `nothing left (extra: ${extra(before, after)})`);
});

// 20 by default; each cycle costs ~7 s in the lab (a device worker's start under its slow CPU).
const CYCLES = Number(process.env.API_CYCLES ?? 20);

t(
  `${CYCLES} add/remove cycles on a shared context (one polled removal): nothing left behind`,
  async () => {
    const bdfs = labDevices('nvme');
    const ctx = rt.contexts.get('ctx0')!;
    const before = processState();
    const addMs: number[] = [],
      removeMs: number[] = [];
    for (let i = 0; i < CYCLES; i++) {
      const bdf = bdfs[i % bdfs.length]!;
      const a = await add({ port: `n${i}`, iommu: 'ctx0' }, [cdevOf(bdf)]);
      assert.is(a.status, 200, a.body);
      addMs.push((a.json as { ms: number }).ms);
      assert.ok(ctx.mappings().length > 0, 'mapped while a device is attached');
      if (i === 1) {
        const r = await remove(`n${i}`, false);
        assert.is(r.status, 202);
        let p: ApiReply;
        do p = await apiCall(path, { method: 'GET', path: `/api/v1/vm.removal?id=n${i}` });
        while (p.status === 202);
        assert.is(p.status, 200);
        removeMs.push((p.json as { ms: number }).ms);
      } else {
        const r = await remove(`n${i}`);
        assert.is(r.status, 200, r.body);
        removeMs.push((r.json as { ms: number }).ms);
      }
      assert.is(ctx.mappings().length, 0, `cycle ${i}: the IOAS has no mapping left`);
      assert.is(ctx.ioasId, undefined, `cycle ${i}: the IOAS went with its last device`);
      // The socket thread closes its end of each connection after the answer: let it.
      const now = await settledState(before, 2000);
      assert.equal(now.fds, before.fds, `cycle ${i}: the fds held before (${extra(before, now)})`);
    }
    const med = (a: number[]): number => [...a].sort((x, y) => x - y)[a.length >> 1]!;
    console.log(
      `    ${CYCLES} cycles: add median ${med(addMs)} ms (max ${Math.max(...addMs)}), remove median ${med(removeMs)} ms (max ${Math.max(...removeMs)})`,
    );
    const after = await settledState(before);
    assert.is(after.threads, before.threads, 'no thread left behind');
    const c = (await apiCall(path, { method: 'GET', path: '/api/v1/vm.counters' })).json as {
      api: { fdsReceived: number };
    };
    assert.ok(c.api.fdsReceived >= CYCLES);
  },
);

t.run();
