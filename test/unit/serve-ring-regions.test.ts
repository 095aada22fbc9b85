// RingRegions (src/serve/ring-regions.ts), a vfio-user client's region accesses as ring
// requests, against the simulated device server of test/support/ring-threads.ts (BAR0 in
// memory): unaligned and odd-length accesses come back byte for byte, long ones go in bulk
// blocks, and what the worker refuses is the errno it means.
import { Worker } from 'node:worker_threads';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { RingClient } from '../../src/ring/client.js';
import { createRingBuffer } from '../../src/ring/protocol.js';
import { closeRing } from '../../src/ring/server.js';
import { RegionIoError, RingRegions } from '../../src/serve/ring-regions.js';
import { supportUrl } from '../support/threads.js';

const ring = createRingBuffer({ capacity: 16, bulkBytes: 256 });
const server = new Worker(supportUrl('ring-threads.js'), {
  workerData: { role: 'sim-server', ring },
});
const io = new RingRegions(new RingClient(ring));
const errnoOf = (fn: () => void): string => {
  try {
    fn();
  } catch (e) {
    if (e instanceof RegionIoError) return e.errnoName;
    throw e;
  }
  return 'no error';
};

test('odd lengths at odd offsets, written and read back byte for byte', () => {
  for (const [at, n] of [
    [3, 13],
    [1, 1],
    [6, 2],
    [0x101, 37],
  ] as const) {
    const data = Uint8Array.from({ length: n }, (_, i) => (at * 7 + i * 13) & 0xff);
    io.write(0, BigInt(at), data);
    const back = new Uint8Array(n);
    io.read(0, BigInt(at), back);
    assert.equal([...back], [...data], `${n} bytes at ${at}`);
  }
});

test('longer than the bulk block: in several bulk requests', () => {
  const n = 1000,
    data = Uint8Array.from({ length: n }, (_, i) => (i * 31) & 0xff);
  io.write(0, 0x2000n, data);
  const back = new Uint8Array(n);
  io.read(0, 0x2000n, back);
  assert.equal([...back], [...data]);
});

test('what the worker refuses is its errno', () => {
  assert.is(
    errnoOf(() => io.read(1, 0n, new Uint8Array(4))),
    'EINVAL',
    'a BAR it does not have',
  );
  assert.is(
    errnoOf(() => io.read(0, 0xfffffn, new Uint8Array(4))),
    'EINVAL',
    'past the BAR',
  );
  assert.is(
    errnoOf(() => io.read(7, 0n, new Uint8Array(4))),
    'EINVAL',
    'config: not this device',
  );
});

test('the server stops', async () => {
  closeRing(ring);
  await server.terminate();
});

test.run();
