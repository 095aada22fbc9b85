// A request a dying server had taken is completed by its successor as STATUS.WORKER_DIED, not
// served again; requests it had not taken are served once each, and nobody waits forever.

import { Worker } from 'node:worker_threads';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { C_LOST, C_SERVED, STATS_SLOTS } from '../../src/metrics/schema.js';
import { RingClient, RingError, ringError } from '../../src/ring/client.js';
import {
  createRingBuffer,
  H_HEAD,
  H_TAKEN,
  OP,
  ringWords,
  S_SEQ,
  STATUS,
  slotWord,
  statusName,
} from '../../src/ring/protocol.js';
import { RingServer } from '../../src/ring/server.js';
import { countingHandler, HANG_OFFSET, HANGING } from '../support/lost-request.js';
import { until } from '../support/poll.js';
import { runThread, supportUrl } from '../support/threads.js';

const calls = (): Int32Array => new Int32Array(new SharedArrayBuffer(4 * 128));

test('taken before the handler ran: completed as WORKER_DIED, the queue behind it served once', () => {
  const ring = createRingBuffer({ capacity: 8, bulkBytes: 64 });
  const h = ringWords(ring),
    c = new RingClient(ring, { spinUs: 1, waitSliceMs: 5 });
  const tickets = [0x10, 0x20, 0x30].map((o) => c.submit(OP.BAR_WRITE, 0, o, 4, 1));
  // A server took ticket 0 (TAKEN = 1) and died in its handler: HEAD still 0.
  Atomics.store(h, H_TAKEN, 1);
  const n = calls(),
    counters = new Float64Array(STATS_SLOTS);
  const s = new RingServer(ring, countingHandler(n), { counters });
  assert.is(s.drain(), 2, 'the two untaken requests');
  assert.is(c.await(tickets[0]!), STATUS.WORKER_DIED);
  c.release(tickets[0]!);
  for (const t of tickets.slice(1)) {
    assert.is(c.await(t), STATUS.OK);
    c.release(t);
  }
  assert.equal(
    [n[0x10 / 4 + 1], n[0x20 / 4 + 1], n[0x30 / 4 + 1]],
    [0, 1, 1],
    'the lost one not replayed',
  );
  assert.is(s.lost, 1);
  assert.is(counters[C_LOST], 1);
  assert.is(
    counters[C_SERVED],
    Atomics.load(h, H_HEAD),
    'SERVED counts the lost completion: it equals HEAD',
  );
  assert.is(s.drain(), 0, 'recovery is idempotent');
  assert.is(s.lost, 1);
});

test('died after storing HEAD but before completing: completed as WORKER_DIED, HEAD not moved twice', () => {
  const ring = createRingBuffer({ capacity: 4, bulkBytes: 64 });
  const h = ringWords(ring),
    c = new RingClient(ring, { spinUs: 1, waitSliceMs: 5 });
  const a = c.submit(OP.BAR_WRITE, 0, 0x10, 4, 1),
    b = c.submit(OP.BAR_READ, 0, 0x20, 4);
  Atomics.store(h, H_TAKEN, a + 1);
  Atomics.store(h, H_HEAD, a + 1);
  const n = calls();
  assert.is(new RingServer(ring, countingHandler(n)).drain(), 1);
  assert.is(c.await(a), STATUS.WORKER_DIED);
  c.release(a);
  assert.is(c.await(b), STATUS.OK);
  c.release(b);
  assert.is(n[0x20 / 4 + 1], 1);
  assert.is(Atomics.load(h, H_HEAD), 2);
});

test('a completed request is never reported lost (TAKEN of a finished ticket, and of a slot reused since)', () => {
  const ring = createRingBuffer({ capacity: 4, bulkBytes: 64 });
  const c = new RingClient(ring, { spinUs: 1, waitSliceMs: 5 });
  const s = new RingServer(ring, countingHandler(calls()));
  for (let i = 0; i < 9; i++) {
    const t = c.submit(OP.BAR_READ, 0, 0x10, 4);
    assert.is(s.drain(), 1);
    assert.is(c.await(t), STATUS.OK);
    c.release(t);
    const next = new RingServer(ring, countingHandler(calls()));
    assert.is(next.drain(), 0);
    assert.is(next.lost, 0, `after ticket ${t}`);
  }
  assert.is(ringWords(ring)[slotWord(8 & 3) + S_SEQ], 10, 'ticket 8 completed');
});

test('a server thread terminated in its handler: the waiting producer gets WORKER_DIED, the queued requests are served once by the next server', async () => {
  const ring = createRingBuffer({ capacity: 8, bulkBytes: 64 });
  const n = calls();
  const dying = new Worker(supportUrl('lost-request.js'), {
    workerData: { role: 'hanging-server', ring, calls: n.buffer },
  });
  // Another thread makes the fatal call and sleeps on its slot; this thread queues three more.
  const fatal = runThread<number>('lost-request.js', {
    role: 'one-write',
    ring,
    offset: HANG_OFFSET,
  });
  await until('the handler to hang', () => Atomics.load(n, HANGING) === 1);
  const c = new RingClient(ring, { spinUs: 1, waitSliceMs: 5 });
  const queued = [0x10, 0x20, 0x30].map((o) => c.submit(OP.BAR_WRITE, 0, o, 4, 1));
  await dying.terminate();
  const next = new RingServer(ring, countingHandler(n));
  next.start();
  try {
    assert.is(await fatal, STATUS.WORKER_DIED, 'the lost request is completed, not left hanging');
    for (const t of queued) {
      assert.is(c.await(t), STATUS.OK);
      c.release(t);
    }
  } finally {
    await next.stop();
  }
  assert.is(n[HANG_OFFSET / 4 + 1], 1, 'the fatal write reached the handler once, not replayed');
  assert.equal(
    [n[0x10 / 4 + 1], n[0x20 / 4 + 1], n[0x30 / 4 + 1]],
    [1, 1, 1],
    'queued requests served once each',
  );
  assert.is(next.lost, 1);
});

test('typed accessors turn WORKER_DIED into a RingError that says the effect is unknown', () => {
  const ring = createRingBuffer({ capacity: 4, bulkBytes: 64 });
  const h = ringWords(ring);
  const c = new RingClient(ring, { spinUs: 1, waitSliceMs: 5 });
  Atomics.store(h, H_TAKEN, 1); // ticket 0 will look taken by a server that died
  const t = c.submit(OP.BAR_WRITE, 0, 0x10, 4, 1);
  new RingServer(ring, countingHandler(calls())).drain();
  const status = c.await(t);
  c.release(t);
  // What RingClient's accessors throw for a non-OK status.
  const e = ringError(status, 'BAR_WRITE BAR0 offset 0x10 size 4');
  assert.ok(e instanceof RingError && e.code === 'VFR_ERR_RING_REQUEST');
  assert.is(statusName(status), 'WORKER_DIED');
  assert.is(e.statusName, 'WORKER_DIED');
  assert.match(
    e.message,
    'BAR_WRITE BAR0 offset 0x10 size 4: WORKER_DIED (lost: the device worker died while handling it; effect unknown, not replayed)',
  );
});

test.run();
