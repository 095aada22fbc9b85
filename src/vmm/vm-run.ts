// Running a built VM (vm-build.ts builds it) and closing it: one worker thread per vCPU
// (vcpu-worker.ts) until the first end (debug-exit, reset, triple fault, an error, the timeout,
// close()), then every vCPU kicked out of KVM_RUN with SIGUSR2 until its thread has left, and the
// result read off the shared state. Closing undoes what the build made, newest first.
import { MessageChannel, Worker } from 'node:worker_threads';
import * as kvm from '../../native/kvm.js';
import { ConsoleSink, createConsoleBuffer } from './console.js';
import { describeVcpu } from './hang-report.js';
import type { PeerSyncStats } from './peer-sync.js';
import { CTL, END, END_NAMES, endVm } from './shared.js';
import type { VcpuWorkerData } from './vcpu.js';
import { kick } from './vcpu-threads.js';
import type { VmResult } from './vm.js';
import type { VmParts } from './vm-parts.js';

const WORKER_URL = new URL('./vcpu-worker.js', import.meta.url);
const KICK_EVERY_MS = 20;
const UNSTICK_AFTER_MS = 5000;
const NO_P2P: PeerSyncStats = {
  maps: 0,
  unmaps: 0,
  failures: 0,
  failuresBy: {},
  refused: {},
  syncs: 0,
  syncMs: 0,
};
const noop = (): void => {};

/** The running vCPU threads and what they reported. */
interface VcpuThreads {
  /** Per vCPU: its run state (vcpu-threads.ts) and thread id, for kicks. */
  readonly state: Int32Array;
  readonly tids: BigUint64Array;
  /** Ports nothing answered, with their access counts. */
  readonly ports: Map<number, number>;
  /** The first error a vCPU reported. */
  message: string | undefined;
  /** Resolves as each thread exits. */
  exited: Promise<void>[];
}

type VcpuMessage = {
  type: string;
  seq?: number;
  bytes?: Uint8Array;
  message?: string;
  top?: [number, number][];
};

/** Run the guest until it ends; the vCPU threads have all left when this resolves. */
export async function runVm(p: VmParts): Promise<VmResult> {
  const t0 = performance.now();
  // SIGUSR2 ends a blocking KVM_RUN; without a listener it would kill the process.
  process.on('SIGUSR2', noop);
  const threads = startVcpuThreads(p);
  const timer = p.opts.timeoutMs
    ? setTimeout(() => endVm(p.ctl, END.TIMEOUT, 0), p.opts.timeoutMs)
    : undefined;
  const following = p.peers?.follow(p.ctl);
  try {
    await Atomics.waitAsync(p.ctl, CTL.ENDED, 0).value;
    await stopVcpuThreads(p, threads);
  } finally {
    for (const port of p.plugPorts.splice(0)) port.close();
    if (timer) clearTimeout(timer);
    process.off('SIGUSR2', noop);
    p.peers?.stop(p.ctl);
    await following;
  }
  return vmResult(p, threads, t0);
}

function startVcpuThreads(p: VmParts): VcpuThreads {
  const tidBuf = new SharedArrayBuffer(8 * p.cpus);
  const t: VcpuThreads = {
    state: new Int32Array(new SharedArrayBuffer(4 * p.cpus)),
    tids: new BigUint64Array(tidBuf),
    ports: new Map(),
    message: undefined,
    exited: [],
  };
  const sink = new ConsoleSink(
    p.opts.onConsole ??
      ((b: Uint8Array) => {
        process.stdout.write(b);
      }),
  );
  const consoleBuf = createConsoleBuffer();
  const rings = p.deviceNames.map((_, i) => p.ringOf(i));
  t.exited = p.vcpus.map((fd, index) => {
    const { port1, port2 } = new MessageChannel();
    p.plugPorts.push(port1);
    const data: VcpuWorkerData = {
      index,
      vcpuFd: fd.fd,
      vmFd: p.vm.fd,
      runSize: p.runSize,
      ctl: p.shared.ctl,
      bars: p.shared.bars,
      slots: p.shared.slots,
      stats: p.shared.stats,
      state: t.state.buffer as SharedArrayBuffer,
      tids: tidBuf,
      rings,
      console: consoleBuf,
      plug: port2,
    };
    const w = new Worker(WORKER_URL, {
      workerData: data,
      name: `vcpu${index}`,
      transferList: [port2],
    });
    return watchVcpuThread(p, t, sink, w, index);
  });
  return t;
}

