// The supervisor over a synthetic device (the real worker body, without VFIO): a worker killed,
// crashed, hung in JS or stuck in a kernel call is detected and restarted with its state, or the
// device is failed and its requests complete at once; the request the dying worker had taken
// completes once as WORKER_DIED; injected faults are counted. Requests that meet a fault come
// from other threads: this thread runs the supervisor and must not block on the ring.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DeviceHandle } from '../../src/coordinator/device-handle.js';
import { Supervisor, type SupervisorEvent } from '../../src/coordinator/supervisor.js';
import { DeviceFailedError } from '../../src/errors.js';
import { OP, STATUS } from '../../src/ring/protocol.js';
import { countRefused } from '../../src/vmm/pci-bus.js';
import { STAT } from '../../src/vmm/shared.js';
import { collectStats } from '../../src/vmm/stats.js';
import { until } from '../support/poll.js';
import { describeNewFds, processState, settledState } from '../support/process-state.js';
import { barWords, DOORBELL, FAIL_SETUP, HANG, HANG_SEEN } from '../support/synthetic-device.js';
import { runThread, supportUrl } from '../support/threads.js';

const workerUrl = supportUrl('synthetic-device-worker.js');
const start = (name: string, stopGraceMs = 300): Promise<DeviceHandle> =>
  DeviceHandle.start({
    name,
    device: { fd: -1, path: 'synthetic' },
    workerUrl,
    ring: { capacity: 8, bulkBytes: 64 },
    faults: {},
    stopGraceMs,
  });
const write = (ring: SharedArrayBuffer, offset: number): Promise<number> =>
  runThread<number>('lost-request.js', { role: 'one-write', ring, offset });
const row = (h: DeviceHandle, name: string, labels: Record<string, string> = {}): number =>
  h
    .counters()
    .find((r) => r.name === name && Object.entries(labels).every(([k, v]) => r.labels[k] === v))
    ?.value ?? Number.NaN;

test('a killed worker is restarted with its state; its taken request completes once as WORKER_DIED', async () => {
  const h = await start('sup-kill');
  const sup = Supervisor.watch(h, { watchdogMs: 400 });
  const events: SupervisorEvent[] = [];
  sup.onEvent((e) => events.push(e));
  try {
    const c = h.client({ spinUs: 50, waitSliceMs: 20 });
    c.barWrite(0, 0x10, 4, 0x55aa);
    h.injectFault('kill'); // served (the doorbell rings), then the worker ends uncompleted
    assert.is(await write(h.ring, DOORBELL), STATUS.WORKER_DIED);
    await until('the restart', () => sup.restarts === 1 && sup.state === 'running');
    assert.is(c.barRead(0, 0x10, 4), 0x55aa, 'state kept');
    assert.is(c.barRead(0, DOORBELL, 4), 1, 'the lost write happened once, never replayed');
    assert.equal(
      events.map((e) => e.kind),
      ['exit', 'restarted'],
    );
    assert.ok(sup.recoveries[0]! > 0 && sup.recoveries[0]! < 5000, `${sup.recoveries[0]} ms`);
    assert.is(row(h, 'vfio_runtime_supervisor_restarts'), 1);
    assert.is(row(h, 'vfio_runtime_supervisor_failures', { reason: 'exit' }), 1);
    assert.is(row(h, 'vfio_runtime_faults_injected', { kind: 'kill' }), 1);
    assert.is(row(h, 'vfio_runtime_supervisor_state', { state: 'running' }), 1);
    assert.ok(row(h, 'vfio_runtime_worker_heartbeats') > 0);
  } finally {
    await sup.stop();
    await h.shutdown();
  }
});

