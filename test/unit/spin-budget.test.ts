// The adaptive spin budget: full while spinning pays, a sixteenth of it when it does not, back to
// full after one window in which spinning paid again, and a probe at full every 8th window.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SpinBudget } from '../../src/ring/spin.js';

const window = (b: SpinBudget, hits: number): void => { for (let i = 0; i < 64; i++) if (i < hits) b.hit(); else b.miss(); };

test('starts at the maximum; the minimum is a sixteenth of it (at least 16, at most the maximum)', () => {
  const b = new SpinBudget(4000);
  assert.is(b.n, 4000);
  assert.is(b.min, 250);
  assert.is(new SpinBudget(100).min, 16);
  assert.is(new SpinBudget(10).min, 10);
  assert.is(new SpinBudget(4000, 32).min, 32);
  assert.is(new SpinBudget(8, 32).min, 8);
});

test('a window where spinning rarely pays drops to the minimum; one where it pays restores the maximum', () => {
  const b = new SpinBudget(4000);
  window(b, 64);
  assert.is(b.n, 4000);
  window(b, 7); // fewer than 1 in 8
  assert.is(b.n, 250);
  window(b, 8); // 1 in 8 caught their event at the minimum: spinning pays again
  assert.is(b.n, 4000);
});

test('at the minimum, every 8th window is a probe at the maximum', () => {
  const b = new SpinBudget(1600);
  const ns: number[] = [];
  for (let w = 1; w <= 17; w++) { window(b, 0); ns.push(b.n); }
  assert.equal(ns, [100, 100, 100, 100, 100, 100, 100, 1600, 100, 100, 100, 100, 100, 100, 100, 1600, 100]);
});

test.run();
