// `vfio-runtime vm`: boot a Linux guest on the minimal VMM (src/vmm/, the library; this is the
// binary's half), with the runtime's --iommu/--vfio specs for assigned devices and --memory for
// its RAM. The guest's console goes to stdout, the VMM's own report to stderr; the exit status
// says how the guest ended (VM_EXIT below).

import { serveApi, takeApiOptions } from '../api/cli.js';
import { InvalidSpecError } from '../index.js';
import { DEFAULT_CMDLINE } from '../vmm/boot.js';
import { Vm, type VmOptions, type VmResult } from '../vmm/vm.js';
import { cliLogger, startCliMetrics, takeObservabilityArgs } from './observability.js';
import { parseRuntimeArgs } from './specs.js';

export const VM_USAGE = `  vm        boot a Linux guest: --kernel <bzImage> [--initrd <img>] --memory size=<n>[M|G]
            [--cpus <n>] [--cmdline "<text>" | --append "<text>"] [--timeout <s>] [--iommu ...]
            [--vfio ...] [--no-mmap <port>[,<port>...]] [--json]   (--append adds to the default
            kernel command line; --no-mmap: those devices' BARs all trap, no BAR fast path)
            [--metrics-listen <addr:port>] [--log-level <level>] (as run)`;

/**
 * The exit statuses of `vm`, one meaning each (the user guide's table; the CLI's own 1 and 2:
 * a runtime or host failure, bad arguments).
 */
export const VM_EXIT = {
  /** The guest ended with debug-exit byte 0, by a reboot, or the VM was stopped on request. */
  OK: 0,
  /** The guest ended with a nonzero debug-exit byte (its verdict; the byte is in the report). */
  GUEST_VERDICT: 3,
  /** The guest died: a triple fault, a KVM error, or the VM's --timeout. */
  GUEST_DIED: 4,
} as const;

/** What each way of ending means for the exit status. */
export function vmExitStatus(r: VmResult): number {
  switch (r.status) {
    case 'exit':
      return r.code === 0 ? VM_EXIT.OK : VM_EXIT.GUEST_VERDICT;
    case 'reset':
    case 'stopped':
      return VM_EXIT.OK;
    default:
      return VM_EXIT.GUEST_DIED;
  }
}

/** One line naming how the VM ended. */
export function describeEnd(r: VmResult, stoppedBy?: string): string {
  const after = `after ${(r.wallMs / 1000).toFixed(1)} s`;
  switch (r.status) {
    case 'exit':
      return `the guest ended with debug-exit byte ${r.code} ${after}`;
    case 'reset':
      return `the guest rebooted ${after}`;
    case 'stopped':
      return `stopped on request${stoppedBy ? ` (${stoppedBy})` : ''} ${after}`;
    case 'shutdown':
      return `the guest triple-faulted (KVM_EXIT_SHUTDOWN) ${after}: a guest kernel panic with panic=-1 reboot=t ends this way too, see its console`;
    case 'timeout':
      return `the VM ran into its --timeout ${after}${r.message ? ` (${r.message})` : ''}`;
    default:
      return `${r.status}${r.message ? `: ${r.message}` : ''} ${after}`;
  }
}

function value(rest: string[], name: string): string | undefined {
  const i = rest.findIndex((a) => a === name || a.startsWith(`${name}=`));
  if (i < 0) return undefined;
  const a = rest[i]!;
  const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : rest[i + 1];
  if (v === undefined) throw new InvalidSpecError(`${name} needs a value`);
  rest.splice(i, a.includes('=') ? 1 : 2);
  return v;
}

function int(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new InvalidSpecError(`${name} ${v} is not a whole number`);
  return Number(v);
}

