// Devices at runtime in a real guest, as an orchestrator would run it: the VMM (`vfio-runtime vm`)
// runs as an unprivileged uid that cannot open /dev/vfio or /dev/iommu; it is given /dev/kvm (its
// group), a memlock limit, and at boot the fds of /dev/iommu and one NVMe's cdev. This test is
// the privileged helper: it opens the second NVMe's cdev and passes it over the VMM's API socket
// (SCM_RIGHTS) when the guest asks (guest/init, guest.hotplug=1); the guest rescans, its nvme
// driver binds, the data check passes; the guest lets go, the device is removed through the API
// while idle and added again; then removed under the guest's I/O (a surprise): the guest logs
// errors but keeps running, and the boot NVMe keeps working. One boot.
//   lab/run --smp 2 --mem 3G --devices "nvme nvme e1000e" -- node dist/test/run.js guest hotplug

import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  type Stats,
  statSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { decode, encode } from '../../native/layout.js';
import { C, check, close, open, raw, rlimit } from '../../native/libc.js';
import { cdevOf } from '../../src/api/cli.js';
import { type ApiReply, apiCall } from '../../src/api/client.js';
import type { VmResult } from '../../src/vmm/vm.js';
import { checkEnd, ledgerLines, withLabRetries } from '../support/flakes.js';
import { type BootEnd, endOfOurs, withTrace } from '../support/guest-boot.js';
import { parseGuestConsole } from '../support/guest-console.js';
import { watchForHang } from '../support/hang-watchdog.js';
import { holdKvmVm, releaseKvmVm } from '../support/kvm-hold.js';
import { KvmTrace } from '../support/kvm-trace.js';
import { labDevices, requireLab } from '../support/lab.js';
import { repoRoot } from '../support/paths.js';
import { guestImageDir } from '../support/qemu-reference.js';

const t = suite('hot-plug: an unprivileged VMM gets an NVMe through its API while the guest runs');
/** The CLI's path below the repository's root (the unprivileged VMM runs it from a bind mount). */
const CLI_IN_REPO = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url)).slice(
  repoRoot.length,
);
const NOBODY = 65534;
const MEMLOCK = 1n << 30n; // 512 MiB of guest RAM pinned for DMA, and room

/** Set this process's RLIMIT_MEMLOCK (a child inherits it across setuid); returns the old one. */
function setMemlock(v: { rlim_cur: bigint; rlim_max: bigint }): {
  rlim_cur: bigint;
  rlim_max: bigint;
} {
  const old = Buffer.alloc(rlimit.size);
  check(raw.prlimit(0, C.RLIMIT_MEMLOCK, encode(rlimit, v), old), 'prlimit', 'RLIMIT_MEMLOCK');
  return decode(rlimit, old);
}

/** What uid/gid gets opening each path (`flags` 'r+' or 'r'): 'OPEN' or the error code. */
async function accessAs(
  uid: number,
  gid: number,
  paths: string[],
  flags = 'r+',
): Promise<string[]> {
  const p = spawn(
    process.execPath,
    [
      '-e',
      `const fs=require('fs');console.log(JSON.stringify(${JSON.stringify(paths)}.map((p)=>{try{fs.closeSync(fs.openSync(p,'${flags}'));return 'OPEN'}catch(e){return e.code}})))`,
    ],
    { uid, gid, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  p.stdout!.on('data', (d) => (out += d));
  await new Promise((r) => p.once('exit', r));
  return JSON.parse(out) as string[];
}

const fdCount = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length;

async function settledFds(pid: number, want: number, ms = 3000): Promise<number> {
  const until = Date.now() + ms;
  let n = fdCount(pid);
  while (n !== want && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 50));
    n = fdCount(pid);
  }
  return n;
}

/**
 * The repository where uid 65534 can read it. A clone may sit in a folder that uid cannot enter
 * (a `mktemp -d` folder is 0700, and so is /root: the VMM died with "Cannot find module"), so
 * the tree is bind-mounted below `dir` (0755) for the VMM; that needs only the tree's own files
 * to be readable by others, as git's default umask leaves them. Fails at once, saying why, if
 * they are not.
 */
