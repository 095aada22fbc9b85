// The vCPU's thread body, startVcpu (src/vmm/vcpu.ts), run on this thread without KVM: its
// kvm_run page mapped from a memfd, whose KVM_RUN fails ENOTTY. It fails the VM with the call's
// errno, leaves its state word, and reports its ports; a VM that has ended does not run at all.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { MemfdRegion } from '../../src/index.js';
import { createConsoleBuffer } from '../../src/vmm/console.js';
import { CTL, createShared, END } from '../../src/vmm/shared.js';
import { startVcpu, type VcpuWorkerData } from '../../src/vmm/vcpu.js';
import { VCPU_STATE } from '../../src/vmm/vcpu-threads.js';

function vcpuOn(run: MemfdRegion): { data: VcpuWorkerData; ctl: Int32Array; state: Int32Array } {
  const shared = createShared(1);
  const state = new Int32Array(new SharedArrayBuffer(4));
  const data: VcpuWorkerData = {
    index: 0,
    vcpuFd: run.fd.fd,
    vmFd: run.fd.fd,
    runSize: run.size,
    ctl: shared.ctl,
    bars: shared.bars,
    slots: shared.slots,
    stats: shared.stats,
    state: state.buffer as SharedArrayBuffer,
    tids: new SharedArrayBuffer(8),
    rings: [],
    console: createConsoleBuffer(),
  };
  return { data, ctl: new Int32Array(shared.ctl), state };
}

test('a KVM_RUN that fails ends the VM with its errno; the thread leaves and reports', () => {
  const run = new MemfdRegion('kvm-run', 4096);
  try {
    const { data, ctl, state } = vcpuOn(run);
    const got: { type: string; message?: string; top?: unknown }[] = [];
    startVcpu(data, { postMessage: (m) => got.push(m as (typeof got)[number]) });
    assert.equal(got, [
      { type: 'error', message: 'vCPU 0: KVM_RUN: ENOTTY' },
      { type: 'ports', top: [] },
    ]);
    assert.is(Atomics.load(ctl, CTL.ENDED), 1);
    assert.is(Atomics.load(ctl, CTL.END_KIND), END.ERROR);
    assert.is(Atomics.load(state, 0), VCPU_STATE.LEFT);
  } finally {
    run.close();
  }
});

test('a VM already ended: no KVM_RUN, only the ports report', () => {
  const run = new MemfdRegion('kvm-run', 4096);
  try {
    const { data, ctl } = vcpuOn(run);
    Atomics.store(ctl, CTL.ENDED, 1);
    const got: unknown[] = [];
    startVcpu(data, { postMessage: (m) => got.push(m) });
    assert.equal(got, [{ type: 'ports', top: [] }]);
  } finally {
    run.close();
  }
});

test.run();
