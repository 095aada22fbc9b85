// summarizeTrace (test/support/kvm-trace.ts) on KVM trace text: the lab's livelock signature
// (a vCPU looping on a nested page fault while delivering a #PF) is named whether or not the
// other vCPU keeps exiting beside it, and is not named once the loop has ended.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { summarizeTrace } from '../support/kvm-trace.js';

const npf = (vcpu: number, t: number): string[] => [
  ` qemu-system-x86-170 [000] d..1. ${t}.000001: kvm_exit: vcpu ${vcpu} reason npf rip 0xffffffff944a894c info1 0x000000020000000e info2 0x000000012ff21ff8 intr_info 0x80000b0e error_code 0x00000010 requests 0x0`,
  ` qemu-system-x86-170 [000] ..... ${t}.000002: kvm_inj_exception: #PF (0x10) [reinjected]`,
];
const hlt = (vcpu: number, t: number): string =>
  ` qemu-system-x86-169 [001] d..1. ${t}.000003: kvm_exit: vcpu ${vcpu} reason hlt rip 0xffffffffb804e8ca info1 0x0 info2 0x0 intr_info 0x00000000 error_code 0x00000000`;
const loop = (n: number, other?: number): string[] =>
  Array.from({ length: n }, (_, i) => [
    ...npf(1, i),
    ...(other !== undefined && i % 7 === 0 ? [hlt(other, i)] : []),
  ]).flat();

test('a vCPU that loops alone on the nested page fault is the lab livelock', () => {
  assert.match(
    summarizeTrace(loop(60).join('\n')) ?? '',
    /^npf-loop-in-pf-delivery vcpu 1 rip 0xffffffff944a894c gpa 0x000000012ff21ff8/,
  );
});

test('the other vCPU halting beside the loop does not hide it (seen on QEMU in the soak)', () => {
  assert.match(summarizeTrace(loop(60, 0).join('\n')) ?? '', /^npf-loop-in-pf-delivery vcpu 1 /);
});

test('a loop the vCPU left (its last exit is another) is not the livelock', () => {
  const t = [...loop(60, 0), hlt(1, 99)].join('\n');
  assert.is(summarizeTrace(t), undefined);
});

test('too short a run is not the livelock', () => {
  assert.is(summarizeTrace(loop(10).join('\n')), undefined);
});

test('a shutdown names the exceptions before it', () => {
  const t = [
    ' x [000] ..... 1.0: kvm_inj_exception: #GP (0x0)',
    ' x [000] ..... 1.1: kvm_inj_exception: #DF (0x0)',
    ' x [000] d..1. 1.2: kvm_exit: vcpu 0 reason shutdown rip 0xfff0 info1 0x0 info2 0x0 intr_info 0x0 error_code 0x0',
  ].join('\n');
  assert.is(summarizeTrace(t), 'shutdown after #GP #DF');
});

test('a shutdown while delivering a #PF says so', () => {
  const t = [
    ' x [000] d..1. 1.1: kvm_exit: vcpu 0 reason io rip 0xffffffff916a4456 info1 0x3f80010 info2 0x0 intr_info 0x00000000 error_code 0x00000000',
    ' x [000] d..1. 1.2: kvm_exit: vcpu 0 reason shutdown rip 0xffffffff916a4457 info1 0x0 info2 0x0 intr_info 0x80000b0e error_code 0x00000010',
  ].join('\n');
  assert.is(
    summarizeTrace(t),
    'shutdown while delivering #PF (error 0x10) after io@0xffffffff916a4456',
  );
});

test.run();
