// The interrupt poller thread and the host listener, with real eventfds (no device needed): a
// firing on a DIRECT source reaches the host callback, others go to the worker's doorbell; new
// eventfds are picked up through the control eventfd; stop() wakes the blocked poll().
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createEventfd, signalEventfd } from '../../src/irq/eventfd.js';
import { createIrqState, IRQ, irqViews, SRC, takeBits } from '../../src/irq/irq-state.js';
import { type InterruptEvent, IrqPoller, VmmIrqListener } from '../../src/irq/poller.js';
import { until } from '../support/poll.js';

test('firings reach the host callback (DIRECT) or the worker doorbell; new eventfds are adopted', async () => {
  const sab = createIrqState();
  const v = irqViews(sab);
  const events: InterruptEvent[] = [];
  const poller = IrqPoller.start(sab, 'test');
  const listener = new VmmIrqListener(sab, (e) => events.push(e));
  const fds = [createEventfd(), createEventfd(), createEventfd()];
  const publish = (): void => {
    Atomics.add(v.hdr, IRQ.GEN, 1);
    signalEventfd(Atomics.load(v.hdr, IRQ.CTL_FD));
  };
  try {
    v.USER_FD[SRC.MSIX + 3] = fds[0]!.fd;
    v.DIRECT[SRC.MSIX + 3] = 1;
    v.USER_FD[SRC.MSI + 0] = fds[1]!.fd;
    v.DIRECT[SRC.MSI + 0] = 1;
    publish();
    await until('the poller to adopt the eventfds', () => poller.current);
    signalEventfd(fds[0]!.fd);
    await until('the MSI-X event', () => events.length === 1);
    assert.equal(events[0], { kind: 'msix', vector: 3, count: 1 });
    signalEventfd(fds[1]!.fd, 2n);
    await until('the MSI event', () => events.length === 2);
    assert.equal(events[1], { kind: 'msi', vector: 0, count: 2 });
    assert.equal([v.FIRED[3], v.DELIVERED[3], v.FIRED[SRC.MSI]], [1, 1, 2]);
    // Not DIRECT (masked, or KVM mode): the worker's doorbell, not the host.
    const seq = Atomics.load(v.hdr, IRQ.WORKER_SEQ);
    v.USER_FD[SRC.INTX] = fds[2]!.fd;
    publish();
    await until('adoption', () => poller.current);
    signalEventfd(fds[2]!.fd);
    await until('the worker doorbell', () => Atomics.load(v.hdr, IRQ.WORKER_SEQ) !== seq);
    const slots: number[] = [];
    takeBits(v.TO_WORKER, (s) => slots.push(s));
    assert.equal(slots, [SRC.INTX]);
    assert.is(events.length, 2, 'nothing went to the host');
  } finally {
    listener.stop();
    const t0 = performance.now();
    await poller.stop();
    assert.ok(performance.now() - t0 < 400, 'stop wakes poll() instead of waiting for its timeout');
    for (const f of fds) f.close();
  }
});

test.run();
