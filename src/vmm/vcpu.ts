// One vCPU's thread body, `startVcpu(data, port)` (vcpu-worker.ts is the thread's entry): a run
// loop around KVM_RUN and one small handler per exit reason, as Firecracker's vstate/vcpu.rs
// (run loop, handle_kvm_exit), each exit handled here synchronously (devices.ts) until the VM
// ends. It loads its own koffi/libc (koffi types are per thread), maps its own kvm_run page, and
// takes the fds (process-wide) by number. The main thread kicks it out of a blocking KVM_RUN
// (halted, or an AP waiting for SIPI) with SIGUSR2 through pthread_kill; the per-vCPU state word
// makes sure no kick can reach a thread that has left (see vcpu-threads.ts).
import { type MessagePort, receiveMessageOnPort } from 'node:worker_threads';
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

/** Where the vCPU posts to the main thread: console lines, its unanswered ports, an error. */
export interface VcpuPort {
  postMessage(message: unknown): void;
}

const K = kvm.KVM_C;
const EINTR = 4,
  EAGAIN = 11;

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

/** Run vCPU `data.index` on this thread until the VM ends; `port` gets its messages. */
export function startVcpu(data: VcpuWorkerData, port: VcpuPort): void {
  new Vcpu(data, port).run();
}

class Vcpu {
  readonly #d: VcpuWorkerData;
  readonly #port: VcpuPort;
  readonly #ctl: Int32Array;
  readonly #stats: Float64Array;
  /** This vCPU's row in the stats (STAT words each). */
  readonly #s: number;
  readonly #state: Int32Array;
  readonly #console: ConsoleWriter;
  /** KVM_IRQ_LINE's argument, reused. */
  readonly #irqBuf = Buffer.alloc(kvm.kvm_irq_level.size);
  /** This thread's ring client per PCI slot (replug changes them; PciBus reads this array). */
  readonly #clients: (RingClient | undefined)[];
  #pciGen: number;
  readonly #pci: PciBus;
  readonly #uart: Uart;
  readonly #dev: ExitDevices;
  #run!: DataView;
  #page!: Uint8Array;

