// The HTTP API's and the VMM's metrics (src/metrics/hosts.ts): the families declared in schema.ts
// (API_STATS, VCPU_STATS) exported with their labels and values after some fake increments, per
// vCPU and by exit reason, API requests by route and status from a live ApiServer's answers,
// docs/metrics.md listing every family; promtool (Debian's prometheus package) checks the text.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { Registry } from 'prom-client';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { serveApi } from '../../src/api/cli.js';
import { apiCall } from '../../src/api/client.js';
import { Runtime } from '../../src/coordinator/runtime.js';
import {
  apiFamilies,
  registerApiMetrics,
  registerVmMetrics,
  vmFamilies,
} from '../../src/metrics/hosts.js';
import { API_STAT, API_STATUSES, apiRequestSlot, VCPU_STAT } from '../../src/metrics/schema.js';
import { collectStats } from '../../src/vmm/stats.js';
import { sample } from '../support/metrics-fixture.js';

const PROMTOOL = '/usr/bin/promtool';

function promtool(text: string): void {
  if (!existsSync(PROMTOOL)) {
    console.log(`skip promtool: ${PROMTOOL} missing`);
    return;
  }
  const r = spawnSync(PROMTOOL, ['check', 'metrics'], { input: text, encoding: 'utf8' });
  assert.is(`${r.stdout}${r.stderr}`.trim(), '', 'promtool check metrics: no problem');
}

