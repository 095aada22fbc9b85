// Kicking vCPU threads out of KVM_RUN safely. A thread blocked in KVM_RUN (halted, or an AP
// still waiting for its SIPI) only returns on a signal, so the main thread sends SIGUSR2 with
// pthread_kill; but pthread_kill on a thread that has already ended is undefined behaviour. So
// each vCPU has a state word: the kicker holds it (RUNNING -> KICKING) around pthread_kill, and
// a leaving thread waits until it can move it from RUNNING to LEFT.
import { C, raw } from '../../native/libc.js';

export const VCPU_STATE = { NOT_STARTED: 0, RUNNING: 1, KICKING: 2, LEFT: 3 } as const;

/** The vCPU thread, before it ends: no kick can reach it after this returns. */
export function leaveThread(state: Int32Array, i: number): void {
  while (
    Atomics.compareExchange(state, i, VCPU_STATE.RUNNING, VCPU_STATE.LEFT) === VCPU_STATE.KICKING
  ) {
    // a kick in flight: a few µs
  }
}

/** Send SIGUSR2 to vCPU `i`'s thread if it is running; false if it has left or not started. */
export function kick(state: Int32Array, tids: BigUint64Array, i: number): boolean {
  if (
    Atomics.compareExchange(state, i, VCPU_STATE.RUNNING, VCPU_STATE.KICKING) !== VCPU_STATE.RUNNING
  )
    return false;
  try {
    raw.pthread_kill(tids[i]!, C.SIGUSR2);
  } finally {
    Atomics.store(state, i, VCPU_STATE.RUNNING);
  }
  return true;
}
