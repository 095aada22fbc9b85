// The ring across real threads: a simulated device served in a worker, several producer
// threads, every request completed exactly once with the right answer; malformed requests,
// back-pressure on a small ring, and closing.

import { Worker } from 'node:worker_threads';
import koffi from 'koffi';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { RingClient, RingClosedError, RingError } from '../../src/ring/client.js';
import {
  attentionSignal,
  createRingBuffer,
  H_CAPACITY,
  H_FULL_WAITERS,
  H_HEAD,
  H_TAIL,
  OP,
  ringGeometry,
  ringOffset,
  ringU8,
  ringWords,
  S_DATA,
  STATUS,
  slotWord,
} from '../../src/ring/protocol.js';
import { closeRing, RingServer } from '../../src/ring/server.js';
import type { ProducerJob, ProducerResult } from '../support/ring-threads.js';
import { simulatedHandler } from '../support/ring-threads.js';
import { runThread, supportUrl } from '../support/threads.js';

function simServer(ring: SharedArrayBuffer): { stop: () => Promise<number> } {
  const w = new Worker(supportUrl('ring-threads.js'), { workerData: { role: 'sim-server', ring } });
  return {
    stop: () =>
      new Promise((resolve) => {
        w.once('message', (m: { served: number }) => {
          void w.terminate();
          resolve(m.served);
        });
        w.postMessage('stop');
      }),
  };
}

test("a ring starts on a cache-line boundary whatever its buffer's alignment", () => {
  const seen = new Set<number>();
  for (let i = 0; i < 32; i++) {
    const ring = createRingBuffer({ capacity: 4 << (i % 3), bulkBytes: 8 * (i % 5) });
    seen.add(ringOffset(ring));
    assert.is(
      Number((koffi.address(ringU8(ring)) as bigint) % 64n),
      0,
      `ring ${i} at offset ${ringOffset(ring)}`,
    );
    assert.is(Atomics.load(ringWords(ring), H_CAPACITY), 4 << (i % 3));
  }
  assert.ok(
    [...seen].every((b) => b % 16 === 0 && b < 64),
    `offsets ${[...seen]}`,
  );
  assert.throws(() => ringGeometry(new SharedArrayBuffer(1024)), /not a device ring/);
  const odd = new SharedArrayBuffer(1024);
  new Int32Array(odd)[255] = 8;
  assert.throws(() => ringWords(odd), /bad alignment word/);
});

test('4 producer threads × 2 rings: every request completes once, correctly', async () => {
  const rings = [
    createRingBuffer({ capacity: 16, bulkBytes: 256 }),
    createRingBuffer({ capacity: 16, bulkBytes: 256 }),
  ];
  const servers = rings.map(simServer);
  const perProducer = 10_000;
  const jobs: ProducerJob[] = [0, 1, 2, 3].map((p) => ({
    role: 'producer',
    rings,
    requests: perProducer,
    seed: 1234 + p,
    scratch: rings.map(() => ({ bar: 0, offset: 0x1000 + p * 0x400, bytes: 0x400 })),
    probe: rings.map(() => ({ bar: 0, offset: 0x40, value: 0x40 })),
  }));
  const results = await Promise.all(
    jobs.map((j) => runThread<ProducerResult>('ring-threads.js', j)),
  );
  const served = await Promise.all(servers.map((s) => s.stop()));
  for (const r of results) {
    assert.equal(r.errors, []);
    assert.equal(r.mismatches, []);
    assert.is(r.done, perProducer);
  }
  // Each producer request is one ring call, except write+read-back which is two.
  assert.ok(served[0]! + served[1]! >= 4 * perProducer, `served ${served}`);
  for (const ring of rings)
    assert.is(
      Atomics.load(ringWords(ring), H_TAIL),
      Atomics.load(ringWords(ring), H_HEAD),
      'tail == head: nothing left in flight',
    );
});

test('malformed requests get their status and the server keeps serving', async () => {
  const ring = createRingBuffer({ capacity: 8, bulkBytes: 64 });
  const w = simServer(ring);
  const c = new RingClient(ring);
  assert.is(c.call(99, 0, 0, 4), STATUS.BAD_OP);
  assert.is(c.call(OP.BAR_READ, 3, 0, 4), STATUS.BAD_BAR);
  assert.is(c.call(OP.BAR_READ, 0, 65536, 4), STATUS.OUT_OF_RANGE);
  assert.is(c.call(OP.BAR_READ, 0, 0, 3), STATUS.BAD_WIDTH);
  assert.is(c.call(OP.BAR_READ, 0, 0, 65), STATUS.BAD_WIDTH, 'larger than the bulk area');
  assert.is(c.call(OP.BAR_READ, 0, 0x40, 4), STATUS.OK);
  assert.is(c.lo, 0x40);
  await w.stop();
});