async function repoForNobody(dir: string): Promise<{ cli: string; unmount: () => void }> {
  const at = join(dir, 'repo');
  mkdirSync(at);
  // Read-only, so that nothing through this path can change the tree; unmount() makes sure the
  // mount is gone before the caller removes `dir` (a recursive rm would go into it).
  for (const args of [
    ['--bind', repoRoot, at],
    ['-o', 'remount,bind,ro', at],
  ]) {
    const m = spawnSync('mount', args, { encoding: 'utf8' });
    assert.is(m.status, 0, `mount ${args.join(' ')}: ${m.stderr}`);
  }
  const unmount = (): void => {
    for (const args of [[at], ['-l', at]]) {
      if (!existsSync(join(at, 'package.json'))) return;
      spawnSync('umount', args);
    }
    if (existsSync(join(at, 'package.json')))
      throw new Error(`could not unmount ${at} (the repository bind-mounted there)`);
  };
  const cli = join(at, CLI_IN_REPO);
  const [seen] = await accessAs(NOBODY, NOBODY, [cli], 'r');
  if (seen !== 'OPEN') {
    unmount();
    throw new Error(
      `uid ${NOBODY} cannot read ${repoRoot}${CLI_IN_REPO} (${seen}), even bind-mounted at a path it can enter: make the clone readable by others (chmod -R o+rX ${repoRoot})`,
    );
  }
  return { cli, unmount };
}

/** The last line of the VMM's stderr that is its --json result, if it wrote one. */
function vmResultOf(stderr: string): VmResult | undefined {
  for (const l of stderr.split('\n').reverse()) {
    if (!l.startsWith('{')) continue;
    try {
      const r = JSON.parse(l) as Partial<VmResult>;
      if (typeof r.status === 'string' && typeof r.wallMs === 'number') return r as VmResult;
    } catch {
      /* a log line cut short */
    }
  }
  return undefined;
}

let restore = (): void => {};
/** The device nodes' owners and modes before the first boot changed them (restore puts them back). */
let savedNodes: { p: string; st: Stats }[] | undefined;
// One idle KVM VM held meanwhile, so the VMM's own VM flips no scheduler static key in the lab
// kernel (test/support/kvm-hold.ts).
// The lab kernel's KVM trace, read to name how a boot that did not pass ended (kvm-trace.ts).
let trace: KvmTrace | undefined;
t.before(() => {
  requireLab();
  holdKvmVm();
  trace = KvmTrace.start();
});
t.after(() => {
  restore();
  trace?.stop();
  releaseKvmVm();
});

/**
 * One boot of the whole scenario. How it ended is checked first (test/support/flakes.ts): only a
 * known lab signature is booted again, never a VMM that crashed or a guest that panicked.
 * `crashVmm`: the meta-test's boot, whose VMM is killed (SIGSEGV) as soon as its API is up,
 * before the guest's init.
 */
