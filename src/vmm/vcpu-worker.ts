// One vCPU's thread: KVM_RUN in a loop, each exit handled here synchronously (devices.ts), until
// the VM ends. It loads its own koffi/libc (koffi types are per thread), maps its own kvm_run
// page, and takes the fds (process-wide) by number. The main thread kicks it out of a blocking
// KVM_RUN (halted, or an AP waiting for SIPI) with SIGUSR2 through pthread_kill; the per-vCPU
// state word makes sure no kick can reach a thread that has left (see vcpu-threads.ts).
import {
  type MessagePort,
  parentPort,
  receiveMessageOnPort,
  workerData,
} from 'node:worker_threads';
import { errnoName } from '../../native/errno.js';
import * as kvm from '../../native/kvm.js';
import { offsetOf } from '../../native/layout.js';
import { C, errno, MAP_FAILED, raw, view } from '../../native/libc.js';
import { RingClient } from '../threads.js';
import { BarSlots } from './bar-slots.js';
import { ConsoleWriter } from './console.js';
import { ExitDevices, topPorts } from './devices.js';
import { PciBus } from './pci-bus.js';
import { CTL, END, endVm, SAMPLE_EVERY, STAT } from './shared.js';
import { UART_IRQ, Uart } from './uart.js';
import { leaveThread, VCPU_STATE } from './vcpu-threads.js';

export interface VcpuWorkerData {
  index: number;
  vcpuFd: number;
  vmFd: number;
  runSize: number;
  ctl: SharedArrayBuffer;
  bars: SharedArrayBuffer;
  slots: SharedArrayBuffer;
  stats: SharedArrayBuffer;
  state: SharedArrayBuffer;
  tids: SharedArrayBuffer;
  /** Per PCI slot (index = slot - 1); null: empty. */
  rings: (SharedArrayBuffer | null)[];
  console: SharedArrayBuffer;
  /** Where the main thread sends {index, ring} when a function is hot-plugged or removed. */
  plug?: MessagePort;
}

const d = workerData as VcpuWorkerData;
const K = kvm.KVM_C;
const EINTR = 4,
  EAGAIN = 11;
const ctl = new Int32Array(d.ctl);
const stats = new Float64Array(d.stats);
const s = d.index * STAT.WORDS;
const state = new Int32Array(d.state);

// kvm_run offsets, from the registered layout (checked against <linux/kvm.h>).
const O = {
  reason: offsetOf(kvm.kvm_run, 'exit_reason'),
  ioDir: offsetOf(kvm.kvm_run, 'exit.io.direction'),
  ioSize: offsetOf(kvm.kvm_run, 'exit.io.size'),
  ioPort: offsetOf(kvm.kvm_run, 'exit.io.port'),
  ioCount: offsetOf(kvm.kvm_run, 'exit.io.count'),
  ioData: offsetOf(kvm.kvm_run, 'exit.io.data_offset'),
  mmioAddr: offsetOf(kvm.kvm_run, 'exit.mmio.phys_addr'),
  mmioData: offsetOf(kvm.kvm_run, 'exit.mmio.data'),
  mmioLen: offsetOf(kvm.kvm_run, 'exit.mmio.len'),
  mmioWrite: offsetOf(kvm.kvm_run, 'exit.mmio.is_write'),
  exitWord: offsetOf(kvm.kvm_run, 'exit'),
};

// ---- console: bytes batched per line in the VM's shared console buffer (console.ts; a
// message per byte would cost more than the exit)
const consoleOut = new ConsoleWriter(d.console, (c) =>
  parentPort!.postMessage({ type: 'console', seq: c.seq, bytes: c.bytes }),
);

// ---- ISA IRQ line (KVM_IRQ_LINE on the VM fd); the buffer is reused
const irqBuf = Buffer.alloc(kvm.kvm_irq_level.size);
function setIrq(level: number): void {
  irqBuf.writeUInt32LE(UART_IRQ, 0);
  irqBuf.writeUInt32LE(level, 4);
  if (raw.ioctlPtr(d.vmFd, kvm.KVM.KVM_IRQ_LINE, irqBuf) < 0)
    fail(`KVM_IRQ_LINE: ${errnoName(errno())}`);
}