test('typed accessors throw RingError naming the request', async () => {
  const ring = createRingBuffer({ capacity: 8, bulkBytes: 64 });
  const w = simServer(ring);
  const c = new RingClient(ring);
  assert.is(c.barRead(0, 0x80, 4), 0x80);
  c.barWrite64(0, 0x100, 0x1122334455667788n);
  assert.is(c.barRead64(0, 0x100), 0x1122334455667788n);
  const bulk = new Uint8Array(48).map((_, i) => i);
  c.barWriteBulk(0, 0x200, bulk);
  const back = new Uint8Array(48);
  c.barReadBulk(0, 0x200, back);
  assert.equal([...back], [...bulk]);
  try {
    c.barRead(0, 0x10000, 4);
    assert.unreachable();
  } catch (e) {
    assert.instance(e, RingError);
    assert.is((e as RingError).status, STATUS.OUT_OF_RANGE);
    assert.match((e as Error).message, 'BAR_READ BAR0 offset 0x10000 size 4: OUT_OF_RANGE');
  }
  await w.stop();
});

test('a full ring applies back-pressure; requests queued while no server runs are served by the next one', async () => {
  const ring = createRingBuffer({ capacity: 4, bulkBytes: 64 });
  const c = new RingClient(ring, { spinUs: 1, waitSliceMs: 5 });
  const tickets = [0, 1, 2, 3].map((i) => c.submit(OP.BAR_READ, 0, 0x10 * i, 4));
  // A fifth submit would block: the ring is full. Check that it is, without blocking.
  const h = ringWords(ring);
  assert.is(Atomics.load(h, H_TAIL) - Atomics.load(h, H_HEAD), 4, '4 in flight');
  const server = new RingServer(ring, simulatedHandler(4096));
  assert.is(server.drain(), 4, 'a later server serves what was queued');
  for (const [i, t] of tickets.entries()) {
    assert.is(c.await(t), STATUS.OK);
    c.release(t);
    assert.is(c.lo, 0x10 * i);
  }
});

test('inline data reaches the handler and its writes come back, whatever the status', () => {
  const ring = createRingBuffer({ capacity: 4, bulkBytes: 64 });
  const c = new RingClient(ring, { spinUs: 1, waitSliceMs: 5 });
  const seen: number[][] = [];
  const server = new RingServer(ring, (req) => {
    seen.push([...req.words!]);
    req.words![0] = req.words![0]! + 1;
    req.words![3] = 0x55;
    return req.op === OP.NOP ? STATUS.OK : STATUS.IO_ERROR;
  });
  const a = c.submit(OP.BAR_WRITE, 0, 0, 8, 41, 7);
  const b = c.submit(OP.NOP, 0, 0, 0, 99, 0);
  assert.is(server.drain(), 2);
  assert.equal(seen, [
    [41, 7, 0, 0],
    [99, 0, 0, 0],
  ]);
  assert.is(c.await(a), STATUS.IO_ERROR);
  c.release(a);
  assert.is(c.lo, 42);
  assert.is(c.hi, 7);
  assert.is(c.await(b), STATUS.OK);
  c.release(b);
  assert.is(c.lo, 100);
  assert.is(
    ringWords(ring)[slotWord(b & 3) + S_DATA + 3],
    0x55,
    'the whole inline area is copied back',
  );
});

test('offsets cross the ring intact: past 4 GiB, at the 32-bit edge, and negative ones stay out of any BAR', () => {
  const ring = createRingBuffer({ capacity: 8, bulkBytes: 64 });
  const c = new RingClient(ring, { spinUs: 1, waitSliceMs: 5 });
  const seen: number[] = [];
  const server = new RingServer(ring, (req) => {
    seen.push(req.offset);
    return STATUS.OK;
  });
  const offsets = [0, 0x1000, 0xfffffffc, 0x100000000, 0x3_0000_0010, -4];
  const tickets = offsets.map((o) => c.submit(OP.BAR_READ, 0, o, 4));
  assert.is(server.drain(), offsets.length);
  for (const t of tickets) {
    c.await(t);
    c.release(t);
  }
  assert.equal(seen.slice(0, 5), offsets.slice(0, 5));
  // A negative offset arrives as 2^64 - 4: larger than any BAR, never 4 GiB - 4 (inside a large one).
  assert.ok(seen[5]! > 2 ** 63, `-4 arrived as 0x${seen[5]!.toString(16)}`);
});

