// eventfd helpers: create, signal, drain, and wait for readability.

import { errnoNumber } from '../../native/errno.js';
import { C, check, errno, pollfd, raw } from '../../native/libc.js';
import { OwnedFd } from '../fd.js';

const EAGAIN = errnoNumber('EAGAIN');
const counter = Buffer.alloc(8);

export function createEventfd(flags = C.EFD_NONBLOCK): OwnedFd {
  const fd = check(raw.eventfd(0, flags | C.EFD_CLOEXEC), 'eventfd', 'new eventfd');
  return new OwnedFd(fd, `eventfd ${fd}`);
}

export function signalEventfd(fd: number, n = 1n): void {
  counter.writeBigUInt64LE(n);
  check(raw.write(fd, counter, 8), 'write', `eventfd ${fd}`);
}

/** Read and reset the counter of a non-blocking eventfd; 0n when nothing was signalled. */
export function drainEventfd(fd: number): bigint {
  const r = raw.read(fd, counter, 8);
  if (r < 0) {
    if (errno() === EAGAIN) return 0n;
    check(r, 'read', `eventfd ${fd}`);
  }
  return counter.readBigUInt64LE();
}

/** Wait up to timeoutMs for any fd to become readable; returns the indexes that are. */
export function pollReadable(fds: readonly number[], timeoutMs: number): number[] {
  const buf = Buffer.alloc(fds.length * pollfd.size);
  fds.forEach((fd, i) => {
    buf.writeInt32LE(fd, i * pollfd.size);
    buf.writeInt16LE(C.POLLIN, i * pollfd.size + 4);
  });
  const n = check(raw.poll(buf, fds.length, timeoutMs), 'poll', `${fds.length} eventfds`);
  if (n === 0) return [];
  return fds.map((_, i) => i).filter((i) => buf.readInt16LE(i * pollfd.size + 6) & C.POLLIN);
}
