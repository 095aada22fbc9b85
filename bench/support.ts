// Benchmark helpers: medians, a C baseline compiled on demand, and the JSON last line.
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { labInclude } from '../test/support/paths.js';

export const benchSrc = resolve(dirname(fileURLToPath(import.meta.url)), '../../bench');

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
}

/** Compile bench/c/<name>.c and return the binary's path. */
export function compileC(name: string): string {
  const out = join(mkdtempSync(join(tmpdir(), 'bench-')), name);
  const inc = labInclude();
  execFileSync(
    'cc',
    ['-O2', ...(inc ? ['-I', inc.include] : []), '-o', out, join(benchSrc, 'c', `${name}.c`)],
    { stdio: 'inherit' },
  );
  return out;
}

export const round = (x: number, d = 3): number => Number(x.toFixed(d));
