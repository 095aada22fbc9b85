// The HTTP API on real sockets, without a kernel: a device-less Runtime behind the routes; every
// bad request gets its status and a message naming the fix (unknown route, wrong method,
// malformed JSON, fd numbers in JSON, missing fd, fds of the wrong kind, unknown context); the
// server's bounds (oversized head and body, a slow client, a half-open one, a connection flood)
// answer or time out while the main thread keeps its pace; fds of refused requests are closed;
// the socket is 0600, a stale one replaced, a live one refused; loopback TCP; the remote CLI.
import { execFile } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, statSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { cdevOf, serveApi } from '../../src/api/cli.js';
import { type ApiCall, apiCall } from '../../src/api/client.js';
import { DEFAULT_LIMITS, isHeadError, parseHead } from '../../src/api/http.js';
import type { ApiServer } from '../../src/api/server.js';
import { Runtime } from '../../src/coordinator/runtime.js';
import { HostSetupError } from '../../src/errors.js';
import { createEventfd } from '../../src/irq/eventfd.js';
import { openFds } from '../support/process-state.js';

const t = suite('HTTP API server');
const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'vfr-api-'));
const path = join(dir, 'api.sock');
let rt: Runtime, server: ApiServer;

const call = (c: ApiCall) => apiCall(path, c);
const err = (j: unknown) =>
  (j as { error: { status: number; message: string; code: string } }).error;
const add = (body: unknown, fds: number[] = []) =>
  call({ method: 'PUT', path: '/api/v1/vm.add-device', body, fds });

/** Raw bytes on a fresh connection; resolves with everything read until the server closes. */
function raw(
  bytes: string,
  opts: { keepOpenMs?: number } = {},
): Promise<{ text: string; ms: number }> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const s = connect(path);
    let text = '';
    s.on('data', (d) => (text += d.toString()));
    s.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EPIPE' && e.code !== 'ECONNRESET') reject(e);
    });
    s.on('close', () => resolve({ text, ms: Date.now() - t0 }));
    if (bytes) s.write(bytes);
    if (opts.keepOpenMs === undefined) s.end();
  });
}

const statusOf = (text: string): number => Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);

t.before(async () => {
  rt = await Runtime.start({ iommu: [], vfio: [], memory: [] });
  server = serveApi(rt, {
    socket: path,
    maxConnections: 4,
    headTimeoutMs: 300,
    idleTimeoutMs: 600,
    limits: { maxBody: 4096 },
  }).server;
});
t.after(async () => {
  await server.close();
  await rt.shutdown();
  rmSync(dir, { recursive: true, force: true });
});

t('the socket is mode 0600; info and counters answer 200 with the inspect tree', async () => {
  assert.is(statSync(path).mode & 0o777, 0o600);
  const info = await call({ method: 'GET', path: '/api/v1/vm.info' });
  assert.is(info.status, 200);
  const j = info.json as Record<string, unknown>;
  for (const k of ['contexts', 'devices', 'memory', 'removals']) assert.ok(k in j, `info has ${k}`);
  const c = await call({ method: 'GET', path: '/api/v1/vm.counters' });
  assert.is(c.status, 200);
  assert.ok((c.json as { api: { requests: number } }).api.requests >= 1, 'API counters in it');
});

t('unknown route 404 listing the routes; wrong method 405', async () => {
  const r = await call({ method: 'GET', path: '/api/v1/vm.nope' });
  assert.is(r.status, 404);
  assert.match(
    err(r.json).message,
    /no route GET \/api\/v1\/vm\.nope; routes: PUT \/api\/v1\/vm\.add-device/,
  );
  const m = await call({ method: 'GET', path: '/api/v1/vm.add-device' });
  assert.is(m.status, 405);
  assert.match(err(m.json).message, /takes PUT, not GET/);
});

