// Dashboards as code: the checked-in dashboards/*.json are what src/metrics/dashboards.ts
// generates (`npm run dashboards` rewrites them), every PromQL expression in them parses with
// Prometheus's own parser, and every metric it reads is one the runtime, the API or the VMM
// declares.
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Registry } from 'prom-client';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  buildDashboards,
  dashboardExprs,
  dashboardJson,
  substituteVariables,
} from '../../src/metrics/dashboards.js';
import { registerRuntimeMetrics, seriesNames } from '../../src/metrics/exporter.js';
import { registerApiMetrics, registerVmMetrics } from '../../src/metrics/hosts.js';
import { registerNestingMetrics } from '../../src/metrics/nesting.js';
import { registerProcessMetrics } from '../../src/metrics/process.js';
import { checkPromql } from '../../src/metrics/promql-names.js';

const DIR = fileURLToPath(new URL('../../../dashboards/', import.meta.url));

/** The dashboards' files under dashboards/ (the VMM's in vm/). */
const dashboardFiles = (): string[] =>
  readdirSync(DIR, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.json'))
    .sort();

/**
 * Every series name the runtime's /metrics can carry (histograms: _bucket, _sum, _count), the
 * API's and the VMM's included.
 */
export function exportedSeriesNames(): Set<string> {
  const r = new Registry();
  registerRuntimeMetrics(r, { devices: () => [], backends: () => [] });
  registerNestingMetrics(r, () => []);
  registerProcessMetrics(r);
  registerApiMetrics(r, new Float64Array(0));
  registerVmMetrics(r, { stats: new Float64Array(0), cpus: 0, devices: () => [] });
  const out = new Set<string>();
  for (const m of r.getMetricsAsArray() as unknown as { name: string; type: string }[])
    for (const n of seriesNames(m.name, m.type === 'histogram' ? 'histogram' : 'gauge')) out.add(n);
  return out;
}

test('dashboards/*.json are what the code generates (npm run dashboards)', () => {
  const built = buildDashboards();
  assert.equal(dashboardFiles(), Object.keys(built).sort(), 'one file per dashboard');
  for (const [file, d] of Object.entries(built))
    assert.ok(
      readFileSync(`${DIR}${file}`, 'utf8') === dashboardJson(d),
      `dashboards/${file} differs from the generated one: run npm run dashboards and commit it`,
    );
});

test('every dashboard expression parses and reads only exported metrics', () => {
  const known = exportedSeriesNames();
  let n = 0;
  for (const file of dashboardFiles()) {
    const exprs = dashboardExprs(JSON.parse(readFileSync(`${DIR}${file}`, 'utf8')));
    assert.ok(exprs.length > 0, `${file} has queries`);
    for (const e of exprs) {
      const { names, errors } = checkPromql(substituteVariables(e));
      assert.equal(errors, [], `${file}: ${e} parses`);
      assert.ok(names.length > 0, `${file}: ${e} reads a metric`);
      for (const name of names) assert.ok(known.has(name), `${file}: ${name} is not exported`);
      n++;
    }
  }
  assert.ok(n >= 25, `${n} expressions checked`);
  // The parser does find errors (the check above is not vacuous).
  assert.ok(checkPromql('sum(rate(x[$__rate_interval]))').errors.length > 0);
});

test.run();
