// Benchmark helpers: medians, a C baseline compiled on demand, the JSON last line, and the
// windowed ring throughput loop the ring and metrics benchmarks share.
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RingClient } from '../src/ring/client.js';
import { OP, STATUS } from '../src/ring/protocol.js';
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

/** Requests per second from one thread keeping a window of requests in flight (BAR reads). */
export function ringThroughput(c: RingClient, total = 2_000_000, window = 64): number {
  const tickets = new Int32Array(window);
  const t0 = performance.now();
  for (let i = 0; i < total; i++) {
    const k = i % window;
    if (i >= window) {
      const t = tickets[k]!;
      if (c.await(t) !== STATUS.OK) throw new Error('ring read failed');
      c.release(t);
    }
    tickets[k] = c.submit(OP.BAR_READ, 0, (i & 0xff) * 4, 4);
  }
  for (let i = total; i < total + window; i++) {
    const t = tickets[i % window]!;
    c.await(t);
    c.release(t);
  }
  return total / ((performance.now() - t0) / 1000);
}
