// The test guest's boots, shared by the guest suite (test/guest/real-guest.test.ts) and the soak
// (bench/soak/guest.ts): our VMM's options for a boot with and without the BAR fast path, QEMU's
// vfio-pci on the same lab devices, and how a boot ended, by kind, with what tells one end from
// another (the guest's panic line first: a panic ends in a triple fault with panic=-1 reboot=t).
import { DEFAULT_CMDLINE } from '../../src/vmm/boot.js';
import type { VmOptions, VmResult } from '../../src/vmm/vm.js';
import type { GuestConsole } from './guest-console.js';
import { type KvmTrace, summarizeTrace } from './kvm-trace.js';
import { labDevice, labDevices } from './lab.js';
import type { QemuReferenceResult } from './qemu-reference.js';
import { guestArgs, guestImageDir, runQemuReference } from './qemu-reference.js';

const MiB = 1 << 20;
/** guest/init's parameters, the same for every boot of the guest (ours and QEMU's). */
export const GUEST_PARAMS = { cpus: 2, dd_mib: 4, dd_offset_mib: 8 };
/** Issue 14: a BAR moved while mapped and an MSI-X vector reprogrammed by the guest. */
export const MOVE_PARAMS = { bar_move: 1, irq_affinity: 1 };
/** The guest's own kernel parameters on every VMM: an oops panics, so its text reaches the console. */
export const GUEST_KERNEL_ARGS = 'quiet loglevel=4 oops=panic';

/** The lab's two NVMe and its e1000e, as the guest suites assign them. */
export function labGuestDevices(): { nvme: [string, string]; nic: string } {
  const [n0, n1] = labDevices('nvme');
  if (!n0 || !n1) throw new Error('the lab needs two NVMe: lab/run --devices "nvme nvme e1000e"');
  return { nvme: [n0, n1], nic: labDevice('e1000e') };
}

/**
 * Our VMM's options for the test guest: 2 vCPUs, 512 MiB, the NVMe on one iommufd context and
 * the e1000e on the legacy container; `fastPath` false: every BAR traps (noMmap).
 */
export function ourGuestOptions(o: {
  fastPath: boolean;
  params?: Record<string, string | number>;
  onConsole: (b: Uint8Array) => void;
  extra?: Partial<VmOptions>;
}): VmOptions {
  const image = guestImageDir(),
    d = labGuestDevices();
  return {
    kernel: `${image}/vmlinuz`,
    initrd: `${image}/initrd.gz`,
    memory: 512 * MiB,
    cpus: 2,
    cmdline: [
      `${DEFAULT_CMDLINE} ${GUEST_KERNEL_ARGS}`,
      ...guestArgs({ ...GUEST_PARAMS, ...o.params }),
    ].join(' '),
    timeoutMs: 300_000, // a boot takes 30-90 s here (the trapped one with its rounds the longest)
    iommu: [{ id: 'ctx0' }],
    vfio: [
      { port: 'nvme0', bdf: d.nvme[0], iommu: 'ctx0' },
      { port: 'nvme1', bdf: d.nvme[1], iommu: 'ctx0' },
      { port: 'nic0', bdf: d.nic },
    ],
    ...(o.fastPath ? {} : { noMmap: ['nvme0', 'nvme1', 'nic0'] }),
    onConsole: o.onConsole,
    ...o.extra,
  };
}

/** QEMU's vfio-pci on the lab's two NVMe and e1000e, the guest asked what ours is asked. */
export function bootQemuGuest(
  noMmap: boolean,
  params: Record<string, string | number>,
  timeoutMs: number,
): Promise<QemuReferenceResult> {
  const d = labGuestDevices();
  return runQemuReference({
    devices: [...d.nvme, d.nic].map((bdf) => ({ kind: 'vfio' as const, bdf, noMmap })),
    smp: 2,
    mem: '512M',
    guestParams: { ...GUEST_PARAMS, ...params },
    kernelArgs: GUEST_KERNEL_ARGS,
    timeoutMs,
  });
}

/** How a boot ended. */
export type BootEndKind =
  | 'pass'
  | 'guest-panic'
  | 'checks-failed'
  | 'triple-fault'
  | 'kvm-internal-error'
  | 'timeout'
  | 'vmm-error'
  | 'no-verdict';

export interface BootEnd {
  kind: BootEndKind;
  /** One line: the panic line, the failed checks, KVM's message, what a timeout looked like. */
  detail: string;
  /** `<VMM>-END <kind> <detail>` and the console's last lines: what lab signatures are matched on. */
  text: string;
}

/** The console's last `n` lines. */
export const consoleTail = (text: string, n = 25): string =>
  text.replace(/\r/g, '').split('\n').slice(-n).join('\n');

