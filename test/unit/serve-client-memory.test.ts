// ClientMemory (src/serve/client-memory.ts), the vfio-user clients' DMA maps as guest memory,
// over a real GuestMemory with fake IOMMU backends and real memfds: a map reaches the backends
// once however many connections make it, the last owner's unmap or departure unmaps it, maps
// that overlap other memory or repeat are refused with their errno, maps without an fd or
// read-only are recorded only, and no fd or mmap is left behind.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { GuestMemory } from '../../src/dma/guest-memory.js';
import { MemfdRegion } from '../../src/memory/memfd-region.js';
import { ClientMemory, ClientMemoryError } from '../../src/serve/client-memory.js';
import { FakeBackend } from '../support/fake-dma-backend.js';
import { openFds } from '../support/process-state.js';

const MiB = 1n << 20n;

function setup() {
  const backend = new FakeBackend('ctx0');
  backend.attach([{ start: 0n, last: 0xffffffffffn }]);
  const table = new GuestMemory();
  table.addBackend(backend);
  const host = {
    addMemory: (spec: Parameters<GuestMemory['addRegion']>[0]) => table.addRegion(spec),
    removeMemory: (r: Parameters<GuestMemory['removeRegion']>[0]) => void table.removeRegion(r),
  };
  return { backend, table, mem: new ClientMemory(host) };
}
const errnoOf = (fn: () => unknown): string => {
  try {
    fn();
  } catch (e) {
    if (e instanceof ClientMemoryError) return e.errnoName;
    throw e;
  }
  return 'no error';
};

test('one map, many connections: mapped once, unmapped by the last owner', () => {
  const before = openFds();
  const ram = new MemfdRegion('ram', Number(4n * MiB));
  const { backend, mem } = setup();
  const m = { iova: 0n, size: 4n * MiB, offset: 0n, fd: ram.fd, readOnly: false };
  assert.is(mem.map('nvme0#1', m), 'mapped');
  assert.is(mem.map('nvme1#1', m), 'shared');
  assert.is(backend.mappings().length, 1);
  mem.unmap('nvme0#1', 0n, 4n * MiB);
  assert.is(backend.mappings().length, 1, 'still held by nvme1');
  assert.is(mem.release('nvme1#1'), 1);
  assert.is(backend.mappings().length, 0);
  ram.close();
  assert.equal(openFds(), before, 'no fd left');
});

test('a map of other memory over a held one, or one repeated, is EEXIST', () => {
  const a = new MemfdRegion('a', Number(2n * MiB));
  const b = new MemfdRegion('b', Number(2n * MiB));
  const { mem } = setup();
  mem.map('c1', { iova: 0n, size: 2n * MiB, offset: 0n, fd: a.fd, readOnly: false });
  assert.is(
    errnoOf(() =>
      mem.map('c2', { iova: MiB, size: 2n * MiB, offset: 0n, fd: b.fd, readOnly: false }),
    ),
    'EEXIST',
  );
  assert.is(
    errnoOf(() =>
      mem.map('c2', { iova: 0n, size: 2n * MiB, offset: 0n, fd: b.fd, readOnly: false }),
    ),
    'EEXIST',
  );
  assert.is(
    errnoOf(() =>
      mem.map('c1', { iova: 0n, size: 2n * MiB, offset: 0n, fd: a.fd, readOnly: false }),
    ),
    'EEXIST',
  );
  mem.release('c1');
  a.close();
  b.close();
});

test('an unmap of what the connection does not hold is ENOENT', () => {
  const a = new MemfdRegion('a', Number(MiB));
  const { mem } = setup();
  mem.map('c1', { iova: 0n, size: MiB, offset: 0n, fd: a.fd, readOnly: false });
  assert.is(
    errnoOf(() => mem.unmap('c2', 0n, MiB)),
    'ENOENT',
  );
  assert.is(
    errnoOf(() => mem.unmap('c1', 0n, MiB / 2n)),
    'ENOENT',
  );
  mem.release('c1');
  a.close();
});

test('maps without an fd, or read-only, are recorded and never reach the IOMMU', () => {
  const a = new MemfdRegion('rom', Number(MiB));
  const { backend, mem } = setup();
  assert.is(mem.map('c1', { iova: 0x100000n, size: MiB, offset: 0n, readOnly: false }), 'recorded');
  assert.is(
    mem.map('c1', { iova: 0x200000n, size: MiB, offset: 0n, fd: a.fd, readOnly: true }),
    'recorded',
  );
  assert.is(backend.mappings().length, 0);
  assert.equal(
    mem.entries().map((e) => e.mapped),
    [false, false],
  );
  assert.is(mem.release('c1'), 2);
  a.close();
});

test('a map the kernel refuses leaves no entry, fd or mmap', () => {
  const before = openFds();
  const a = new MemfdRegion('ram', Number(MiB));
  const { backend, mem } = setup();
  backend.failNextMap = 'EFAULT';
  assert.throws(() =>
    mem.map('c1', { iova: 0n, size: MiB, offset: 0n, fd: a.fd, readOnly: false }),
  );
  assert.equal(mem.entries(), []);
  a.close();
  assert.equal(openFds(), before);
});

test.run();
