// A skipped test that says why in the output (uvu's own skip is silent).
import type { Test } from 'uvu';

export function skipBecause(t: Test, name: string, reason: string): void {
  console.log(`  SKIP ${name}: ${reason}`);
  t.skip(name, () => {});
}