  constructor(d: VcpuWorkerData, port: VcpuPort) {
    this.#d = d;
    this.#port = port;
    this.#ctl = new Int32Array(d.ctl);
    this.#stats = new Float64Array(d.stats);
    this.#s = d.index * STAT.WORDS;
    this.#state = new Int32Array(d.state);
    // The console: bytes batched per line in the VM's shared console buffer (console.ts; a
    // message per byte would cost more than the exit).
    this.#console = new ConsoleWriter(d.console, (c) =>
      port.postMessage({ type: 'console', seq: c.seq, bytes: c.bytes }),
    );
    this.#clients = d.rings.map((r) => (r ? new RingClient(r) : undefined));
    this.#pciGen = Atomics.load(this.#ctl, CTL.PCI_GEN);
    const slots = new BarSlots(this.#ctl, new Float64Array(d.slots), d.vmFd);
    const bars = new Float64Array(d.bars);
    this.#pci = new PciBus(this.#ctl, bars, this.#clients, this.#stats, this.#s, slots);
    this.#uart = new Uart(
      this.#ctl,
      (level) => this.#setIrq(level),
      (b) => this.#console.put(b),
    );
    this.#dev = new ExitDevices(this.#ctl, this.#uart, this.#pci, this.#stats, this.#s);
  }

  /** Map kvm_run, run the loop, leave (no kick reaches this thread after), report the ports. */
  run(): void {
    const d = this.#d;
    // SIGUSR2 must reach this thread to end a blocking KVM_RUN: unblock it in case it was inherited blocked.
    const set = Buffer.alloc(128);
    set.writeUInt32LE(1 << (C.SIGUSR2 - 1), 0);
    raw.pthread_sigmask(C.SIG_UNBLOCK, set, null);
    const at = raw.mmap(null, d.runSize, C.PROT_READ | C.PROT_WRITE, C.MAP_SHARED, d.vcpuFd, 0);
    if (at === MAP_FAILED) {
      this.#fail(`mmap of kvm_run: ${errnoName(errno())}`);
    } else {
      new BigUint64Array(d.tids)[d.index] = BigInt(raw.pthread_self());
      Atomics.store(this.#state, d.index, VCPU_STATE.RUNNING);
      this.#run = new DataView(view(at, d.runSize));
      this.#page = new Uint8Array(this.#run.buffer);
      try {
        this.#loop();
      } catch (e) {
        this.#fail(`exit handling threw: ${(e as Error).stack ?? e}`);
      }
      leaveThread(this.#state, d.index);
      raw.munmap(at, d.runSize);
    }
    this.#uart.locked(() => this.#console.flush()); // a last line without its newline
    this.#port.postMessage({ type: 'ports', top: topPorts(this.#dev.unknownPorts, 12) });
  }

  /** KVM_RUN until the VM ends or this vCPU fails; one exit in SAMPLE_EVERY is timed. */
  #loop(): void {
    const stats = this.#stats,
      s = this.#s;
    let n = 0;
    while (Atomics.load(this.#ctl, CTL.ENDED) === 0) {
      const r = raw.ioctlInt(this.#d.vcpuFd, kvm.KVM.KVM_RUN, 0);
      const timing = ++n % SAMPLE_EVERY === 0;
      const t0 = timing ? performance.now() : 0;
      this.#dev.timing = this.#pci.timing = timing;
      if (r < 0) {
        if (this.#interrupted()) continue;
        return;
      }
      if (!this.#handleExit()) return;
      if (timing) {
        stats[s + STAT.EXIT_MS]! += performance.now() - t0;
        stats[s + STAT.SAMPLED]!++;
      }
      stats[s + STAT.BUSY] = 0;
    }
  }

  /** KVM_RUN failed: a signal (a kick) or EAGAIN runs again (true); anything else fails the vCPU. */
  #interrupted(): boolean {
    const e = errno();
    if (e === EINTR || e === EAGAIN) {
      this.#stats[this.#s + STAT.EXIT_INTR]!++;
      return true;
    }
    this.#fail(`KVM_RUN: ${errnoName(e)}`);
    return false;
  }

  /** One exit: counted and recorded, then its reason's handler; false: this vCPU stops. */
  #handleExit(): boolean {
    const run = this.#run,
      stats = this.#stats,
      s = this.#s;
    if (Atomics.load(this.#ctl, CTL.PCI_GEN) !== this.#pciGen) this.#replug();
    const reason = run.getUint32(O.reason, true);
    stats[s + STAT.BUSY] = 1;
    stats[s + STAT.LAST_REASON] = reason;
    stats[s + STAT.LAST_ADDR] =
      reason === K.KVM_EXIT_IO
        ? run.getUint16(O.ioPort, true)
        : reason === K.KVM_EXIT_MMIO
          ? this.#mmioAddr()
          : 0;
    switch (reason) {
      case K.KVM_EXIT_IO:
        this.#io();
        return true;
      case K.KVM_EXIT_MMIO:
        this.#mmio();
        return true;
      case K.KVM_EXIT_HLT:
        stats[s + STAT.EXIT_HLT]!++;
        return true;
      case K.KVM_EXIT_INTR:
        stats[s + STAT.EXIT_INTR]!++;
        return true;
      case K.KVM_EXIT_SHUTDOWN:
        stats[s + STAT.EXIT_SHUTDOWN]!++;
        endVm(this.#ctl, END.SHUTDOWN, 0);
        return true;
      case K.KVM_EXIT_SYSTEM_EVENT:
        stats[s + STAT.EXIT_SYSTEM_EVENT]!++;
        this.#systemEvent();
        return true;
      case K.KVM_EXIT_FAIL_ENTRY:
        stats[s + STAT.EXIT_FAIL_ENTRY]!++;
        return this.#fail(
          `KVM_EXIT_FAIL_ENTRY, hardware reason 0x${run.getBigUint64(O.exitWord, true).toString(16)}`,
        );
      case K.KVM_EXIT_INTERNAL_ERROR:
        stats[s + STAT.EXIT_INTERNAL_ERROR]!++;
        return this.#fail(
          `KVM_EXIT_INTERNAL_ERROR, suberror ${run.getUint32(O.exitWord, true)}${this.#internalData()}`,
        );
      default:
        stats[s + STAT.EXIT_OTHER]!++;
        return this.#fail(`unexpected KVM exit reason ${reason}`);
    }
  }

  #mmioAddr(): number {
    const run = this.#run;
    return run.getUint32(O.mmioAddr, true) + run.getUint32(O.mmioAddr + 4, true) * 2 ** 32;
  }

  /** KVM_EXIT_IO: `count` accesses of `size` bytes to one port, data in the kvm_run page. */
  #io(): void {
    const run = this.#run,
      page = this.#page,
      dev = this.#dev;
    this.#stats[this.#s + STAT.EXIT_IO]!++;
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
          size === 1 ? page[at]! : size === 2 ? run.getUint16(at, true) : run.getUint32(at, true),
        );
      } else {
        const v = dev.inPort(port, size);
        if (size === 1) page[at] = v;
        else if (size === 2) run.setUint16(at, v, true);
        else run.setUint32(at, v, true);
      }
    }
  }

  /** KVM_EXIT_MMIO: one read or write of 1, 2, 4 or 8 bytes; a read's value goes back in the page. */
  #mmio(): void {
    const run = this.#run,
      page = this.#page,
      dev = this.#dev;
    this.#stats[this.#s + STAT.EXIT_MMIO]!++;
    const addr = this.#mmioAddr();
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
  }

  /** KVM_EXIT_SYSTEM_EVENT: type 2 is a reset, 1 (and the rest) a shutdown. */
  #systemEvent(): void {
    const type = this.#run.getUint32(O.exitWord, true);
    endVm(this.#ctl, type === 2 ? END.RESET : END.SHUTDOWN, 0);
  }

  /**
   * An internal error's data words (struct kvm_run's internal: suberror, ndata, data[16]), which
   * say what KVM could not handle; for suberror 3 (an exit during event delivery) the event being
   * delivered, the exit reason and, for an NPF, the guest physical address.
   */
  #internalData(): string {
    const run = this.#run;
    const n = Math.min(run.getUint32(O.exitWord + 4, true), 16);
    const words = Array.from(
      { length: n },
      (_, i) => `0x${run.getBigUint64(O.exitWord + 8 + i * 8, true).toString(16)}`,
    );
    return n ? ` (data ${words.join(' ')})` : '';
  }

  /** Hot-plug: take the slots that changed since the last look (one load per exit otherwise). */
  #replug(): void {
    const plug = this.#d.plug;
    this.#pciGen = Atomics.load(this.#ctl, CTL.PCI_GEN);
    for (let m = plug && receiveMessageOnPort(plug); m; m = receiveMessageOnPort(plug!)) {
      const { index, ring } = m.message as { index: number; ring: SharedArrayBuffer | null };
      this.#clients[index] = ring ? new RingClient(ring) : undefined;
    }
  }

  /** The ISA IRQ line of the UART (KVM_IRQ_LINE on the VM fd). */
  #setIrq(level: number): void {
    this.#irqBuf.writeUInt32LE(UART_IRQ, 0);
    this.#irqBuf.writeUInt32LE(level, 4);
    if (raw.ioctlPtr(this.#d.vmFd, kvm.KVM.KVM_IRQ_LINE, this.#irqBuf) < 0)
      this.#fail(`KVM_IRQ_LINE: ${errnoName(errno())}`);
  }

  /** Report an error and end the VM with it; false, so an exit handler can return it. */
  #fail(message: string): false {
    this.#port.postMessage({ type: 'error', message: `vCPU ${this.#d.index}: ${message}` });
    endVm(this.#ctl, END.ERROR, this.#d.index);
    return false;
  }
}