function fail(message: string): void {
  parentPort!.postMessage({ type: 'error', message: `vCPU ${d.index}: ${message}` });
  endVm(ctl, END.ERROR, d.index);
}

const clients = d.rings.map((r) => (r ? new RingClient(r) : undefined));
let pciGen = Atomics.load(ctl, CTL.PCI_GEN);

/**
 * An internal error's data words (struct kvm_run's internal: suberror, ndata, data[16]), which
 * say what KVM could not handle; for suberror 3 (an exit during event delivery) the event being
 * delivered, the exit reason and, for an NPF, the guest physical address.
 */
function internalData(run: DataView): string {
  const n = Math.min(run.getUint32(O.exitWord + 4, true), 16);
  const words = Array.from(
    { length: n },
    (_, i) => `0x${run.getBigUint64(O.exitWord + 8 + i * 8, true).toString(16)}`,
  );
  return n ? ` (data ${words.join(' ')})` : '';
}

/** Hot-plug: take the slots that changed since the last look (one load per exit otherwise). */
function replug(): void {
  pciGen = Atomics.load(ctl, CTL.PCI_GEN);
  for (let m = d.plug && receiveMessageOnPort(d.plug); m; m = receiveMessageOnPort(d.plug!)) {
    const { index, ring } = m.message as { index: number; ring: SharedArrayBuffer | null };
    clients[index] = ring ? new RingClient(ring) : undefined;
  }
}
const slots = new BarSlots(ctl, new Float64Array(d.slots), d.vmFd);
const pci = new PciBus(ctl, new Float64Array(d.bars), clients, stats, s, slots);
const uart = new Uart(ctl, setIrq, (b) => consoleOut.put(b));
const dev = new ExitDevices(ctl, uart, pci, stats, s);

// SIGUSR2 must reach this thread to end a blocking KVM_RUN: unblock it in case it was inherited blocked.
const set = Buffer.alloc(128);
set.writeUInt32LE(1 << (C.SIGUSR2 - 1), 0);
raw.pthread_sigmask(C.SIG_UNBLOCK, set, null);

const runAddr = raw.mmap(null, d.runSize, C.PROT_READ | C.PROT_WRITE, C.MAP_SHARED, d.vcpuFd, 0);
if (runAddr === MAP_FAILED) {
  fail(`mmap of kvm_run: ${errnoName(errno())}`);
} else {
  new BigUint64Array(d.tids)[d.index] = BigInt(raw.pthread_self());
  Atomics.store(state, d.index, VCPU_STATE.RUNNING);
  try {
    loop(new DataView(view(runAddr, d.runSize)));
  } catch (e) {
    fail(`exit handling threw: ${(e as Error).stack ?? e}`);
  }
  leaveThread(state, d.index);
  raw.munmap(runAddr, d.runSize);
}
uart.locked(() => consoleOut.flush()); // a last line without its newline
parentPort!.postMessage({ type: 'ports', top: topPorts(dev.unknownPorts, 12) });