t(
  'malformed JSON, a non-object, fd numbers in JSON, unknown keys: 400 naming the fix',
  async () => {
    const bad = await call({ method: 'PUT', path: '/api/v1/vm.add-device', body: undefined });
    assert.is(bad.status, 400);
    assert.match(err(bad.json).message, /body is empty; send a JSON object/);
    const r = await raw(
      'PUT /api/v1/vm.add-device HTTP/1.1\r\nContent-Length: 9\r\nConnection: close\r\n\r\n{"port":x',
    );
    assert.is(statusOf(r.text), 400);
    assert.match(r.text, /the body is not JSON .*send a JSON object like/);
    const arr = await add([1, 2]);
    assert.is(arr.status, 400);
    assert.match(err(arr.json).message, /must be a JSON object/);
    const fd = await add({ port: 'd1', iommu: 'ctx0', fd: 7 });
    assert.is(fd.status, 400);
    assert.match(
      err(fd.json).message,
      /fd numbers are never taken from JSON; attach the fds .* SCM_RIGHTS/,
    );
    const key = await add({ port: 'd1', iommu: 'ctx0', bdf: '00:04.0', host: 'x' });
    assert.is(key.status, 400);
    assert.match(
      err(key.json).message,
      /^vm\.add-device: unknown key 'host' \(known: port, iommu, bdf\)$/,
    );
    const name = await add({ port: 'a b', iommu: 'ctx0', bdf: '00:04.0' });
    assert.is(name.status, 400);
    assert.is(err(name.json).code, 'VFR_ERR_INVALID_SPEC');
    assert.is((err(name.json) as unknown as { field: string }).field, 'port');
  },
);

t(
  'missing fd 400; fd of the wrong kind (regular file, eventfd) 400; unknown context 404',
  async () => {
    const before = openFds();
    const miss = await add({ port: 'd1', iommu: 'ctx0' });
    assert.is(miss.status, 400);
    assert.match(
      err(miss.json).message,
      /missing fd: attach the device's VFIO cdev .* by SCM_RIGHTS/,
    );
    const file = openSync(CLI, 'r');
    const reg = await add({ port: 'd1', iommu: 'ctx0' }, [file]);
    assert.is(reg.status, 400);
    assert.match(
      err(reg.json).message,
      /fd #0 attached to the request is .*main\.js \(a regular file or directory\), not a VFIO device cdev/,
    );
    const efd = createEventfd();
    const ev = await add({ port: 'd1', iommu: 'ctx0' }, [efd.fd]);
    assert.is(ev.status, 400);
    assert.match(
      err(ev.json).message,
      /is anon_inode:\[eventfd\] \(an eventfd\), not a VFIO device cdev/,
    );
    const ctx = await add({ port: 'd1', iommu: 'ctx9', bdf: '0000:00:04.0' });
    assert.is(ctx.status, 404);
    assert.match(
      err(ctx.json).message,
      /no iommufd context 'ctx9' \(contexts: none\): .*over the HTTP API, attach an fd opened on \/dev\/iommu/,
    );
    closeSync(file);
    efd.close();
    // The server thread closes them after it answers: wait for that, bounded (2 s); on a
    // loaded machine 20 ms was not always enough.
    for (let i = 0; i < 100 && openFds().length !== before.length; i++)
      await new Promise((r) => setTimeout(r, 20));
    assert.equal(openFds(), before, 'the server closed the fds of every refused request');
    const gone = await call({
      method: 'PUT',
      path: '/api/v1/vm.remove-device',
      body: { id: 'd1' },
    });
    assert.is(gone.status, 404);
    assert.match(err(gone.json).message, /no device 'd1' \(devices: none\)/);
  },
);

t('oversized body 413 and head 431, without reading them; chunked 411', async () => {
  const big = await raw(`PUT /api/v1/vm.add-device HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n`, {
    keepOpenMs: 0,
  });
  assert.is(statusOf(big.text), 413);
  assert.match(big.text, /request body of 1000000 bytes is over the limit of 4096/);
  const head = await raw(`GET /api/v1/vm.info HTTP/1.1\r\nX: ${'a'.repeat(9000)}\r\n\r\n`);
  assert.is(statusOf(head.text), 431);
  const ch = await raw('PUT /api/v1/vm.add-device HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n');
  assert.is(statusOf(ch.text), 411);
  assert.is(isHeadError(parseHead(Buffer.from('GET / HTTP/2\r\n\r\n'), DEFAULT_LIMITS)!), true);
});

