// A VM that runs into its timeout says where each vCPU was (VmResult.vcpuStates, hang-report.ts):
// the report a stuck guest is diagnosed by, checked on a real boot cut short, since it is
// otherwise only made when something has already gone wrong.
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { DEFAULT_CMDLINE } from '../../src/vmm/boot.js';
import { Vm, type VmResult } from '../../src/vmm/vm.js';
import { holdKvmVm, releaseKvmVm } from '../support/kvm-hold.js';
import { requireLab } from '../support/lab.js';
import { guestImageDir } from '../support/qemu-reference.js';

const t = suite('a VM ended by its timeout');
t.before(() => {
  requireLab();
  holdKvmVm();
});
t.after(() => releaseKvmVm());

t('reports each vCPU: where, its run state, its local APIC and timer', async () => {
  const image = guestImageDir();
  const vm = await Vm.create({
    kernel: join(image, 'vmlinuz'),
    initrd: join(image, 'initrd.gz'),
    memory: 256 << 20,
    cpus: 2,
    cmdline: `${DEFAULT_CMDLINE} quiet loglevel=4`, // each console byte is an exit
    timeoutMs: 15_000, // the guest's init runs by ~12 s, then waits for devices it lacks
  });
  let r: VmResult;
  try {
    r = await vm.run();
  } finally {
    await vm.close();
  }
  assert.is(r.status, 'timeout');
  const states = r.vcpuStates ?? [];
  console.log(states.map((s, i) => `    vCPU ${i}: ${s}`).join('\n'));
  assert.is(states.length, 2);
  for (const s of states) {
    assert.match(
      s,
      /^rip 0x[0-9a-f]+ IF=[01]; (runnable|uninitialized|init-received|halted|sipi-received); TPR 0x/,
    );
    assert.match(s, /ISR \[[0-9,]*\] IRR \[[0-9,]*\] timer (one-shot|periodic|tsc-deadline)/);
    assert.match(s, /TSC deadline (disarmed|in \d+k cycles|past by \d+k cycles)/);
  }
});

t.run();
