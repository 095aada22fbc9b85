// The adaptive spin budget (µs): full while spinning pays, its minimum when it does not, back to
// full after one window in which spinning paid again, and a probe at full every 8th window.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SpinBudget } from '../../src/ring/spin.js';

const window = (b: SpinBudget, hits: number): void => { for (let i = 0; i < 64; i++) if (i < hits) b.hit(); else b.miss(); };

test('starts at the maximum; the minimum is a sixteenth of it unless given (at most the maximum)', () => {
  const b = new SpinBudget(200);
  assert.is(b.us, 200);
  assert.is(b.ms, 0.2);
  assert.is(b.min, 12.5);
  assert.is(new SpinBudget(200, 5).min, 5);
  assert.is(new SpinBudget(8, 32).min, 8);
});

test('a window where spinning rarely pays drops to the minimum; one where it pays restores the maximum', () => {
  const b = new SpinBudget(200, 5);
  window(b, 64);
  assert.is(b.us, 200);
  window(b, 47); // fewer than 3 in 4
  assert.is(b.us, 5);
  window(b, 48); // 3 in 4 caught their event at the minimum: spinning pays again
  assert.is(b.us, 200);
});

test('at the minimum, every 8th window is a probe at the maximum', () => {
  const b = new SpinBudget(160);
  const us: number[] = [];
  for (let w = 1; w <= 17; w++) { window(b, 0); us.push(b.us); }
  assert.equal(us, [10, 10, 10, 10, 10, 10, 10, 160, 10, 10, 10, 10, 10, 10, 10, 160, 10]);
});

test.run();
