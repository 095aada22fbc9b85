// The interrupt poller: one small thread per device, blocked in poll() on the device's userspace
// eventfds (VFIO triggers of masked or unrouted vectors, or of every vector in relay mode) plus a
// control eventfd. Each firing is counted in shared memory and reported straight to the VMM
// (relay, vector deliverable: DIRECT) or to the device worker, which owns the pending bits.
import { workerData } from 'node:worker_threads';
import { errnoNumber } from '../native/errno.js';
import { C, errno, pollfd, raw } from '../native/libc.js';
import { IRQ, irqViews, reportToVmm, reportToWorker, SRC } from '../src/irq/irq-state.js';

export interface PollerData {
  irq: SharedArrayBuffer;
  name: string;
}

const { irq, name } = workerData as PollerData;
const v = irqViews(irq);
const hdr = v.hdr;
const EINTR = errnoNumber('EINTR');
const EAGAIN = errnoNumber('EAGAIN');
const TIMEOUT_MS = 500; // a bound on how long a missed stop can go unseen
const counter = Buffer.alloc(8);

let fds = Buffer.alloc(pollfd.size);
let slots = new Int32Array(1);
let nfds = 0;
let adopted = -1;

function rebuild(): void {
  const list: number[] = [];
  for (let s = 0; s < SRC.COUNT; s++) if (Atomics.load(v.USER_FD, s) >= 0) list.push(s);
  nfds = list.length + 1;
  fds = Buffer.alloc(nfds * pollfd.size);
  slots = new Int32Array(nfds);
  const at = (i: number, fd: number): void => {
    fds.writeInt32LE(fd, i * pollfd.size);
    fds.writeInt16LE(C.POLLIN, i * pollfd.size + 4);
  };
  at(0, Atomics.load(hdr, IRQ.CTL_FD));
  list.forEach((s, i) => {
    at(i + 1, Atomics.load(v.USER_FD, s));
    slots[i + 1] = s;
  });
}

/** Read an eventfd's counter (low 32 bits); 0 if nothing was there. */
function take(fd: number): number {
  const r = raw.read(fd, counter, 8);
  if (r === 8) return counter.readUInt32LE(0) || 1;
  if (r < 0 && errno() !== EAGAIN) Atomics.add(hdr, IRQ.POLLER_ERRORS, 1);
  return 0;
}

while (Atomics.load(hdr, IRQ.STOP) === 0) {
  const gen = Atomics.load(hdr, IRQ.GEN);
  if (gen !== adopted) {
    rebuild();
    adopted = gen;
    Atomics.store(hdr, IRQ.ACK, gen);
    Atomics.notify(hdr, IRQ.ACK);
  }
  const n = raw.poll(fds, nfds, TIMEOUT_MS);
  if (n < 0) {
    if (errno() === EINTR) continue;
    Atomics.add(hdr, IRQ.POLLER_ERRORS, 1);
    console.error(`irq poller ${name}: poll failed, errno ${errno()}`);
    break;
  }
  if (n === 0) continue;
  for (let i = 0; i < nfds; i++) {
    const off = i * pollfd.size;
    const rev = fds.readInt16LE(off + 6);
    if (rev === 0) continue;
    const fd = fds.readInt32LE(off);
    if (rev & (C.POLLERR | C.POLLHUP | C.POLLNVAL)) {
      // Closed under us: stop polling it until the worker publishes a new set.
      fds.writeInt32LE(-1, off);
      Atomics.add(hdr, IRQ.POLLER_ERRORS, 1);
      continue;
    }
    const k = take(fd);
    if (i === 0 || k === 0) continue;
    const s = slots[i]!;
    Atomics.add(v.FIRED, s, k);
    if (Atomics.load(v.DIRECT, s) === 1) reportToVmm(v, s, k);
    else reportToWorker(v, s);
  }
}