test('a producer blocked on a full ring is woken by the release of the slot it waits for', async () => {
  const ring = createRingBuffer({ capacity: 4, bulkBytes: 64 });
  const h = ringWords(ring);
  const c = new RingClient(ring, { spinUs: 1, waitSliceMs: 5 });
  const tickets = [0, 1, 2, 3].map((i) => c.submit(OP.BAR_READ, 0, 0x10 * i, 4));
  const other = runThread<{ status: number; ms: number }>('ring-threads.js', {
    role: 'one-call',
    ring,
  });
  // The other thread spins briefly, then sleeps (a 5 s slice) on slot 0's free word.
  for (let i = 0; i < 200 && Atomics.load(h, H_FULL_WAITERS) === 0; i++)
    await new Promise((r) => setTimeout(r, 5));
  assert.is(Atomics.load(h, H_FULL_WAITERS), 1, 'the fifth producer waits for a free slot');
  const server = new RingServer(ring, simulatedHandler(4096));
  assert.is(server.drain(), 4);
  const t0 = performance.now();
  assert.is(c.await(tickets[0]!), STATUS.OK);
  c.release(tickets[0]!);
  // Its request (ticket 4, in slot 0) appears without waiting for the end of its sleep slice.
  while (server.drain() === 0) await new Promise((r) => setTimeout(r, 1));
  const r = await other;
  assert.is(r.status, STATUS.OK);
  assert.ok(
    performance.now() - t0 < 2000,
    `woken by the release (${(performance.now() - t0).toFixed(0)} ms)`,
  );
  for (const t of tickets.slice(1)) {
    c.await(t);
    c.release(t);
  }
  assert.is(Atomics.load(h, H_TAIL), 5);
});

test('a server busy with requests turns its event loop when its attention word or a watched word moves', async () => {
  const ring = createRingBuffer({ capacity: 16, bulkBytes: 64 });
  const watch = new Int32Array(new SharedArrayBuffer(8)),
    stop = new SharedArrayBuffer(4);
  const server = new Worker(supportUrl('ring-threads.js'), {
    workerData: { role: 'busy-server', ring, watch: watch.buffer },
  });
  const producer = runThread<number>('ring-threads.js', { role: 'nop-loop', ring, stop });
  const h = ringWords(ring);
  const served = async (atLeast: number): Promise<boolean> => {
    for (
      const t0 = performance.now();
      performance.now() - t0 < 10_000;
      await new Promise((r) => setTimeout(r, 5))
    )
      if (Atomics.load(h, H_HEAD) >= atLeast) return true;
    return false;
  };
  const pong = (): Promise<string> =>
    new Promise((resolve) => server.once('message', () => resolve('pong')));
  const within = (p: Promise<string>, ms: number): Promise<string> =>
    Promise.race([p, new Promise<string>((r) => setTimeout(() => r('no answer'), ms))]);
  try {
    assert.ok(await served(10_000), 'the producer keeps the server busy');
    // It owes its event loop a turn only every 10 minutes: a plain post waits.
    let answer = pong();
    server.postMessage('ping');
    assert.is(
      await within(answer, 300),
      'no answer',
      'a post without a signal waits while the ring is busy',
    );
    const before = Atomics.load(h, H_HEAD);
    attentionSignal(ring)();
    assert.is(await within(answer, 10_000), 'pong', 'the attention signal gets the post read');
    assert.ok(await served(before + 1), 'still serving');
    answer = pong();
    server.postMessage('ping');
    Atomics.add(watch, 0, 1); // work for the event loop: word 0 ahead of word 1
    assert.is(await within(answer, 10_000), 'pong', 'a watched word gets the post read');
    assert.is(Atomics.load(watch, 1), Atomics.load(watch, 0), 'the event loop took the work');
  } finally {
    Atomics.store(new Int32Array(stop), 0, 1);
  }
  assert.ok((await producer) > 10_000);
  const stopped = new Promise<{ served: number }>((resolve) => server.once('message', resolve));
  server.postMessage('stop');
  attentionSignal(ring)(); // it would otherwise poll the idle ring for 10 s first
  assert.is((await stopped).served, Atomics.load(h, H_HEAD));
  await server.terminate();
});

test('closing the ring wakes a producer blocked on a full ring', async () => {
  const ring = createRingBuffer({ capacity: 4, bulkBytes: 64 });
  const c = new RingClient(ring, { spinUs: 1, waitSliceMs: 5 });
  for (let i = 0; i < 4; i++) c.submit(OP.NOP, 0, 0, 0);
  const other = runThread<{ status: number; ms: number }>('ring-threads.js', {
    role: 'one-call',
    ring,
  }).then(
    () => 'returned',
    (e: Error) => e.message,
  );
  for (let i = 0; i < 200 && Atomics.load(ringWords(ring), H_FULL_WAITERS) === 0; i++)
    await new Promise((r) => setTimeout(r, 5));
  const t0 = performance.now();
  closeRing(ring);
  assert.match(await other, /closed/);
  assert.ok(
    performance.now() - t0 < 2000,
    `woken by closeRing, not its 5 s sleep slice (${(performance.now() - t0).toFixed(0)} ms)`,
  );
});

test('closing the ring wakes a waiting producer with RingClosedError', () => {
  const ring = createRingBuffer({ capacity: 4, bulkBytes: 64 });
  const c = new RingClient(ring, { spinUs: 1, waitSliceMs: 5 });
  const t = c.submit(OP.NOP, 0, 0, 0);
  closeRing(ring);
  assert.throws(
    () => c.await(t),
    (e: unknown) => e instanceof RingClosedError,
  );
});

test.run();
