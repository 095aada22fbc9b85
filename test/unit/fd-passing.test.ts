// SCM_RIGHTS through koffi: an eventfd sent over a socketpair arrives as a new fd on the same file.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { recvFds, sendFds, socketPair } from '../../src/control/fd-passing.js';
import { createEventfd, drainEventfd, signalEventfd } from '../../src/irq/eventfd.js';

test('an eventfd passed over SCM_RIGHTS is the same file under a new number', () => {
  const [a, b] = socketPair();
  const efd = createEventfd();
  const second = createEventfd();
  sendFds(a, [efd.fd, second.fd], Buffer.from('iommufd_fd,device_fd'));
  const { payload, fds } = recvFds(b);
  assert.is(payload.toString(), 'iommufd_fd,device_fd');
  assert.is(fds.length, 2);
  assert.ok(fds[0]!.fd !== efd.fd, 'a new fd number');
  signalEventfd(fds[0]!.fd, 5n);
  assert.is(drainEventfd(efd.fd), 5n, 'same eventfd behind both numbers');
  for (const f of [...fds, efd, second, a, b]) f.close();
});

test('a message without fds, and too many fds for the receiver', () => {
  const [a, b] = socketPair();
  sendFds(a, [], Buffer.from('hello'));
  const r = recvFds(b);
  assert.equal([r.payload.toString(), r.fds.length], ['hello', 0]);
  const efds = [createEventfd(), createEventfd(), createEventfd()];
  sendFds(
    a,
    efds.map((e) => e.fd),
  );
  assert.throws(() => recvFds(b, 1), /more than 1 fds were sent/);
  for (const f of [...efds, a, b]) f.close();
});

test.run();