test('a crash (uncaught error) is told apart from an exit; a handler that throws only fails its request', async () => {
  const h = await start('sup-crash');
  const sup = Supervisor.watch(h, { watchdogMs: 400 });
  try {
    h.injectFault('throw');
    assert.is(await write(h.ring, 0x20), STATUS.IO_ERROR, 'thrown: IO_ERROR, the worker lives');
    assert.is(sup.restarts, 0);
    h.injectFault('crash');
    assert.is(await write(h.ring, 0x24), STATUS.OK, 'served, then the worker dies');
    await until('the restart', () => sup.restarts === 1 && sup.state === 'running');
    const crash = sup.events.find((e) => e.kind === 'crash');
    assert.match(crash?.detail ?? '', /injected fault/);
    assert.is(h.client().barRead(0, 0x24, 4), 1);
  } finally {
    await sup.stop();
    await h.shutdown();
  }
});

test('a worker hung in its handler: the watchdog restarts it, the hung request WORKER_DIED', async () => {
  const h = await start('sup-hang');
  const sup = Supervisor.watch(h, { watchdogMs: 300, checkMs: 50 });
  try {
    const t0 = performance.now();
    const hung = write(h.ring, HANG);
    await until('the hang', () => Atomics.load(barWords(h.memory.state), HANG_SEEN / 4) === 1);
    assert.is(await hung, STATUS.WORKER_DIED);
    await until('the restart', () => sup.state === 'running' && sup.restarts === 1);
    const ms = performance.now() - t0;
    assert.ok(ms >= 300 && ms < 5000, `detected and restarted in ${ms.toFixed(0)} ms`);
    assert.is(sup.events[0]?.kind, 'hang');
    assert.is(h.client({ spinUs: 50 }).call(OP.NOP, 0, 0, 0), STATUS.OK);
  } finally {
    await sup.stop();
    await h.shutdown();
  }
});

test('a worker stuck in a kernel call: the device fails, requests complete at once, the stuck thread never writes the ring', async () => {
  const h = await start('sup-stuck', 200);
  const other = await start('sup-other');
  const sup = Supervisor.watch(h, { watchdogMs: 300, checkMs: 50 });
  try {
    h.injectFault('hang'); // read() on an empty eventfd: terminate() cannot interrupt it
    const stuck = write(h.ring, 0x30);
    await until('the device to fail', () => sup.state === 'failed');
    assert.is(await stuck, STATUS.WORKER_DIED, 'the request it had taken');
    assert.is(h.state, 'failed');
    assert.is(h.failure?.reason, 'stuck');
    const c = h.client({ spinUs: 50, waitSliceMs: 20 });
    const t0 = performance.now();
    assert.is(c.call(OP.BAR_WRITE, 0, 0x34, 4, 9), STATUS.DEVICE_FAILED);
    assert.ok(performance.now() - t0 < 100, 'at once');
    assert.throws(
      () => c.barRead(0, 0x10, 4),
      (e: unknown) => e instanceof DeviceFailedError,
    );
    await h.stats().then(
      () => assert.unreachable(),
      (e: unknown) => assert.instance(e, DeviceFailedError),
    );
    assert.is(other.client().call(OP.NOP, 0, 0, 0), STATUS.OK, 'another device keeps serving');
    // The kernel call returns: the thread ends; it completed nothing and took nothing more.
    let ended = false;
    h.onExit(() => {
      ended = true;
    });
    assert.ok(h.releaseHang(), 'it was blocked in read()');
    await until('the stuck thread to end', () => ended);
    for (let i = 0; i < 20; i++) assert.is(c.call(OP.NOP, 0, 0, 0), STATUS.DEVICE_FAILED);
    // Counted before each completion: exact. Served is counted just after it.
    assert.is(row(h, 'vfio_runtime_ring_errors', { status: 'DEVICE_FAILED' }), 22);
    // Only the failing server completed: 22 refused and the stuck one's request (lost).
    await until('served = 23', () => row(h, 'vfio_runtime_ring_served') === 23, 1000);
    await new Promise((r) => setTimeout(r, 50));
    assert.is(row(h, 'vfio_runtime_ring_served'), 23);
    assert.is(row(h, 'vfio_runtime_ring_lost'), 1);
    assert.is(row(h, 'vfio_runtime_supervisor_failures', { reason: 'stuck' }), 1);
    assert.is(row(h, 'vfio_runtime_supervisor_state', { state: 'failed' }), 1);
  } finally {
    await sup.stop();
    await h.shutdown();
    await other.shutdown();
  }
});

