// The minimal VMM (src/vmm/) run as a library inside this process: a Linux guest boots with the
// lab's NVMe assigned (iommufd, interrupts through KVM), its init writes its verdict to the
// debug-exit port, and after close() the process holds the same fds and threads as before and
// the runtime no mapping. Needs a guest: VMM_KERNEL (a bzImage) and VMM_INITRD (whose init
// writes 0 to port 0x501 when its checks pass; VMM_EXPECT_CODE overrides 0; VMM_CMDLINE
// replaces the default kernel command line).

import { existsSync } from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Vm, type VmResult } from '../../src/vmm/vm.js';
import { labDevice, requireLab } from '../support/lab.js';
import { processState, settledState } from '../support/process-state.js';
import { skipBecause } from '../support/skip.js';

const t = suite('vmm: a Linux guest on the minimal VMM');
t.before(() => requireLab());

const kernel = process.env.VMM_KERNEL,
  initrd = process.env.VMM_INITRD;
const NAME =
  'boots with an NVMe assigned, ends by its debug-exit port, leaves no fd, thread or mapping';

if (!kernel || !existsSync(kernel) || (initrd && !existsSync(initrd)) || !existsSync('/dev/kvm')) {
  skipBecause(
    t,
    NAME,
    !existsSync('/dev/kvm')
      ? 'no /dev/kvm in this guest'
      : 'set VMM_KERNEL (bzImage) and VMM_INITRD to a guest image',
  );
} else {
  t(NAME, async () => {
    const before = processState();
    let console = '';
    const vm = await Vm.create({
      kernel,
      ...(initrd ? { initrd } : {}),
      ...(process.env.VMM_CMDLINE ? { cmdline: process.env.VMM_CMDLINE } : {}),
      memory: 512 << 20,
      cpus: 2,
      timeoutMs: 480_000,
      iommu: [{ id: 'ctx0' }],
      vfio: [{ bdf: labDevice('nvme'), port: 'nvme0', iommu: 'ctx0' }],
      onConsole: (b) => {
        console += Buffer.from(b).toString('latin1');
      },
    });
    let r: VmResult;
    try {
      assert.equal(
        vm.runtime.describe().memory.map((m) => m.name),
        ['ram-low'],
      );
      r = await vm.run();
    } finally {
      await vm.close();
    }
    const tail = console.split('\n').slice(-15).join('\n');
    globalThis.console.log(
      `    ${r.status} ${r.code} after ${(r.wallMs / 1000).toFixed(1)} s; exits ${r.stats.exits} (mmio ${r.stats.mmio}, config ${r.stats.config}, nvme0 BAR ${r.stats.bar.nvme0}, refused ${r.stats.refused})`,
    );
    assert.is(r.status, 'exit', `the guest did not end by its debug-exit port:\n${tail}`);
    assert.is(r.code, Number(process.env.VMM_EXPECT_CODE ?? 0), tail);
    assert.ok(r.stats.bar.nvme0! > 0, 'the guest reached the NVMe BAR');
    assert.is(vm.runtime.memory.regions().length, 0, 'no guest-memory mapping left');
    const after = await settledState(before);
    assert.equal(after.fds, before.fds, 'the same fds as before');
    assert.is(after.threads, before.threads, 'the same number of threads as before');
  });
}

t.run();
