// The `vm` command as a newcomer meets it: the README's demo (lab/demo-guest: the test guest on
// two NVMe and an e1000e) ends with the guest's verdict and its last lines say only what is
// expected; a guest whose kernel panics ends in a triple fault that the VMM names as one (exit
// 4); a VM stopped by SIGTERM exits 0 and says it was stopped (docs/user-guide.md, exit statuses).
//   lab/run --smp 2 --mem 3G --devices "nvme nvme e1000e" -- node dist/test/run.js guest vm-cli
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { requireLab } from '../support/lab.js';
import { repoRoot } from '../support/paths.js';
import { guestImageDir } from '../support/qemu-reference.js';

const t = suite('the vm command: how a guest ended, said plainly, with one exit status each');
const CLI = join(repoRoot, 'dist/src/cli/main.js');
t.before(() => requireLab());

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `cmd args`, optionally sending SIGTERM once stdout shows `termAt`. */
function run(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv = {},
  termAt?: RegExp,
): Promise<Ran> {
  const p = spawn(cmd, args, { cwd: repoRoot, env: { ...process.env, ...env } });
  let stdout = '',
    stderr = '';
  p.stdout.on('data', (b: Buffer) => {
    stdout += b.toString('latin1');
    if (termAt?.test(stdout)) {
      termAt = undefined;
      p.kill('SIGTERM');
    }
  });
  p.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  return new Promise((done) => p.on('close', (code) => done({ code, stdout, stderr })));
}

const tail = (r: Ran): string =>
  `stdout: ${r.stdout.slice(-800)}\nstderr: ${r.stderr.slice(-1500)}`;

/** The VMM's own lines (stderr, "vm: ..."), the last `n`. */
const vmLines = (r: Ran, n: number): string[] =>
  r.stderr
    .split('\n')
    .filter((l) => l.startsWith('vm: '))
    .slice(-n);

t(
  "the demo's guest passes and the VMM's last lines are its verdict and expected notes only",
  async () => {
    const r = await run('sh', ['lab/demo-guest'], { IMAGE: guestImageDir() });
    const last = vmLines(r, 8);
    console.log(`    exit ${r.code}; the VMM's last lines:\n      ${last.join('\n      ')}`);
    assert.is(r.code, 0, tail(r));
    assert.ok(
      last.some((l) => /^vm: ended: the guest ended with debug-exit byte 0 after/.test(l)),
      `the VMM says how the guest ended: ${last.join(' | ')}`,
    );
    assert.not.ok(
      last.some((l) => /warning|error/i.test(l)),
      `no warning where everything is as expected: ${last.join(' | ')}`,
    );
  },
);

t('a guest kernel panic: the VMM names a triple fault and exits 4', async () => {
  const image = guestImageDir();
  const r = await run(process.execPath, [
    CLI,
    'vm',
    '--kernel',
    `${image}/vmlinuz`,
    '--initrd',
    `${image}/initrd.gz`,
    '--memory',
    'size=256M',
    '--append',
    'quiet loglevel=4 guest.crash=1',
  ]);
  console.log(`    exit ${r.code}; ${vmLines(r, 10).find((l) => l.startsWith('vm: ended'))}`);
  assert.match(r.stdout, /Kernel panic - not syncing: sysrq triggered crash/, tail(r));
  assert.match(r.stderr, /vm: ended: the guest triple-faulted \(KVM_EXIT_SHUTDOWN\)/, tail(r));
  assert.is(r.code, 4, tail(r));
});

t('SIGTERM: the VM is stopped on request, and the VMM exits 0 saying so', async () => {
  const image = guestImageDir();
  const r = await run(
    process.execPath,
    [
      CLI,
      'vm',
      '--kernel',
      `${image}/vmlinuz`,
      '--initrd',
      `${image}/initrd.gz`,
      '--memory',
      'size=256M',
      '--append',
      'quiet loglevel=4 guest.wait_s=120 guest.nvme=1',
    ],
    {},
    /GUEST-CHECK cpus/,
  );
  console.log(`    exit ${r.code}; ${vmLines(r, 10).find((l) => l.startsWith('vm: ended'))}`);
  assert.match(r.stderr, /vm: ended: stopped on request \(SIGTERM\)/, tail(r));
  assert.is(r.code, 0, tail(r));
});

t.run();
