// A real Prometheus (Debian's package) for the tests: started on loopback with a generated
// config scraping one target every second, its query API, and stopping it. Used by the lab's
// metrics test.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';

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

export interface PromResult {
  metric: Record<string, string>;
  value: [number, string];
}

export async function query(port: number, expr: string): Promise<PromResult[]> {
  const url = `http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(expr)}`;
  const r = (await (await fetch(url)).json()) as {
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
  const t0 = Date.now();
  for (;;) {
    if (prom.exitCode !== null) throw new Error(`prometheus exited (${prom.exitCode}): ${log}`);
    const ok = await fetch(`http://127.0.0.1:${port}/-/ready`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return [prom, port];
    if (Date.now() - t0 > 30_000) {
      prom.kill('SIGKILL');
      throw new Error(`prometheus not ready in 30 s: ${log}`);
    }
    await sleep(200);
  }
}

/** Stop a Prometheus started by startPrometheus: SIGTERM, then SIGKILL after 5 s. */
export async function stopPrometheus(prom: ChildProcess | undefined): Promise<void> {
  if (!prom || prom.exitCode !== null) return;
  const exited = new Promise((r) => prom.once('exit', r));
  prom.kill('SIGTERM');
  await Promise.race([exited, sleep(5000).then(() => prom.kill('SIGKILL'))]);
  await exited;
}
