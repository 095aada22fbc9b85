// The Prometheus exporter over synthetic devices: every schema row exported under the one
// prefix with _total on counters, counters written into shared memory read back per device and
// label, the ring's sampled latency histogram well formed, worker state and restarts, DMA
// backend stats; promtool (Debian's prometheus package) checks the text.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { Registry } from 'prom-client';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { irqViews, SRC } from '../../src/irq/irq-state.js';
import { declaredFamilies, registerRuntimeMetrics } from '../../src/metrics/exporter.js';
import { C_BAR_READS, C_CFG_READ, errorSlot, STATS_SLOTS } from '../../src/metrics/schema.js';
import { LAT_SAMPLE_MASK, OP, STATUS } from '../../src/ring/protocol.js';
import { metricsFixture, sample } from '../support/metrics-fixture.js';

const PROMTOOL = '/usr/bin/promtool';

/** The server counts a request just after completing it: wait (bounded) for dev's count. */
async function served(h: { counters(): { name: string; value: number }[] }, n: number) {
  for (const t0 = performance.now(); performance.now() - t0 < 5000; ) {
    if (h.counters().find((r) => r.name === 'vfio_runtime_ring_served')!.value >= n) return;
    await new Promise((r) => setTimeout(r, 1));
  }
  throw new Error(`the ring server did not count ${n} requests in 5 s`);
}

