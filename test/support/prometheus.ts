// A real Prometheus (Debian's package) for the tests: started on loopback with a generated
// config scraping one target every second, its query API, and stopping it. Used by the lab's
// metrics test.

import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { until } from './poll.js';

export const PROMETHEUS = '/usr/bin/prometheus';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The lab's init leaves `lo` down; Prometheus and the endpoint talk over 127.0.0.1. */
export function loopbackUp(): void {
  const flags = Number(readFileSync('/sys/class/net/lo/flags', 'utf8'));
  if ((flags & 1) === 0) {
    const r = spawnSync('ip', ['link', 'set', 'lo', 'up'], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`ip link set lo up: ${r.stderr || r.error}`);
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/**
 * GET a loopback URL on a connection of its own, closed with the reply (`agent: false`): no
 * keep-alive socket outlives the call (fetch's pool kept one open, and the guest suite counts
 * the process's fds after the VMM's teardown).
 */
export function httpGet(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = get(url, { agent: false, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: no reply in 10 s`)));
    req.on('error', reject);
  });
}

export interface PromResult {
  metric: Record<string, string>;
  value: [number, string];
}

export async function query(port: number, expr: string): Promise<PromResult[]> {
  const url = `http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(expr)}`;
  const r = JSON.parse((await httpGet(url)).body) as {
    status: string;
    error?: string;
    data?: { result: PromResult[] };
  };
  if (r.status !== 'success') throw new Error(`Prometheus refused ${expr}: ${r.error}`);
  return r.data!.result;
}

/** `sum by (device) (expr)` as {device: value}. */
export async function byDevice(port: number, expr: string): Promise<Record<string, number>> {
  const rows = await query(port, `sum by (device) (${expr})`);
  return Object.fromEntries(rows.map((r) => [r.metric.device!, Number(r.value[1])]));
}

export async function startPrometheus(
  target: string,
  dir: string,
): Promise<[ChildProcess, number]> {
  const port = await freePort();
  const config = join(dir, 'prometheus.yml');
  writeFileSync(
    config,
    [
      'global:',
      '  scrape_interval: 1s',
      '  scrape_timeout: 1s',
      '  evaluation_interval: 1s',
      'scrape_configs:',
      '  - job_name: vfio-runtime',
      '    static_configs:',
      `      - targets: ['${target}']`,
      '',
    ].join('\n'),
  );
  const prom = spawn(
    PROMETHEUS,
    [
      `--config.file=${config}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  prom.stderr!.on('data', (d) => {
    log += d.toString();
  });
  const ready = (): Promise<boolean> => {
    if (prom.exitCode !== null) throw new Error(`prometheus exited (${prom.exitCode}): ${log}`);
    return httpGet(`http://127.0.0.1:${port}/-/ready`).then(
      (r) => r.status === 200,
      () => false,
    );
  };
  try {
    await until('prometheus to be ready (/-/ready)', ready, 30_000, 200);
  } catch (e) {
    prom.kill('SIGKILL');
    throw new Error(`${(e as Error).message}: ${log}`);
  }
  return [prom, port];
}

/** Stop a Prometheus started by startPrometheus: SIGTERM, then SIGKILL after 5 s. */
export async function stopPrometheus(prom: ChildProcess | undefined): Promise<void> {
  if (!prom || prom.exitCode !== null) return;
  const exited = new Promise((r) => prom.once('exit', r));
  prom.kill('SIGTERM');
  await Promise.race([exited, sleep(5000).then(() => prom.kill('SIGKILL'))]);
  await exited;
}

/**
 * A runtime scraped by a real Prometheus while something runs (the guest suite: while the guest
 * boots and does its I/O): the runtime's /metrics on loopback, Prometheus scraping it every
 * second. `stop()` ends both (their fds too); null when Debian's prometheus is not installed.
 */
export interface RuntimeScrape {
  readonly promPort: number;
  /** Scrapes Prometheus has made of the runtime so far (count_over_time of `up`). */
  scrapes(): Promise<number>;
  stop(): Promise<void>;
}

export async function scrapeRuntime(
  register: (r: import('prom-client').Registry) => void,
  dir: string,
): Promise<RuntimeScrape | null> {
  const { existsSync } = await import('node:fs');
  if (!existsSync(PROMETHEUS)) return null;
  const { startMetricsServer } = await import('../../src/metrics/server.js');
  loopbackUp();
  const server = await startMetricsServer('127.0.0.1:0', register);
  let prom: ChildProcess | undefined;
  try {
    const [p, promPort] = await startPrometheus(`127.0.0.1:${server.port}`, dir);
    prom = p;
    return {
      promPort,
      scrapes: async () =>
        Number((await query(promPort, 'count_over_time(up[10m])'))[0]?.value[1] ?? 0),
      stop: async () => {
        await stopPrometheus(prom);
        await server.close();
      },
    };
  } catch (e) {
    await stopPrometheus(prom);
    await server.close();
    throw e;
  }
}
