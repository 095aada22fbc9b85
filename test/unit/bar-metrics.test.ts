// describe()'s per-BAR summary (mappable and trapped ranges, accesses that reached the ring, the
// peer mapping) and its Prometheus export, from a description, counter rows and peer results.
import { Registry } from 'prom-client';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { barSummaries } from '../../src/coordinator/bar-summary.js';
import type { RuntimeDescription } from '../../src/coordinator/runtime.js';
import type { DeviceDescription } from '../../src/device/assigned-device.js';
import type { PeerAreaResult } from '../../src/dma/peer-bars.js';
import { registerPeerBarMetrics } from '../../src/metrics/bars.js';
import type { CounterRow } from '../../src/metrics/read-counters.js';

const bar = (index: number, mappable: [number, number][], trapped: [number, number][]) =>
  ({ index, size: '0x4000', io: false, mappable, trapped }) as DeviceDescription['bars'][number];
const desc = {
  bars: [bar(0, [[0, 0x2000]], [[0x2000, 0x4000]]), bar(2, [], [[0, 0x4000]])],
} as DeviceDescription;
const row = (bar: number, direction: string, value: number): CounterRow => ({
  name: 'vfio_runtime_bar_accesses',
  help: '',
  type: 'counter',
  unit: 'requests',
  labels: { direction, bar: String(bar) },
  value,
});
const ok: PeerAreaResult = {
  port: 'nvme0',
  bar: 0,
  backend: 'iommufd:ctx0',
  via: 'dma-buf',
  iova: '0xc0000000',
  offset: 0,
  size: 0x2000,
  ok: true,
};
const failed: PeerAreaResult = {
  ...ok,
  backend: 'container:vfio-container',
  via: 'host-address',
  ok: false,
  errno: 'EFAULT',
  reason: 'x',
};

test('per BAR: ranges, bytes, ring accesses and the peer mapping', () => {
  const s = barSummaries(
    desc,
    [row(0, 'read', 7), row(0, 'write', 3), row(2, 'read', 9)],
    [{ bar: 0, iova: '0xc0000000', results: [ok, failed] }],
  );
  assert.equal(s[0], {
    index: 0,
    size: '0x4000',
    mappable: ['0x0-0x2000'],
    trapped: ['0x2000-0x4000'],
    mappableBytes: 0x2000,
    trappedBytes: 0x2000,
    ringReads: 7,
    ringWrites: 3,
    peers: { iova: '0xc0000000', results: [ok, failed] },
  });
  assert.equal(
    [s[1]!.mappableBytes, s[1]!.trappedBytes, s[1]!.ringReads, s[1]!.peers],
    [0, 0x4000, 9, undefined],
  );
});

test("exported: peer areas by result, totals (per BAR bytes are the exporter's)", async () => {
  const devices = [
    {
      port: 'nvme0',
      bars: barSummaries(desc, [], [{ bar: 0, iova: '0xc0000000', results: [ok, failed] }]),
    },
  ] as RuntimeDescription['devices'];
  const reg = new Registry();
  registerPeerBarMetrics(reg, () => devices, { maps: 3, unmaps: 1, failedAreas: 2 });
  const text = await reg.metrics();
  for (const line of [
    'vfio_runtime_p2p_bar_areas{device="nvme0",bar="0",backend="iommufd:ctx0",via="dma-buf",result="mapped"} 1',
    'vfio_runtime_p2p_bar_areas{device="nvme0",bar="0",backend="container:vfio-container",via="host-address",result="EFAULT"} 1',
    'vfio_runtime_p2p_bar_maps_total 3',
    'vfio_runtime_p2p_bar_unmaps_total 1',
    'vfio_runtime_p2p_bar_map_failures_total 2',
  ])
    assert.ok(text.includes(line), `${line}\n---\n${text}`);
});

test.run();
