// The VMM's PCI bus with functions that come and go (hot-plug): an empty slot reads all ones, a
// function plugged into it answers through its ring, and one whose ring closed under the vCPU (a
// surprise removal) reads all ones, config space and BARs, with the refusals counted, never a
// throw out of the exit path.
import { Worker } from 'node:worker_threads';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { RingClient } from '../../src/ring/client.js';
import { createRingBuffer } from '../../src/ring/protocol.js';
import { closeRing } from '../../src/ring/server.js';
import { ExitDevices } from '../../src/vmm/devices.js';
import { KIND_MEM32, PciBus } from '../../src/vmm/pci-bus.js';
import { BAR, BARS, CTL, MAX_DEVICES, STAT } from '../../src/vmm/shared.js';
import { initUart, Uart } from '../../src/vmm/uart.js';
import { supportUrl } from '../support/threads.js';

test('empty slot, plugged, closed under the vCPU: all ones, answers, all ones', async () => {
  const ring = createRingBuffer();
  const worker = new Worker(supportUrl('vmm-device-thread.js'), {
    workerData: { role: 'fake-pci', ring },
  });
  const ctl = new Int32Array(new SharedArrayBuffer(CTL.COUNT * 4));
  const bars = new Float64Array(MAX_DEVICES * BARS * BAR.WORDS);
  const stats = new Float64Array(STAT.WORDS);
  initUart(ctl);
  const clients: (RingClient | undefined)[] = [];
  const bus = new PciBus(ctl, bars, clients, stats, 0);
  const uart = new Uart(
    ctl,
    () => {},
    () => {},
  );
  const dev = new ExitDevices(ctl, uart, bus, stats, 0);
  const vendor = (slot: number): number => {
    dev.outPort(0xcf8, 4, (0x80000000 | (slot << 11)) >>> 0);
    return dev.inPort(0xcfc, 4);
  };
  try {
    assert.is(vendor(3), 0xffffffff, 'slot 3 is empty');
    clients[2] = new RingClient(ring);
    const id = vendor(3);
    assert.ok(id !== 0xffffffff, `slot 3 answers once plugged (0x${id.toString(16)})`);
    bars[2 * BARS * BAR.WORDS + BAR.SIZE] = 0x1000;
    bars[2 * BARS * BAR.WORDS + BAR.KIND] = KIND_MEM32;
    bars[2 * BARS * BAR.WORDS + BAR.BASE] = 0xd0000000;
    bars[2 * BARS * BAR.WORDS + BAR.ACTIVE] = 1;
    // The device goes away under the vCPU as the runtime removes it: its server stops, then the
    // ring is closed.
    await worker.terminate();
    closeRing(ring);
    assert.is(vendor(3), 0xffffffff, 'a closed ring reads all ones in config space');
    const refused = stats[STAT.REFUSED]!;
    assert.is(dev.mmio(0xd0000010, 4, false, 0, 0), 0xffffffff, 'and in its BAR');
    assert.is(stats[STAT.REFUSED], refused + 1, 'the refusal is counted');
    bus.refresh(2); // a BAR write's refresh on a closed ring does not throw
    clients[2] = undefined;
    assert.is(vendor(3), 0xffffffff, 'unplugged: empty again');
  } finally {
    await worker.terminate();
  }
});

test.run();
