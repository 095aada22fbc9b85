// xorshift32, the one seeded random source of the runtime and its stress harness: the fault
// draws of a device worker (device/faults.ts) and the stress producers (bench/stress). No imports,
// so a producer thread loads nothing else for it.

/**
 * xorshift32: reproducible draws in [0, 1) from a seed, no allocation per draw (also the stress
 * harness's producers'). A seed whose low 32 bits are 0 starts from `zeroSeed` instead.
 */
export function xorshift32(seed: number, zeroSeed = 0x9e3779b9): () => number {
  let x = seed | 0 || zeroSeed;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x100000000;
  };
}