function loop(run: DataView): void {
  const page = new Uint8Array(run.buffer);
  let n = 0;
  while (Atomics.load(ctl, 0) === 0) {
    const r = raw.ioctlInt(d.vcpuFd, kvm.KVM.KVM_RUN, 0);
    const timing = ++n % SAMPLE_EVERY === 0;
    const t0 = timing ? performance.now() : 0;
    dev.timing = pci.timing = timing;
    if (r < 0) {
      const e = errno();
      if (e === EINTR || e === EAGAIN) {
        stats[s + STAT.INTR]!++;
        continue;
      }
      fail(`KVM_RUN: ${errnoName(e)}`);
      return;
    }
    stats[s + STAT.EXITS]!++;
    if (Atomics.load(ctl, CTL.PCI_GEN) !== pciGen) replug();
    const reason = run.getUint32(O.reason, true);
    stats[s + STAT.BUSY] = 1;
    stats[s + STAT.LAST_REASON] = reason;
    stats[s + STAT.LAST_ADDR] =
      reason === K.KVM_EXIT_IO
        ? run.getUint16(O.ioPort, true)
        : reason === K.KVM_EXIT_MMIO
          ? run.getUint32(O.mmioAddr, true) + run.getUint32(O.mmioAddr + 4, true) * 2 ** 32
          : 0;
    switch (reason) {
      case K.KVM_EXIT_IO: {
        stats[s + STAT.IO]!++;
        const size = run.getUint8(O.ioSize),
          port = run.getUint16(O.ioPort, true),
          count = run.getUint32(O.ioCount, true);
        // data_offset lies inside the kvm_run mapping: its low word is all of it (no BigInt per exit).
        let at = run.getUint32(O.ioData, true);
        const write = run.getUint8(O.ioDir) === K.KVM_EXIT_IO_OUT;
        for (let i = 0; i < count; i++, at += size) {
          if (write) {
            dev.outPort(
              port,
              size,
              size === 1
                ? page[at]!
                : size === 2
                  ? run.getUint16(at, true)
                  : run.getUint32(at, true),
            );
          } else {
            const v = dev.inPort(port, size);
            if (size === 1) page[at] = v;
            else if (size === 2) run.setUint16(at, v, true);
            else run.setUint32(at, v, true);
          }
        }
        break;
      }
      case K.KVM_EXIT_MMIO: {
        stats[s + STAT.MMIO]!++;
        const addr =
          run.getUint32(O.mmioAddr, true) + run.getUint32(O.mmioAddr + 4, true) * 2 ** 32;
        const len = run.getUint32(O.mmioLen, true),
          write = run.getUint8(O.mmioWrite) !== 0;
        let lo = 0,
          hi = 0;
        if (write) {
          if (len >= 4) {
            lo = run.getUint32(O.mmioData, true);
            if (len === 8) hi = run.getUint32(O.mmioData + 4, true);
          } else lo = len === 2 ? run.getUint16(O.mmioData, true) : page[O.mmioData]!;
          dev.mmio(addr, len, true, lo, hi);
        } else {
          lo = dev.mmio(addr, len, false, 0, 0);
          if (len >= 4) {
            run.setUint32(O.mmioData, lo, true);
            if (len === 8) run.setUint32(O.mmioData + 4, dev.hi, true);
          } else if (len === 2) run.setUint16(O.mmioData, lo, true);
          else page[O.mmioData] = lo;
        }
        break;
      }
      case K.KVM_EXIT_HLT:
        stats[s + STAT.HLT]!++;
        break;
      case K.KVM_EXIT_INTR:
        stats[s + STAT.INTR]!++;
        break;
      case K.KVM_EXIT_SHUTDOWN:
        endVm(ctl, END.SHUTDOWN, 0);
        break;
      case K.KVM_EXIT_SYSTEM_EVENT: {
        const type = run.getUint32(O.exitWord, true); // 1 shutdown, 2 reset
        endVm(ctl, type === 2 ? END.RESET : END.SHUTDOWN, 0);
        break;
      }
      case K.KVM_EXIT_FAIL_ENTRY:
        fail(
          `KVM_EXIT_FAIL_ENTRY, hardware reason 0x${run.getBigUint64(O.exitWord, true).toString(16)}`,
        );
        return;
      case K.KVM_EXIT_INTERNAL_ERROR:
        fail(
          `KVM_EXIT_INTERNAL_ERROR, suberror ${run.getUint32(O.exitWord, true)}${internalData(run)}`,
        );
        return;
      default:
        fail(`unexpected KVM exit reason ${reason}`);
        return;
    }
    if (timing) {
      stats[s + STAT.EXIT_MS]! += performance.now() - t0;
      stats[s + STAT.SAMPLED]!++;
    }
    stats[s + STAT.BUSY] = 0;
  }
}