test('restarts are bounded: past maxRestarts in the window the device is failed', async () => {
  const h = await start('sup-bound');
  const sup = Supervisor.watch(h, { watchdogMs: 400, maxRestarts: 2, windowMs: 60_000 });
  try {
    for (let i = 0; i < 3; i++) {
      h.injectFault('kill');
      assert.is(await write(h.ring, DOORBELL), STATUS.WORKER_DIED, `kill ${i + 1}`);
      await until('the supervisor to settle', () => sup.state !== 'restarting');
    }
    assert.is(sup.state, 'failed');
    assert.is(sup.restarts, 2);
    assert.is(h.failure?.reason, 'restarts');
    assert.is(await write(h.ring, 0x40), STATUS.DEVICE_FAILED);
  } finally {
    await sup.stop();
    await h.shutdown();
  }
});

test('a restart whose worker fails to set up is tried again within the budget, then the device fails', async () => {
  const h = await start('sup-retry');
  const sup = Supervisor.watch(h, { maxRestarts: 3 });
  const bar = barWords(h.memory.state);
  try {
    Atomics.store(bar, FAIL_SETUP / 4, 1); // the next setup fails once
    await h.worker.terminate();
    await until('the second try', () => sup.state === 'running' && sup.restarts === 1);
    assert.equal(
      sup.events.map((e) => e.kind),
      ['exit', 'spawn', 'restarted'],
    );
    Atomics.store(bar, FAIL_SETUP / 4, 10); // every setup fails: the budget runs out
    await h.worker.terminate();
    await until('the device to fail', () => sup.state === 'failed');
    assert.is(h.failure?.reason, 'restarts');
    // Budget 3: the first restart took two tries, the second one try, then no more.
    assert.is(row(h, 'vfio_runtime_supervisor_failures', { reason: 'spawn' }), 2);
    assert.is(await write(h.ring, 0x40), STATUS.DEVICE_FAILED);
  } finally {
    await sup.stop();
    await h.shutdown();
  }
});

test('100 restarts (from warm standbys), then teardown: the fds and threads of before', async () => {
  const before = processState();
  const h = await DeviceHandle.start({
    name: 'sup-leak',
    device: { fd: -1, path: 'synthetic' },
    workerUrl,
    ring: { capacity: 8, bulkBytes: 64 },
    standby: true,
  });
  const sup = Supervisor.watch(h, { maxRestarts: 1000 });
  const c = h.client({ spinUs: 50, waitSliceMs: 20 });
  try {
    c.barWrite(0, 0x10, 4, 77);
    for (let i = 1; i <= 100; i++) {
      await h.worker.terminate(); // as a crash would end it
      await until(`restart ${i}`, () => sup.restarts === i && sup.state === 'running');
    }
    assert.is(c.barRead(0, 0x10, 4), 77, 'state kept across 100 restarts');
    const ms = [...sup.recoveries].sort((a, b) => a - b);
    console.log(
      `    100 restarts: recovery p50 ${ms[50]!.toFixed(1)} ms, p99 ${ms[98]!.toFixed(1)} ms`,
    );
  } finally {
    await sup.stop();
    await h.shutdown();
  }
  const after = await settledState(before);
  assert.equal(
    after.fds,
    before.fds,
    `fds (new: ${describeNewFds(before, after)}; threads ${after.threads}, before ${before.threads})`,
  );
  assert.is(after.threads, before.threads, 'threads');
});

test('the VMM counts a lost access and one to a failed device within the refused ones', () => {
  const stats = new Float64Array(STAT.WORDS);
  countRefused(stats, 0, STATUS.WORKER_DIED);
  countRefused(stats, 0, STATUS.DEVICE_FAILED);
  countRefused(stats, 0, STATUS.OUT_OF_RANGE);
  const v = collectStats(stats, 1, []);
  assert.equal([v.refused, v.lost, v.failed], [3, 1, 1]);
});

test.run();
