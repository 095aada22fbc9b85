// The CLI's exit statuses mean one thing each (docs/user-guide.md, "Exit statuses"): every bad
// option of `vm` exits 2 naming it (`--cpus 0` once exited 1), and how a VM ended maps to 0, 3
// or 4 (vmExitStatus, describeEnd), here without a KVM: the lab checks the same on real boots
// (test/guest/vm-cli.test.ts).
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { describeEnd, VM_EXIT, vmExitStatus } from '../../src/cli/vm.js';
import type { VmResult } from '../../src/vmm/vm.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const vm = (...args: string[]) =>
  spawnSync(process.execPath, [CLI, 'vm', ...args], { encoding: 'utf8', timeout: 30_000 });

for (const [args, names] of [
  [['--kernel', '/nonexistent', '--memory', 'size=512M', '--cpus', '0'], /cpus 0/],
  [['--kernel', '/nonexistent', '--memory', 'size=512M', '--cpus', 'two'], /--cpus two/],
  [['--memory', 'size=512M'], /--kernel/],
  [['--kernel', '/nonexistent', '--memory', 'size=512M'], /kernel \/nonexistent: no such file/],
  [['--kernel', '/nonexistent', '--memory', 'size=512M', '--bogus'], /unknown argument/],
] as const) {
  test(`vm ${args.join(' ')}: exit 2, naming the mistake`, () => {
    const r = vm(...args);
    assert.is(r.status, 2, `exit ${r.status}: ${r.stderr}`);
    assert.match(r.stderr, names);
  });
}

const result = (status: VmResult['status'], code = 0): VmResult =>
  ({ status, code, wallMs: 1234, rips: [] }) as unknown as VmResult;

test('how a VM ended maps to one status each, and is said plainly', () => {
  assert.is(vmExitStatus(result('exit', 0)), VM_EXIT.OK);
  assert.is(vmExitStatus(result('reset')), VM_EXIT.OK);
  assert.is(vmExitStatus(result('stopped')), VM_EXIT.OK);
  assert.is(vmExitStatus(result('exit', 1)), VM_EXIT.GUEST_VERDICT);
  for (const s of ['shutdown', 'error', 'timeout'] as const)
    assert.is(vmExitStatus(result(s)), VM_EXIT.GUEST_DIED, s);
  assert.match(describeEnd(result('shutdown')), /triple-faulted \(KVM_EXIT_SHUTDOWN\)/);
  assert.match(describeEnd(result('stopped'), 'SIGTERM'), /^stopped on request \(SIGTERM\)/);
  assert.match(describeEnd(result('exit', 3)), /debug-exit byte 3/);
});

test.run();