/** A vCPU thread's messages (console lines, its unanswered ports, an error) and its end. */
function watchVcpuThread(
  p: VmParts,
  t: VcpuThreads,
  sink: ConsoleSink,
  w: Worker,
  index: number,
): Promise<void> {
  w.on('message', (m: VcpuMessage) => {
    if (m.type === 'console') sink.take({ seq: m.seq!, bytes: m.bytes! });
    else if (m.type === 'ports')
      for (const [port, c] of m.top!) t.ports.set(port, (t.ports.get(port) ?? 0) + c);
    else if (m.type === 'error') t.message ??= m.message;
  });
  w.on('error', (e) => {
    t.message ??= `vCPU ${index} crashed: ${e.message}`;
    endVm(p.ctl, END.ERROR, index);
  });
  return new Promise<void>((resolve) =>
    w.once('exit', () => {
      endVm(p.ctl, END.ERROR, index);
      resolve();
    }),
  );
}

/** The VM has ended: every vCPU out of KVM_RUN, kicked until all threads have left. */
async function stopVcpuThreads(p: VmParts, t: VcpuThreads): Promise<void> {
  const kicker = setInterval(() => {
    for (let i = 0; i < p.cpus; i++) kick(t.state, t.tids, i);
  }, KICK_EVERY_MS);
  for (let i = 0; i < p.cpus; i++) kick(t.state, t.tids, i);
  // A vCPU waiting on a device that no longer answers is not in KVM_RUN: closing the rings
  // ends its wait (RingClosedError). The VM is over, so the devices have no more users.
  const unstick = setTimeout(() => {
    for (const port of p.deviceNames) if (port) p.runtime.device(port).abortRequests();
  }, UNSTICK_AFTER_MS);
  await Promise.all(t.exited);
  clearInterval(kicker);
  clearTimeout(unstick);
}

function vmResult(p: VmParts, t: VcpuThreads, t0: number): VmResult {
  const kind = Atomics.load(p.ctl, CTL.END_KIND);
  return {
    rips: vcpuRips(p),
    ...(kind === END.TIMEOUT ? { vcpuStates: p.vcpus.map(describeVcpu) } : {}),
    status: END_NAMES[kind] ?? 'error',
    code: kind === END.DEBUG_EXIT ? Atomics.load(p.ctl, CTL.END_VALUE) : 0,
    ...(t.message !== undefined && kind === END.ERROR ? { message: t.message } : {}),
    wallMs: performance.now() - t0,
    stats: p.stats(),
    unknownPorts: Object.fromEntries(
      [...t.ports].sort((a, b) => b[1] - a[1]).map(([port, c]) => [`0x${port.toString(16)}`, c]),
    ),
    p2p: structuredClone(p.peers?.stats ?? NO_P2P),
    slots: {
      ops: Atomics.load(p.ctl, CTL.SLOT_OPS),
      ms: Atomics.load(p.ctl, CTL.SLOT_US) / 1000,
    },
  };
}

/** Where each vCPU stopped: what to look at when a guest hangs (with nokaslr, System.map names it). */
function vcpuRips(p: VmParts): string[] {
  return p.vcpus.map((v) => {
    try {
      return `0x${kvm.getRegs(v).rip.toString(16)}`;
    } catch {
      return '?';
    }
  });
}

/** Undo what the build made, newest first; every step runs, the errors are reported together. */
export async function unwind(p: VmParts): Promise<void> {
  const errors: unknown[] = [];
  for (const u of p.undo.splice(0).reverse()) {
    try {
      await u();
    } catch (e) {
      errors.push(e);
    }
  }
  if (errors.length)
    throw new AggregateError(
      errors,
      `closing the VM: ${errors.map((e) => (e as Error).message).join('; ')}`,
    );
}
