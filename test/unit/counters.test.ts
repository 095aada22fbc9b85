// The declared counter schema: slots dense and unique, the old STAT keys at their old slots,
// error slots in STATUS order, and readCounters/statsRecord reading by the declaration.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createDeviceMemory } from '../../src/device/shared-state.js';
import { IRQ, irqViews, SRC } from '../../src/irq/irq-state.js';
import { readCounters, statsRecord } from '../../src/metrics/read-counters.js';
import {
  C_BAR_READS,
  C_ERR_NOT_READY,
  C_LOST,
  C_SERVED,
  type CounterDecl,
  errorSlot,
  STATS,
  STATS_SLOTS,
} from '../../src/metrics/schema.js';
import { STATUS, statusName } from '../../src/ring/protocol.js';

const decls: readonly CounterDecl[] = STATS;

test('every stats slot is declared once; the keys STAT had keep their slots', () => {
  const keys = decls.map((d) => d.key);
  assert.is(new Set(keys).size, keys.length, 'keys unique');
  assert.is(
    decls.reduce((n, d) => n + (d.count ?? 1), 0),
    STATS_SLOTS,
  );
  const old = [
    'CFG_READ',
    'CFG_WRITE',
    'BAR_READ',
    'BAR_WRITE',
    'NOP',
    'BYTES_READ',
    'BYTES_WRITTEN',
    'MSIX_TABLE',
    'MSIX_PBA',
    'ERR_BAD_OP',
    'ERR_BAD_BAR',
    'ERR_OUT_OF_RANGE',
    'ERR_BAD_WIDTH',
    'ERR_MISALIGNED',
    'ERR_IO',
    'ERR_NOT_READY',
    'WORKER_STARTS',
  ];
  assert.equal(keys.slice(0, old.length), old);
  for (const d of decls) {
    assert.ok(
      /^vfio_runtime_[a-z_]+$/.test(d.name) && !d.name.endsWith('_total'),
      `${d.key}: metric name ${d.name}`,
    );
    assert.ok(d.help.length > 10, `${d.key} has help`);
    assert.ok(
      (d.count === undefined) === (d.indexLabel === undefined),
      `${d.key}: an array names its index label`,
    );
  }
});

test('errorSlot maps each error STATUS to its declared key', () => {
  const keyOf = (s: number): string => `ERR_${statusName(s) === 'IO_ERROR' ? 'IO' : statusName(s)}`;
  for (let s = STATUS.BAD_OP; s >= STATUS.NOT_READY; s--) {
    const rec = statsRecord(bump(errorSlot(s)));
    assert.is((rec as Record<string, number>)[keyOf(s)], 1, statusName(s));
  }
  assert.is(errorSlot(STATUS.NOT_READY), C_ERR_NOT_READY);
});

function bump(slot: number): SharedArrayBuffer {
  const m = createDeviceMemory();
  new Float64Array(m.stats)[slot] = 1;
  return m.stats;
}

test('readCounters: rows by declaration, per-BAR labels, interrupt counters of the sources that counted', () => {
  const m = createDeviceMemory();
  const s = new Float64Array(m.stats);
  s[C_BAR_READS + 2] = 7;
  s[C_SERVED] = 11;
  s[C_LOST] = 1;
  const v = irqViews(m.irq);
  v.FIRED[SRC.MSIX + 3] = 5;
  v.PENDED[SRC.MSI + 1] = 2;
  v.hdr[IRQ.ROUTE_UPDATES] = 4;
  const rows = readCounters(m);
  const find = (name: string, labels: Record<string, string>): number | undefined =>
    rows.find((r) => r.name === name && JSON.stringify(r.labels) === JSON.stringify(labels))?.value;
  assert.is(find('vfio_runtime_bar_accesses', { direction: 'read', bar: '2' }), 7);
  assert.is(find('vfio_runtime_bar_accesses', { direction: 'read', bar: '0' }), 0);
  assert.is(find('vfio_runtime_ring_served', {}), 11);
  assert.is(find('vfio_runtime_ring_lost', {}), 1);
  assert.is(find('vfio_runtime_ring_requests', { op: 'cfg_read' }), 0);
  assert.is(find('vfio_runtime_irq_fired', { kind: 'msix', vector: '3' }), 5);
  assert.is(find('vfio_runtime_irq_pended', { kind: 'msi', vector: '1' }), 2);
  assert.is(find('vfio_runtime_irq_route_updates', {}), 4);
  assert.is(
    rows.filter((r) => r.name === 'vfio_runtime_irq_fired').length,
    1,
    'sources that never fired have no row',
  );
  const rec = statsRecord(m.stats);
  assert.is(rec.BAR_READS_2, 7);
  assert.is(rec.SERVED, 11);
  assert.throws(
    () => statsRecord(new SharedArrayBuffer(8)),
    /smaller than the schema's \d+ slots \(allocate it with createDeviceMemory\)/,
  );
});

test.run();
