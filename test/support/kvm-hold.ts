// One idle KVM VM held while a guest suite runs. Creating or destroying the host's first or last
// VM flips a static key in the lab kernel's scheduler (KVM's preempt notifiers), and the lab's
// TCG now and then runs stale code on the other vCPU while it is patched (the L1 kernel's
// "Oops: int3" in __schedule: all 3 attempts of one lab run, at a boot's start or end). With
// this VM alive, the VMMs the tests boot (in this process or a child) flip nothing. Counted, so
// suites in one process share one VM.
import * as kvm from '../../native/kvm.js';
import { C } from '../../native/libc.js';
import { OwnedFd } from '../../src/fd.js';

let held: OwnedFd[] = [];
let users = 0;

export function holdKvmVm(): void {
  if (users++ > 0) return;
  const sys = OwnedFd.open('/dev/kvm', C.O_RDWR);
  held = [sys, new OwnedFd(kvm.createVm(sys), 'kvm-vm (held by the guest suite)')];
}

export function releaseKvmVm(): void {
  if (users === 0 || --users > 0) return;
  for (const f of held.reverse()) f.close();
  held = [];
}