export async function vmCommand(argv: string[]): Promise<number> {
  const { obs, apiOpts, json, options } = parseVmArgs(argv);
  const logger = cliLogger(obs);
  const vm = await Vm.create({ logger, ...options });
  const api = apiOpts ? serveApi(vm.runtime, apiOpts, vm.apiHooks()) : undefined;
  if (api) console.error(`vm: API on ${api.server.address}`);
  let stoppedBy: string | undefined;
  const stop = (sig: NodeJS.Signals): void => {
    stoppedBy = sig;
    void vm.close();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  let r: VmResult;
  try {
    const metrics = await startCliMetrics(obs, vm.runtime, logger, [
      vm,
      ...(api ? [api.server] : []),
    ]);
    try {
      r = await vm.run();
    } finally {
      await metrics?.close();
    }
  } finally {
    await api?.server.close();
    await vm.close();
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
  report(r, json, stoppedBy);
  return vmExitStatus(r);
}

/** The vm command's arguments: the runtime's specs, observability, the API, the VM's own. */
function parseVmArgs(argv: string[]): {
  obs: ReturnType<typeof takeObservabilityArgs>;
  apiOpts: ReturnType<typeof takeApiOptions>;
  json: boolean;
  options: Omit<VmOptions, 'logger'>;
} {
  const { spec, rest } = parseRuntimeArgs(argv);
  const obs = takeObservabilityArgs(rest);
  const apiOpts = takeApiOptions(rest);
  const kernel = value(rest, '--kernel'),
    initrd = value(rest, '--initrd'),
    append = value(rest, '--append');
  let cmdline = value(rest, '--cmdline');
  if (append !== undefined) {
    if (cmdline !== undefined)
      throw new InvalidSpecError(
        'vm: give --cmdline (the whole line) or --append (added to the default), not both',
      );
    cmdline = `${DEFAULT_CMDLINE} ${append}`;
  }
  const cpus = int('--cpus', value(rest, '--cpus')),
    timeout = int('--timeout', value(rest, '--timeout'));
  const noMmap = value(rest, '--no-mmap')?.split(',');
  const ports = new Set(spec.vfio.map((v) => v.port));
  const stray = noMmap?.filter((p) => !ports.has(p)) ?? [];
  if (stray.length)
    throw new InvalidSpecError(
      `vm: --no-mmap ${stray.join(',')}: no --vfio with that port (give the ports of --vfio devices)`,
    );
  const json = rest.includes('--json');
  const unknown = rest.filter((a) => a !== '--json');
  if (unknown.length) throw new InvalidSpecError(`vm: unknown argument(s) ${unknown.join(' ')}`);
  if (!kernel) throw new InvalidSpecError('vm: --kernel <bzImage> is required');
  if (spec.memory.length !== 1 || spec.memory[0]!.gpa !== 0n) {
    throw new InvalidSpecError(
      'vm: give the guest RAM as one --memory size=<n> (it is laid out below and above the 4 GiB hole)',
    );
  }
  const options = {
    kernel,
    memory: Number(spec.memory[0]!.size),
    iommu: spec.iommu,
    vfio: spec.vfio,
    ...(initrd !== undefined ? { initrd } : {}),
    ...(cmdline !== undefined ? { cmdline } : {}),
    ...(cpus !== undefined ? { cpus } : {}),
    ...(timeout !== undefined ? { timeoutMs: timeout * 1000 } : {}),
    ...(noMmap ? { noMmap } : {}),
  };
  return { obs, apiOpts, json, options };
}

function report(r: VmResult, json: boolean, stoppedBy: string | undefined): void {
  if (json) {
    console.error(JSON.stringify(r));
    return;
  }
  const s = r.stats;
  const bars = Object.entries(s.bar)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  console.error(`vm: ended: ${describeEnd(r, stoppedBy)}`);
  console.error(
    `vm: exits ${s.exits} (io ${s.io}, mmio ${s.mmio}, config ${s.config}, uart ${s.uart}, ` +
      `unknown pio ${s.unknownPio}, unknown mmio ${s.unknownMmio}, refused ${s.refused}, signals ${s.interrupted})` +
      `${bars ? `; BAR accesses: ${bars}` : ''}`,
  );
  const ports = Object.entries(r.unknownPorts)
    .map(([p, c]) => `${p} ${c}`)
    .join(', ');
  if (ports) console.error(`vm: unanswered ports: ${ports}`);
  reportP2p(r.p2p);
  if (r.status !== 'exit') {
    s.vcpus.forEach((v, i) =>
      console.error(
        `vm: vCPU ${i}: rip ${r.rips[i]}, ` +
          `last exit ${v.lastReason} at ${v.lastAddr}${v.busy ? ' (still handling it)' : ''}` +
          `${r.vcpuStates ? `; ${r.vcpuStates[i]}` : ''}`,
      ),
    );
  }
  console.error(
    `vm: ~${s.exitMs} ms handling exits (${s.exitUs} µs each), ` +
      `~${s.ringMs} ms of it in device rings (from ${s.sampled} timed exits)`,
  );
}

/**
 * Peer-to-peer DMA to BARs: what was mapped, and each kind of refusal still standing at the end,
 * once (a refusal in a race with the guest turning decoding off is gone once the BAR is mapped
 * again). A kernel that cannot export a BAR as a dma-buf (ENOTTY, EOPNOTSUPP: before Linux 6.19,
 * or without CONFIG_VFIO_PCI_DMABUF) refuses every area of an iommufd context: expected there,
 * so a note naming the context; anything else is a warning, as QEMU's.
 */
function reportP2p(p: VmResult['p2p']): void {
  if (p.maps === 0) return;
  console.error(
    `vm: BARs mapped for peer DMA ${p.maps} times, unmapped ${p.unmaps} (${p.syncMs.toFixed(0)} ms; ${p.failures} area refusals along the way)`,
  );
  for (const [key, { areas, reason }] of Object.entries(p.refused)) {
    const [backend, via, errno] = key.split(' ');
    if (via === 'dma-buf' && (errno === 'ENOTTY' || errno === 'EOPNOTSUPP'))
      console.error(
        `vm: note: no peer DMA into BARs through ${backend} (${areas} areas refused, ${errno}): this kernel cannot export a BAR as a dma-buf (Linux 6.19+ with CONFIG_VFIO_PCI_DMABUF); expected on such a kernel, and the guest runs as before`,
      );
    else
      console.error(
        `vm: warning: ${areas} BAR area(s) not mapped for peers in ${backend} via ${via}: ${errno}${reason ? ` (${reason})` : ''}`,
      );
  }
}