test('API metrics: connections, requests by route and status, rejections by status', async () => {
  const s = new Float64Array(API_STAT.WORDS);
  s[API_STAT.ACCEPTED] = 5;
  s[API_STAT.OPEN] = 2;
  s[API_STAT.FDS_RECEIVED] = 3;
  s[apiRequestSlot('vm.add-device', 200)] = 4;
  s[apiRequestSlot('vm.add-device', 409)] = 1;
  s[apiRequestSlot('none', 404)] = 2;
  s[apiRequestSlot('vm.info', 299)] = 1; // a status not listed: other
  s[API_STAT.REJECTED + API_STATUSES.indexOf('408')] = 6;
  const r = new Registry();
  registerApiMetrics(r, s);
  const text = await r.metrics();
  assert.is(sample(text, 'vfio_runtime_api_connections_accepted_total'), 5);
  assert.is(sample(text, 'vfio_runtime_api_connections_open'), 2);
  assert.is(sample(text, 'vfio_runtime_api_fds_received_total'), 3);
  const req = 'vfio_runtime_api_requests_total';
  assert.is(sample(text, req, { route: 'vm.add-device', status: '200' }), 4);
  assert.is(sample(text, req, { route: 'vm.add-device', status: '409' }), 1);
  assert.is(sample(text, req, { route: 'none', status: '404' }), 2);
  assert.is(sample(text, req, { route: 'vm.info', status: 'other' }), 1);
  assert.is(sample(text, 'vfio_runtime_api_requests_rejected_total', { status: '408' }), 6);
  assert.match(text, /# TYPE vfio_runtime_api_connections_open gauge/);
  promtool(text);
});

test('API metrics: a live server counts its answers by route and status', async () => {
  const rt = await Runtime.start({ iommu: [], vfio: [], memory: [] });
  const { server } = serveApi(rt, { tcpPort: 0 });
  try {
    const r = new Registry();
    server.registerMetrics(r);
    const get = (path: string) => apiCall(server.address, { method: 'GET', path });
    assert.is((await get('/api/v1/vm.info')).status, 200);
    assert.is((await get('/api/v1/vm.info')).status, 200);
    assert.is((await get('/api/v1/vm.nothing')).status, 404);
    assert.is((await get('/api/v1/vm.add-device')).status, 405);
    const text = await r.metrics();
    const req = 'vfio_runtime_api_requests_total';
    assert.is(sample(text, req, { route: 'vm.info', status: '200' }), 2);
    assert.is(sample(text, req, { route: 'none', status: '404' }), 1);
    assert.is(sample(text, req, { route: 'vm.add-device', status: '405' }), 1);
    assert.is(sample(text, req, { route: 'vm.counters', status: '200' }), 0);
    assert.is(sample(text, 'vfio_runtime_api_requests_received_total'), 4);
    assert.ok(sample(text, 'vfio_runtime_api_connections_accepted_total') >= 1);
  } finally {
    await server.close();
    await rt.shutdown();
  }
});

test('VMM metrics: exits by reason per vCPU, BAR accesses by device, sampled timing', async () => {
  const cpus = 2,
    W = VCPU_STAT.WORDS;
  const s = new Float64Array(cpus * W);
  s[VCPU_STAT.EXIT_IO] = 10;
  s[VCPU_STAT.EXIT_MMIO] = 4;
  s[W + VCPU_STAT.EXIT_MMIO] = 3;
  s[W + VCPU_STAT.EXIT_HLT] = 2;
  s[W + VCPU_STAT.EXIT_INTR] = 7;
  s[VCPU_STAT.EXIT_INTERNAL_ERROR] = 1;
  s[VCPU_STAT.CONFIG] = 8;
  s[VCPU_STAT.UNKNOWN_PIO] = 5;
  s[VCPU_STAT.DEVICE + 0] = 6;
  s[W + VCPU_STAT.DEVICE + 2] = 9;
  s[VCPU_STAT.EXIT_MS] = 1500;
  s[W + VCPU_STAT.BUSY] = 1;
  const devices = ['nvme0', '', 'nic0'];
  const r = new Registry();
  registerVmMetrics(r, { stats: s, cpus, devices: () => devices });
  const text = await r.metrics();
  const exits = 'vfio_runtime_vm_exits_total';
  assert.is(sample(text, exits, { vcpu: '0', reason: 'io' }), 10);
  assert.is(sample(text, exits, { vcpu: '0', reason: 'mmio' }), 4);
  assert.is(sample(text, exits, { vcpu: '1', reason: 'mmio' }), 3);
  assert.is(sample(text, exits, { vcpu: '1', reason: 'hlt' }), 2);
  assert.is(sample(text, exits, { vcpu: '1', reason: 'intr' }), 7);
  assert.is(sample(text, exits, { vcpu: '0', reason: 'internal_error' }), 1);
  assert.is(sample(text, exits, { vcpu: '1', reason: 'shutdown' }), 0);
  assert.is(sample(text, 'vfio_runtime_vm_pci_config_accesses_total', { vcpu: '0' }), 8);
  assert.is(
    sample(text, 'vfio_runtime_vm_unhandled_accesses_total', { vcpu: '0', space: 'pio' }),
    5,
  );
  const bar = 'vfio_runtime_vm_bar_accesses_total';
  assert.is(sample(text, bar, { vcpu: '0', device: 'nvme0' }), 6);
  assert.is(sample(text, bar, { vcpu: '1', device: 'nic0' }), 9);
  assert.not.match(text, /device=""/, 'an empty slot has no row');
  assert.is(
    sample(text, 'vfio_runtime_vm_sampled_exit_handling_seconds_total', { vcpu: '0' }),
    1.5,
  );
  assert.is(sample(text, 'vfio_runtime_vm_vcpu_busy', { vcpu: '1' }), 1);
  assert.match(text, /# TYPE vfio_runtime_vm_vcpu_busy gauge/);
  for (const line of text.split('\n').filter((l) => l && !l.startsWith('#')))
    assert.ok(line.startsWith('vfio_runtime_vm_'), line);
  promtool(text);
  // The VMM's own summary reads the same slots.
  const v = collectStats(s, cpus, devices);
  assert.equal([v.exits, v.io, v.mmio, v.hlt, v.interrupted], [20, 10, 7, 2, 7]);
  assert.equal(v.bar, { nvme0: 6, '': 0, nic0: 9 });
});

test('docs/metrics.md lists every API and VMM family', () => {
  const doc = readFileSync(new URL('../../../docs/metrics.md', import.meta.url), 'utf8');
  for (const name of [...apiFamilies().keys(), ...vmFamilies().keys()])
    assert.ok(doc.includes(`\`${name}\``), `${name} is missing from docs/metrics.md`);
});

test.run();
