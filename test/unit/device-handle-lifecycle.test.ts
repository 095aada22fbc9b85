// DeviceHandle's worker lifecycle over a synthetic device (the real worker body, startDeviceWorker,
// without VFIO): state, the exit event, respawn() on the same ring and shared state, and what
// happens to the requests a dying worker had taken (WORKER_DIED) or queued (served once).

import { MessageChannel } from 'node:worker_threads';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Comlink, nodeEndpoint } from '../../src/control/comlink-node.js';
import { DeviceHandle, type DeviceWorkerExitEvent } from '../../src/coordinator/device-handle.js';
import { createDeviceMemory } from '../../src/device/shared-state.js';
import type { DeviceControl } from '../../src/device/worker-contract.js';
import { startDeviceWorker } from '../../src/device/worker-main.js';
import { WorkerExitedError } from '../../src/errors.js';
import { createRingBuffer, OP, STATUS } from '../../src/ring/protocol.js';
import { until } from '../support/poll.js';
import { barWords, DOORBELL, HANG, HANG_SEEN, syntheticDeps } from '../support/synthetic-device.js';
import { runThread, supportUrl } from '../support/threads.js';

const workerUrl = supportUrl('synthetic-device-worker.js');
const start = (): Promise<DeviceHandle> =>
  DeviceHandle.start({
    name: 'syn0',
    device: { fd: -1, path: 'synthetic' },
    workerUrl,
    ring: { capacity: 8, bulkBytes: 64 },
  });

test('startDeviceWorker runs on any port: a test drives its control API in this thread', async () => {
  const ch = new MessageChannel();
  const memory = createDeviceMemory();
  const w = startDeviceWorker(
    {
      name: 'syn',
      fd: -1,
      path: 'synthetic',
      ring: createRingBuffer({ capacity: 4, bulkBytes: 64 }),
      memory,
    },
    ch.port1,
    syntheticDeps,
  );
  const api = Comlink.wrap<DeviceControl>(nodeEndpoint(ch.port2));
  try {
    assert.is((await api.ready()).path, 'synthetic');
    const st = await api.stats();
    assert.is(st.WORKER_STARTS, 1);
    assert.is(st.BAR_READS_0, 0, 'per-BAR counters are in the record');
    assert.is(st.served, 0);
  } finally {
    await api.shutdown(false);
    ch.port1.close();
    ch.port2.close();
  }
  assert.is(w.server.served, 0);
});

test('a worker that dies: state exited, an exit event, calls reject; respawn resumes it on the same ring', async () => {
  const handle = await start();
  const exits: DeviceWorkerExitEvent[] = [];
  handle.onExit((e) => exits.push(e));
  const bar = barWords(handle.memory.state);
  try {
    assert.is(handle.state, 'running');
    const c = handle.client({ spinUs: 50, waitSliceMs: 20 });
    c.barWrite(0, 0x10, 4, 0x1234);
    // Another thread's write hangs the handler; three more requests queue behind it.
    const fatal = runThread<number>('lost-request.js', {
      role: 'one-write',
      ring: handle.ring,
      offset: HANG,
    });
    await until('the handler to hang', () => Atomics.load(bar, HANG_SEEN / 4) === 1);
    const queued = [
      c.submit(OP.BAR_WRITE, 0, DOORBELL, 4, 1),
      c.submit(OP.BAR_WRITE, 0, 0x20, 4, 7),
      c.submit(OP.BAR_READ, 0, 0x10, 4),
    ];
    await handle.worker.terminate();
    await until('the exit event', () => exits.length === 1);
    assert.is(handle.state, 'exited');
    assert.equal(
      { planned: exits[0]!.planned, incarnation: exits[0]!.incarnation },
      { planned: false, incarnation: 1 },
    );
    try {
      await handle.stats();
      assert.unreachable();
    } catch (e) {
      assert.instance(e, WorkerExitedError);
    }

    const description = await handle.respawn();
    assert.is(handle.state, 'running');
    assert.is(description.path, 'synthetic (restored)', 'the new worker resumed the shared state');
    assert.is(await fatal, STATUS.WORKER_DIED, 'the request the dead worker had taken');
    const statuses = queued.map((t) => {
      const s = c.await(t);
      c.release(t);
      return s;
    });
    assert.equal(statuses, [STATUS.OK, STATUS.OK, STATUS.OK]);
    assert.is(c.lo, 0x1234, 'the read queued behind it sees the state the first worker left');
    assert.is(c.barRead(0, DOORBELL, 4), 1, 'the queued doorbell write was served once');
    assert.is(c.barRead(0, 0x20, 4), 7);
    const st = await handle.stats();
    assert.is(st.WORKER_STARTS, 2);
    assert.is(st.LOST, 1);
    const rows = handle.counters();
    assert.is(rows.find((r) => r.name === 'vfio_runtime_ring_lost')?.value, 1);
    assert.is(rows.find((r) => r.name === 'vfio_runtime_worker_starts')?.value, 2);
  } finally {
    await handle.shutdown();
  }
  assert.is(handle.state, 'stopped');
  assert.equal(
    exits.map((e) => [e.incarnation, e.planned]),
    [
      [1, false],
      [2, true],
    ],
  );
  await handle.respawn().then(
    () => assert.unreachable(),
    (e: Error) => assert.match(e.message, /shut down/),
  );
});

test('respawn() of a running worker ends it as planned and starts the next', async () => {
  const handle = await start();
  const exits: DeviceWorkerExitEvent[] = [];
  const off = handle.onExit((e) => exits.push(e));
  try {
    const c = handle.client({ spinUs: 50, waitSliceMs: 20 });
    c.barWrite(0, 0x40, 4, 5);
    await handle.respawn();
    assert.is(handle.state, 'running');
    assert.equal(
      exits.map((e) => [e.incarnation, e.planned]),
      [[1, true]],
    );
    assert.is(c.barRead(0, 0x40, 4), 5);
    assert.is(c.call(OP.NOP, 0, 0, 0), STATUS.OK);
    assert.is((await handle.stats()).WORKER_STARTS, 2);
    off();
  } finally {
    await handle.shutdown();
  }
  assert.is(exits.length, 1, 'unsubscribed');
});

test('respawn() of a worker stuck in its handler: terminated after the grace period, the stuck request WORKER_DIED', async () => {
  const handle = await DeviceHandle.start({
    name: 'syn1',
    device: { fd: -1, path: 'synthetic' },
    workerUrl,
    ring: { capacity: 8, bulkBytes: 64 },
    stopGraceMs: 200,
  });
  const bar = barWords(handle.memory.state);
  try {
    const stuck = runThread<number>('lost-request.js', {
      role: 'one-write',
      ring: handle.ring,
      offset: HANG,
    });
    await until('the handler to hang', () => Atomics.load(bar, HANG_SEEN / 4) === 1);
    const t0 = performance.now();
    await handle.respawn();
    assert.ok(
      performance.now() - t0 < 5000,
      `respawned in ${(performance.now() - t0).toFixed(0)} ms`,
    );
    assert.is(await stuck, STATUS.WORKER_DIED);
    assert.is(handle.client({ spinUs: 50, waitSliceMs: 20 }).call(OP.NOP, 0, 0, 0), STATUS.OK);
  } finally {
    await handle.shutdown();
  }
});

test.run();
