// The metrics endpoint with real HTTP requests on loopback: GET /metrics in the text format,
// OpenMetrics on request; 404, 405, 431 and 408 for a wrong path, method, huge header and a
// slow client, with the devices still serving and the next scrape fine; loopback unless
// allowed; the CLI's options; the runtime's lifecycle log lines.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { takeObservabilityArgs } from '../../src/cli/observability.js';
import { Runtime } from '../../src/coordinator/runtime.js';
import { InvalidSpecError } from '../../src/errors.js';
import type { RuntimeLogger } from '../../src/log.js';
import { registerRuntimeMetrics } from '../../src/metrics/exporter.js';
import { registerProcessMetrics } from '../../src/metrics/process.js';
import { parseListen, startMetricsServer } from '../../src/metrics/server.js';
import { OP, STATUS } from '../../src/ring/protocol.js';
import { metricsFixture } from '../support/metrics-fixture.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

interface Res {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function get(
  port: number,
  path: string,
  opts: { method?: string; headers?: Record<string, string> } = {},
): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path, method: opts.method ?? 'GET', headers: opts.headers ?? {} },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          body += c;
        });
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** Send the first line of a request and nothing more; resolves with what the server answers. */
function slowClient(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => s.write('GET /metrics HTTP/1.1\r\nHost: x\r\n'));
    let got = '';
    s.on('data', (d) => {
      got += d.toString();
    });
    s.on('close', () => resolve(got));
    s.on('error', reject);
  });
}

test('GET /metrics: text by default, OpenMetrics when asked; errors are clear; devices unaffected', async () => {
  const fx = await metricsFixture(1);
  const server = await startMetricsServer(
    '127.0.0.1:0',
    (r) => {
      registerRuntimeMetrics(r, fx.source);
      registerProcessMetrics(r);
    },
    { requestTimeoutMs: 300 },
  );
  try {
    const c = fx.handles[0]!.client();
    assert.is(c.call(OP.NOP, 0, 0, 0), STATUS.OK);
    const text = await get(server.port, '/metrics');
    assert.is(text.status, 200);
    assert.match(String(text.headers['content-type']), /^text\/plain; version=0\.0\.4/);
    assert.match(text.body, /^vfio_runtime_worker_up\{device="dev0",bdf="0000:00:00.0"\} 1$/m);
    assert.match(text.body, /^process_cpu_seconds_total /m);
    if (existsSync('/usr/bin/promtool')) {
      const r = spawnSync('/usr/bin/promtool', ['check', 'metrics'], {
        input: text.body,
        encoding: 'utf8',
      });
      assert.is(`${r.stdout}${r.stderr}`.trim(), '', 'promtool: no problem');
    } else console.log('skip promtool: /usr/bin/promtool missing (Debian package prometheus)');
    const om = await get(server.port, '/metrics?x=1', {
      headers: { Accept: 'application/openmetrics-text; version=1.0.0,text/plain;q=0.5' },
    });
    assert.is(om.status, 200);
    assert.match(String(om.headers['content-type']), /^application\/openmetrics-text/);
    assert.ok(om.body.endsWith('# EOF\n'));
    assert.match(om.body, /^# TYPE vfio_runtime_ring_served counter$/m);
    assert.match(om.body, /^vfio_runtime_ring_served_total\{/m);

    const nf = await get(server.port, '/');
    assert.is(nf.status, 404);
    assert.match(nf.body, /served at \/metrics/);
    const post = await get(server.port, '/metrics', { method: 'POST' });
    assert.is(post.status, 405);
    assert.is(post.headers.allow, 'GET, HEAD');
    const big = await get(server.port, '/metrics', { headers: { 'X-Big': 'a'.repeat(20_000) } });
    assert.is(big.status, 431);
    const t0 = performance.now();
    const slow = await slowClient(server.port);
    assert.match(slow, /^HTTP\/1\.1 408 /);
    assert.ok(performance.now() - t0 < 3000, 'timed out within the bound');

    // The runtime was not disturbed: its ring serves and the next scrape works.
    assert.is(c.call(OP.NOP, 0, 0, 0), STATUS.OK);
    const again = await get(server.port, '/metrics');
    assert.is(again.status, 200);
  } finally {
    await server.close();
    await fx.close();
  }
});

test('metrics listen: loopback unless allowed; addresses parsed; CLI options checked', async () => {
  assert.equal(parseListen(':9464'), { host: '127.0.0.1', port: 9464 });
  assert.equal(parseListen('9464'), { host: '127.0.0.1', port: 9464 });
  assert.equal(parseListen('[::1]:9464'), { host: '::1', port: 9464 });
  assert.throws(() => parseListen('metrics.example:80'), /not an IP address/);
  assert.throws(() => parseListen('127.0.0.1:99999'), /not an address and port/);
  try {
    await startMetricsServer('0.0.0.0:0', () => {});
    assert.unreachable('a non-loopback address must be refused');
  } catch (e) {
    assert.instance(e, InvalidSpecError);
    assert.match((e as Error).message, /--metrics-allow-remote/);
  }
  const remote = await startMetricsServer('0.0.0.0:0', () => {}, { allowRemote: true });
  await remote.close();
  const rest = ['--metrics-listen', '127.0.0.1:0', '--log-level=debug', '--once'];
  assert.equal(takeObservabilityArgs(rest), {
    metricsListen: '127.0.0.1:0',
    allowRemote: false,
    logLevel: 'debug',
  });
  assert.equal(rest, ['--once']);
  assert.throws(() => takeObservabilityArgs(['--metrics-allow-remote']), /needs --metrics-listen/);
  assert.throws(
    () => takeObservabilityArgs(['--metrics-listen', '0.0.0.0:9464']),
    /--metrics-allow-remote/,
  );
  assert.is(
    takeObservabilityArgs(['--metrics-listen', '0.0.0.0:9464', '--metrics-allow-remote'])
      .allowRemote,
    true,
  );
  // The CLI refuses before setting anything up (exit 2, the mistake named).
  const cli = spawnSync(
    process.execPath,
    [CLI, 'run', '--vfio', 'host=0000:00:01.0,port=a', '--metrics-listen', '0.0.0.0:9464'],
    { encoding: 'utf8', timeout: 30_000 },
  );
  assert.is(cli.status, 2, cli.stderr);
  assert.match(cli.stderr, /not a loopback address.*--metrics-allow-remote/);
  assert.throws(() => takeObservabilityArgs(['--log-level', 'loud']), /not a level/);
  assert.throws(() => takeObservabilityArgs(['--metrics-listen']), /needs a value/);
});

test('runtime logs: one line per lifecycle event, the error with its code', async () => {
  const lines: Record<string, unknown>[] = [];
  const rec = (level: string) => (o: Record<string, unknown>) => {
    lines.push({ level, ...o });
  };
  const logger: RuntimeLogger = {
    error: rec('error'),
    warn: rec('warn'),
    info: rec('info'),
    debug: rec('debug'),
  };
  const rt = await Runtime.start({ memory: [{ size: 1n << 20n }] }, { logger });
  await rt.shutdown();
  assert.equal(
    lines.map((l) => l.event),
    ['memory_mapped'],
  );
  await Runtime.start({ vfio: [{ bdf: 'nonsense', port: 'x' }] }, { logger }).catch(() => {});
  const err = lines.at(-1)!;
  assert.is(err.event, 'error');
  assert.is(err.code, 'VFR_ERR_INVALID_SPEC');
});

test.run();