test('exporter: schema rows, ring latency, worker and DMA metrics; promtool accepts the text', async () => {
  const fx = await metricsFixture(2);
  try {
    const [h0, h1] = fx.handles as [(typeof fx.handles)[0], (typeof fx.handles)[0]];
    // Simulated counters where the synthetic worker keeps none (the real AssignedDevice writes
    // these slots; the lab test proves that end to end).
    const s1 = new Float64Array(h1.memory.stats, 0, STATS_SLOTS);
    s1[C_CFG_READ] = 7;
    s1[C_BAR_READS + 2] = 5;
    s1[errorSlot(STATUS.IO_ERROR)] = 3;
    const v = irqViews(h1.memory.irq);
    Atomics.add(v.FIRED, SRC.MSIX + 3, 9);
    Atomics.add(v.MASKS, SRC.MSIX + 3, 2);
    // Real traffic through dev0's ring: 64 requests, one in LAT_SAMPLE_MASK+1 of them sampled.
    const c = h0.client();
    for (let i = 0; i < 64; i++) assert.is(c.call(OP.BAR_READ, 0, 0, 4), STATUS.OK);
    await served(h0, 64);
    fx.backend.stats.timed('map', () => 0);
    try {
      fx.backend.stats.timed('map', () => {
        throw Object.assign(new Error('x'), { errnoName: 'ENOMEM' });
      });
    } catch {}
    await h1.respawn();

    const registry = new Registry();
    registerRuntimeMetrics(registry, fx.source);
    const text = await registry.metrics();
    const d0 = { device: 'dev0' },
      d1 = { device: 'dev1' };
    assert.is(sample(text, 'vfio_runtime_ring_served_total', d0), 64);
    assert.is(sample(text, 'vfio_runtime_ring_requests_total', { ...d1, op: 'cfg_read' }), 7);
    assert.is(sample(text, 'vfio_runtime_bar_accesses_total', { ...d1, bar: '2' }), 5);
    assert.is(sample(text, 'vfio_runtime_ring_errors_total', { ...d1, status: 'IO_ERROR' }), 3);
    assert.is(
      sample(text, 'vfio_runtime_irq_fired_total', { ...d1, kind: 'msix', vector: '3' }),
      9,
    );
    assert.is(sample(text, 'vfio_runtime_irq_masks_total', { ...d1, vector: '3' }), 2);
    assert.is(sample(text, 'vfio_runtime_worker_up', d0), 1);
    assert.is(sample(text, 'vfio_runtime_worker_state', { ...d0, state: 'running' }), 1);
    assert.is(sample(text, 'vfio_runtime_worker_state', { ...d0, state: 'exited' }), 0);
    assert.is(sample(text, 'vfio_runtime_worker_restarts_total', d0), 0);
    assert.is(sample(text, 'vfio_runtime_worker_restarts_total', d1), 1);
    assert.is(sample(text, 'vfio_runtime_worker_starts_total', d1), 2);
    assert.is(sample(text, 'vfio_runtime_bar_trapped_bytes', { ...d0, bar: '0' }), 256);
    assert.is(sample(text, 'vfio_runtime_bar_mapped_bytes', { ...d0, bar: '0' }), 0);
    assert.is(sample(text, 'vfio_runtime_ring_depth', d0), 0);
    assert.is(sample(text, 'vfio_runtime_ring_capacity', d0), 16);
    // The histogram: one sample per LAT_SAMPLE_MASK+1 requests for BAR0, cumulative buckets,
    // +Inf = count, a positive sum.
    const hist = 'vfio_runtime_ring_request_duration_seconds';
    const samples = 64 / (LAT_SAMPLE_MASK + 1);
    assert.is(sample(text, `${hist}_count`, { ...d0, bar: '0' }), samples);
    assert.is(sample(text, `${hist}_bucket`, { ...d0, bar: '0', le: '+Inf' }), samples);
    assert.ok(sample(text, `${hist}_sum`, { ...d0, bar: '0' }) > 0);
    const buckets = text
      .split('\n')
      .filter((l) => l.startsWith(`${hist}_bucket{`) && l.includes('device="dev0"'))
      .map((l) => Number(l.slice(l.lastIndexOf(' ') + 1)));
    assert.is(buckets.length, 16);
    assert.ok(
      buckets.every((b, i) => i === 0 || b >= buckets[i - 1]!),
      'cumulative',
    );
    assert.ok(Number.isNaN(sample(text, `${hist}_count`, d1)), 'no samples, no series');
    assert.is(sample(text, 'vfio_runtime_dma_operations_total', { op: 'map' }), 1);
    assert.is(
      sample(text, 'vfio_runtime_dma_kernel_failures_total', { op: 'map', errno: 'ENOMEM' }),
      1,
    );
    // Conventions: one prefix; every declared family in the output; counters end in _total.
    for (const line of text.split('\n').filter((l) => l && !l.startsWith('#')))
      assert.ok(line.startsWith('vfio_runtime_'), line);
    for (const [name, { type }] of declaredFamilies()) {
      assert.ok(text.includes(`# TYPE ${name} ${type}`), `${name} declared`);
      if (type === 'counter') assert.ok(name.endsWith('_total'), name);
    }
    if (!existsSync(PROMTOOL)) {
      console.log(`skip promtool: ${PROMTOOL} missing (Debian package prometheus)`);
      return;
    }
    const r = spawnSync(PROMTOOL, ['check', 'metrics'], { input: text, encoding: 'utf8' });
    assert.is(`${r.stdout}${r.stderr}`.trim(), '', 'promtool check metrics: no problem');
    assert.is(r.status, 0);
  } finally {
    await fx.close();
  }
});

test('docs/metrics.md lists every exported family', () => {
  const doc = readFileSync(new URL('../../../docs/metrics.md', import.meta.url), 'utf8');
  for (const name of declaredFamilies().keys())
    assert.ok(doc.includes(`\`${name}\``), `${name} is missing from docs/metrics.md`);
});

test('exporter: a scrape reads shared memory once and sees new counts on the next', async () => {
  const fx = await metricsFixture(1);
  try {
    const registry = new Registry();
    registerRuntimeMetrics(registry, fx.source);
    const c = fx.handles[0]!.client();
    c.call(OP.NOP, 0, 0, 0);
    await served(fx.handles[0]!, 1);
    const a = await registry.metrics();
    c.call(OP.NOP, 0, 0, 0);
    await served(fx.handles[0]!, 2);
    const b = await registry.metrics();
    assert.is(sample(a, 'vfio_runtime_ring_served_total'), 1);
    assert.is(sample(b, 'vfio_runtime_ring_served_total'), 2);
  } finally {
    await fx.close();
  }
});

test.run();