function endOf(vmm: string, kind: BootEndKind, detail: string, consoleText: string): BootEnd {
  return { kind, detail, text: `${vmm}-END ${kind} ${detail}\n${consoleTail(consoleText)}` };
}

/** How a boot on our VMM ended: `stall` is what the stall watch saw (watchStall). */
export function endOfOurs(
  r: VmResult,
  g: GuestConsole,
  consoleText: string,
  stall?: string,
): BootEnd {
  const end = (k: BootEndKind, d: string) => endOf('OURS', k, d, consoleText);
  if (g.panic !== undefined) return end('guest-panic', g.panic);
  switch (r.status) {
    case 'exit':
      return r.code === 0 && g.pass
        ? end('pass', `verdict 0 after ${(r.wallMs / 1000).toFixed(1)} s`)
        : end('checks-failed', g.problems.slice(0, 3).join('; ') || `verdict ${r.code}`);
    case 'shutdown':
      return end('triple-fault', `KVM_EXIT_SHUTDOWN, vCPU rips ${r.rips.join(' ')}`);
    case 'error':
      return /KVM_EXIT_INTERNAL_ERROR|suberror/.test(r.message ?? '')
        ? end('kvm-internal-error', r.message ?? '')
        : end('vmm-error', r.message ?? 'no message');
    case 'timeout':
      return end(
        'timeout',
        `${g.checks.length} checks printed; ${stall ?? 'no stall sample'}; ${(r.vcpuStates ?? []).map((v, i) => `vCPU ${i}: ${v}`).join(' | ')}`,
      );
    default:
      return end('no-verdict', `${r.status} ${r.message ?? ''}`);
  }
}

/** How a boot on QEMU ended. */
export function endOfQemu(q: QemuReferenceResult): BootEnd {
  const g = q.guest,
    end = (k: BootEndKind, d: string) => endOf('QEMU', k, d, q.console);
  if (g.panic !== undefined) return end('guest-panic', g.panic);
  if (q.ok) return end('pass', `verdict 0 after ${(q.wallMs / 1000).toFixed(1)} s`);
  if (q.timedOut) {
    const where = q.console.includes('GUEST-START')
      ? `in guest/init after ${g.checks.length} checks`
      : 'no-guest-output (before guest/init)';
    return end('timeout', `after ${(q.wallMs / 1000).toFixed(0)} s; ${where}`);
  }
  if (q.portVerdict === 'fail')
    return end('checks-failed', g.problems.slice(0, 3).join('; ') || 'verdict 1');
  return end(
    'no-verdict',
    `QEMU exited ${q.exitCode ?? q.signal} without the guest's verdict (a reset or triple fault with -no-reboot)`,
  );
}

/**
 * Watches a running boot's console: once it has been silent for 45 s (a boot never is, short of
 * a 60 s driver timeout), reads KVM's counters of the VM twice, 2 s apart, and says what moved:
 * interrupts injected and halt wake-ups going on mean a live guest waiting on something (or a
 * livelock, with exits in the tens of thousands), nothing moving a frozen one. `seen()` is the
 * last such line.
 */
export function watchStall(
  consoleBytes: () => number,
  kvmStats: () => Record<string, number> | undefined,
): { stop: () => void; seen: () => string | undefined } {
  let last = consoleBytes(),
    since = Date.now(),
    told = false,
    seen: string | undefined;
  const timer = setInterval(() => {
    const n = consoleBytes();
    if (n !== last) [last, since, told] = [n, Date.now(), false];
    if (told || Date.now() - since < 45_000) return;
    told = true;
    const a = kvmStats();
    setTimeout(() => {
      const b = kvmStats();
      const moved = Object.entries(b ?? {})
        .filter(([k, v]) => v !== (a?.[k] ?? v))
        .map(([k, v]) => `${k} +${v - a![k]!}`);
      seen = `STALL: no console output for 45 s; KVM counters over 2 s: ${b ? moved.join(', ') || 'nothing moved' : 'unavailable'}`;
      console.log(`    ${seen}`);
    }, 2000).unref();
  }, 5000);
  timer.unref();
  return { stop: () => clearInterval(timer), seen: () => seen };
}

/**
 * `end` with what the lab kernel's KVM trace shows of it (summarizeTrace) as its second line,
 * `KVM-TRACE <summary>`, which lab signatures can match; `end` itself if it passed or the trace
 * shows nothing known.
 */
export function withTrace(end: BootEnd, trace: KvmTrace | undefined): BootEnd {
  if (end.kind === 'pass' || !trace) return end;
  const summary = summarizeTrace(trace.tail(2000));
  if (!summary) return end;
  const [first, ...rest] = end.text.split('\n');
  return {
    ...end,
    detail: `${end.detail}; KVM-TRACE ${summary}`,
    text: [first, `KVM-TRACE ${summary}`, ...rest].join('\n'),
  };
}