t(
  'a slow client gets 408 at the head timeout, a half-open one is closed; the main thread keeps its pace',
  async () => {
    let ticks = 0,
      worst = 0,
      last = performance.now();
    const timer = setInterval(() => {
      const now = performance.now();
      worst = Math.max(worst, now - last);
      last = now;
      ticks++;
    }, 10);
    const slow = raw('PUT /api/v1/vm.add-device HTTP/1.1\r\nContent-Le', { keepOpenMs: 0 });
    const idle = raw('', { keepOpenMs: 0 });
    const meanwhile = await call({ method: 'GET', path: '/api/v1/vm.info' });
    assert.is(meanwhile.status, 200, 'others are served while the slow client dawdles');
    const s = await slow,
      i = await idle;
    clearInterval(timer);
    assert.is(statusOf(s.text), 408);
    assert.match(s.text, /not complete within 300 ms: send it whole/);
    assert.ok(s.ms >= 290 && s.ms < 2000, `408 after ${s.ms} ms`);
    assert.is(i.text, '', 'the silent connection gets no bytes');
    assert.ok(i.ms >= 290 && i.ms < 2000, `closed after ${i.ms} ms`);
    assert.ok(
      worst < 200,
      `main thread timer never late by more than 200 ms (worst gap ${worst.toFixed(0)} ms, ${ticks} ticks)`,
    );
  },
);

t(
  'a flood of connections: beyond the cap each gets 503 and is closed; service resumes',
  async () => {
    const open: Socket[] = [];
    for (let i = 0; i < 4; i++) {
      const s = connect(path);
      await new Promise((r) => s.once('connect', r));
      open.push(s);
    }
    await new Promise((r) => setTimeout(r, 50));
    const refused = await Promise.all(Array.from({ length: 10 }, () => raw('', { keepOpenMs: 0 })));
    for (const r of refused) {
      assert.is(statusOf(r.text), 503);
      assert.match(r.text, /at most 4 connections at once/);
    }
    for (const s of open) s.destroy();
    await new Promise((r) => setTimeout(r, 50));
    const ok = await call({ method: 'GET', path: '/api/v1/vm.info' });
    assert.is(ok.status, 200, 'served again once the flood is gone');
    const st = server.stats();
    assert.ok(st.refusedFull >= 10, `${st.refusedFull} refused`);
    assert.ok(st.headTimeouts >= 1 && st.idleClosed >= 1);
  },
);

t('a stale socket file is replaced, a live one refused; loopback TCP when asked', async () => {
  assert.throws(() => serveApi(rt, { socket: path }), /another process serves that socket/);
  const tcp = serveApi(rt, { tcpPort: 0 }).server;
  try {
    assert.match(tcp.address, /^127\.0\.0\.1:\d+$/);
    const r = await apiCall(tcp.address, { method: 'GET', path: '/api/v1/vm.info' });
    assert.is(r.status, 200);
    const m = await apiCall(tcp.address, {
      method: 'PUT',
      path: '/api/v1/vm.add-device',
      body: { port: 'd1', iommu: 'ctx0' },
    });
    assert.is(m.status, 400, 'no fds over TCP: missing fd');
  } finally {
    await tcp.close();
  }
});

/** The CLI as a child (async: this process serves its requests meanwhile). */
function cli(...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], (e, stdout, stderr) =>
      resolve({ status: e ? ((e as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

t(
  'the remote CLI: info prints the tree; add-device of a function without a cdev names the fix',
  async () => {
    const info = await cli('remote', '--api-socket', path, 'info');
    assert.is(info.status, 0, info.stderr);
    assert.ok('contexts' in JSON.parse(info.stdout));
    const addNo = await cli(
      'remote',
      '--api-socket',
      path,
      'add-device',
      'port=x,iommu=c,bdf=0000:00:00.0',
    );
    assert.is(addNo.status, 1);
    assert.match(addNo.stderr, /0000:00:00\.0 has no VFIO cdev: bind it to vfio-pci/);
    assert.throws(
      () => cdevOf('0000:00:00.0'),
      (e: unknown) => e instanceof HostSetupError,
    );
    const gone = await cli('remote', '--api-socket', join(dir, 'none'), 'info');
    assert.is(gone.status, 1);
    assert.match(gone.stderr, /connect on .*none: ENOENT .*is the VMM running with --api-socket/);
  },
);

t.run();
