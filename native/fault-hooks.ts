// Fault injection at the native boundary (off unless a fault spec asks for it, see
// src/device/faults.ts): make one libc call of `raw` fail with a chosen errno, as the kernel
// would, without reaching the kernel. Bindings only: which call fails when is the caller's policy.
// `raw` is per thread (koffi functions are), so a hook in a device worker touches that worker only.
import koffi from 'koffi';
import { raw } from './libc.js';

/** The calls a hook can fail: the ones a device worker makes per request. */
export type HookableCall = 'pread' | 'pwrite' | 'read' | 'write' | 'ioctlPtr' | 'ioctlInt';

/**
 * From now on, `call` fails with `errno` (returns -1, errno set) whenever `fail()` says so;
 * otherwise it is the real call. Returns the function that puts the real call back.
 */
export function failCall(call: HookableCall, errno: number, fail: () => boolean): () => void {
  const real = raw[call] as (...a: never[]) => number;
  const hooked = (...a: never[]): number => {
    if (!fail()) return real(...a);
    koffi.errno(errno);
    return -1;
  };
  (raw as Record<HookableCall, unknown>)[call] = hooked;
  return () => {
    (raw as Record<HookableCall, unknown>)[call] = real;
  };
}