async function hotplugBoot(crashVmm = false): Promise<void> {
  trace?.clear();
  const [n0, n1] = labDevices('nvme');
  assert.ok(n0 && n1, 'two NVMe: lab/run --devices "nvme nvme e1000e"');
  // Files the unprivileged VMM may read: the kernel and initrd, a directory for its socket.
  const dir = mkdtempSync(join(tmpdir(), 'vfr-hotplug-'));
  chmodSync(dir, 0o755);
  const image = guestImageDir();
  for (const f of ['vmlinuz', 'initrd.gz']) {
    copyFileSync(join(image, f), join(dir, f));
    chmodSync(join(dir, f), 0o644);
  }
  const repo = await repoForNobody(dir);
  const sockDir = join(dir, 'run');
  rmSync(sockDir, { force: true, recursive: true });
  mkdirSync(sockDir, { mode: 0o700 });
  chownSync(sockDir, NOBODY, NOBODY);
  const sock = join(sockDir, 'api.sock');
  // As an orchestrator arranges it: /dev/kvm for the VMM's group, the VFIO and iommufd nodes
  // for root only (restored after the test).
  const kvmGid = NOBODY;
  const nodes = ['/dev/kvm', '/dev/iommu', cdevOf(n0), cdevOf(n1)];
  const saved = savedNodes ?? nodes.map((p) => ({ p, st: statSync(p) }));
  savedNodes = saved; // a second boot must not save the modes this one set
  restore = () => {
    for (const { p, st } of saved) {
      chownSync(p, st.uid, st.gid);
      chmodSync(p, st.mode & 0o7777);
    }
  };
  chownSync('/dev/kvm', 0, kvmGid);
  chmodSync('/dev/kvm', 0o660);
  for (const p of nodes.slice(1)) chmodSync(p, statSync(p).mode & 0o7700);
  assert.equal(
    await accessAs(NOBODY, kvmGid, nodes),
    ['OPEN', 'EACCES', 'EACCES', 'EACCES'],
    `uid ${NOBODY} may open /dev/kvm, not ${nodes.slice(1).join(', ')}`,
  );

  // Boot: /dev/iommu and the first NVMe's cdev, opened here, inherited as fds 3 and 4.
  const iommufd = open('/dev/iommu', C.O_RDWR),
    cdev0 = open(cdevOf(n0), C.O_RDWR);
  const oldLimit = setMemlock({ rlim_cur: MEMLOCK, rlim_max: MEMLOCK });
  let vmm: ChildProcess;
  try {
    vmm = spawn(
      process.execPath,
      [
        repo.cli,
        'vm',
        '--kernel',
        join(dir, 'vmlinuz'),
        '--initrd',
        join(dir, 'initrd.gz'),
        '--memory',
        'size=512M',
        '--cpus',
        '2',
        '--timeout',
        '240',
        '--append',
        'quiet loglevel=4 guest.cpus=2 guest.dd_mib=4 guest.dd_offset_mib=8 guest.hotplug=1 ' +
          'guest.hotplug_wait_s=40',
        '--iommu',
        'id=ctx0,iommufd_fd=3',
        '--vfio',
        'port=nvme0,iommu=ctx0,fd=4',
        '--api-socket',
        sock,
        '--json',
      ],
      { uid: NOBODY, gid: kvmGid, stdio: ['ignore', 'pipe', 'pipe', iommufd, cdev0] },
    );
  } finally {
    setMemlock(oldLimit);
    close(iommufd);
    close(cdev0);
  }
  const pid = vmm.pid!;
  const t0 = performance.now();
  const at = (): string => `${((performance.now() - t0) / 1000).toFixed(1)} s`;
  let text = '',
    stderr = '';
  const events: string[] = [];
  const fdsBefore: number[] = [],
    fdsAfter: number[] = [];
  const timings: Record<string, number> = {};
  let chain: Promise<void> = Promise.resolve();
  let hostError: unknown;

  const act = async (what: string, n: string): Promise<void> => {
    if (what === 'want') {
      fdsBefore.push(fdCount(pid));
      const fd = open(cdevOf(n1), C.O_RDWR);
      let r: ApiReply;
      try {
        r = await apiCall(sock, {
          method: 'PUT',
          path: '/api/v1/vm.add-device',
          body: { port: 'hot', iommu: 'ctx0' },
          fds: [fd],
        });
      } finally {
        close(fd);
      }
      events.push(`${at()} add ${n}: ${r.status} ${r.body.trim()}`);
      assert.is(r.status, 200, r.body);
      timings[`add${n}`] = (r.json as { ms: number }).ms;
    } else {
      const r = await apiCall(sock, {
        method: 'PUT',
        path: '/api/v1/vm.remove-device',
        body: { id: 'hot' },
      });
      events.push(`${at()} remove (${what}): ${r.status} ${r.body.trim()}`);
      assert.is(r.status, 200, r.body);
      timings[what === 'busy' ? 'surpriseRemove' : 'idleRemove'] = (r.json as { ms: number }).ms;
      fdsAfter.push(await settledFds(pid, fdsBefore.at(-1)!));
    }
  };

  let partial = '';
  vmm.stdout!.on('data', (b: Buffer) => {
    const s = b.toString('latin1');
    text += s;
    const lines = (partial + s).split('\n');
    partial = lines.pop()!; // a marker may arrive in pieces: whole lines only
    for (const line of lines) {
      const m = /GUEST-HOTPLUG (want|released|busy) ?(\d*)/.exec(line);
      if (!m) continue;
      chain = chain
        .then(() => act(m[1]!, m[2] || ''))
        .catch((e) => {
          hostError ??= e;
        });
    }
  });
  vmm.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  if (process.env.GUEST_STREAM === '1') {
    vmm.stdout!.on('data', (b: Buffer) => process.stdout.write(b));
    vmm.stderr!.on('data', (b: Buffer) => process.stderr.write(b));
  }
  // The VMM ends the guest at its own --timeout (240 s); past that it is hung: a watchdog
  // thread dumps its threads' and this process's kernel stacks, then kills it (this thread
  // may be the one stuck: it opens the VFIO cdev, which waits for a close of that device).
  const watchdog = watchForHang(pid, 300_000);
  if (crashVmm) {
    const until = Date.now() + 120_000;
    while (!existsSync(sock) && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
    vmm.kill('SIGSEGV');
  }
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((r) =>
    vmm.once('exit', (c, sig) => r([c, sig])),
  );
  await watchdog.disarm();
  repo.unmount();
  if (watchdog.fired()) events.push(`${at()} the hang watchdog fired (its dump is on stderr)`);
  events.push(`${at()} VMM exited`);
  await chain;
  rmSync(dir, { recursive: true, force: true });

  const g = parseGuestConsole(text);
  const result = vmResultOf(stderr);
  const ended = signal ? `signal ${signal}` : `exit ${code}`;
  const end: BootEnd = result
    ? withTrace(endOfOurs(result, g, text), trace)
    : {
        kind: 'vmm-error',
        detail: `the VMM ended with ${ended} and no result, ${g.checks.length} guest checks printed`,
        text: `OURS-END vmm-error the VMM ended with ${ended} and no result\n${text.split('\n').slice(-25).join('\n')}`,
      };
  // The hot-plug checks fail on their own below; any other end is reported whole here.
  if (end.kind !== 'checks-failed')
    checkEnd(end, ['guest'], `VMM stderr: ${stderr.slice(-2000)}\nevents: ${events.join('; ')}`);
  const hp = g.checks.filter((c) => c.name.startsWith('hotplug'));
  console.log(
    `    VMM uid ${NOBODY} exit ${code}; boot to init ${g.bootToInitS} s; ${events.join('; ')}\n    guest: ${hp.map((c) => `${c.name} ${c.ok ? 'ok' : 'FAIL'} ${c.value}`).join('\n           ')}` +
      `\n    timings ms: ${JSON.stringify(timings)}; VMM fds before each add ${fdsBefore.join(',')}, after each removal ${fdsAfter.join(',')}`,
  );
  if (!g.pass || code !== 0)
    console.log(
      `    problems: ${g.problems.join('; ')}\n    log: ${g.log.join('\n')}\n    VMM stderr: ${stderr.slice(-2000)}`,
    );
  if (hostError) throw hostError;
  for (const name of [
    'hotplug-add:1',
    'hotplug-io:1',
    'hotplug-gone:1',
    'hotplug-add:2',
    'hotplug-io:2',
    'hotplug-surprise',
  ])
    assert.ok(hp.find((c) => c.name === name)?.ok, `guest check ${name} passed`);
  assert.ok(
    hp.some((c) => c.name.startsWith('hotplug-after:') && c.ok),
    'the boot NVMe still passes its data check after the surprise removal',
  );
  assert.ok(g.pass, `the guest passed every check: ${g.problems.join('; ')}`);
  assert.is(code, 0, 'the VMM ended with the guest verdict 0');
  assert.is(fdsAfter.length, 2, 'two removals');
  assert.equal(
    fdsAfter,
    fdsBefore,
    'after each removal the VMM holds the fds it held before the add',
  );
}

// The meta-test: a VMM that crashes before the guest's init fails the boot at once with how it
// ended, and is never booted again as the lab's (~15 s).
t('meta: a VMM killed (SIGSEGV) before the guest reached its init fails, not retried', async () => {
  const flakes = ledgerLines().length;
  const err = await withLabRetries('hot-plug VMM, meta-test', () => hotplugBoot(true)).then(
    () => undefined,
    (e: Error) => e,
  );
  assert.ok(err, 'the boot whose VMM crashed failed');
  assert.match(err.message, /vmm-error .*signal SIGSEGV/, `it says how: ${err.message}`);
  assert.is(ledgerLines().length, flakes, 'and was not booted again');
  console.log(`    failed as it must: ${err.message.split('\n')[0]}`);
});

t('add, remove idle, add again, surprise removal under I/O: guest and boot NVMe carry on', () =>
  withLabRetries('hot-plug VMM', () => hotplugBoot()),
);

t.run();
