// The adaptive spin budget (µs): full while spinning pays, its minimum when it does not, doubling
// back with each window in which spinning paid again, and (for a prober) a probe at full every
// 8th window.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SpinBudget } from '../../src/ring/spin.js';

const window = (b: SpinBudget, hits: number): void => {
  for (let i = 0; i < 64; i++)
    if (i < hits) b.hit();
    else b.miss();
};

test('starts at the maximum; the minimum is a sixteenth of it unless given (at most the maximum)', () => {
  const b = new SpinBudget(200);
  assert.is(b.us, 200);
  assert.is(b.ms, 0.2);
  assert.is(b.min, 12.5);
  assert.is(new SpinBudget(200, 5).min, 5);
  assert.is(new SpinBudget(8, 32).min, 8);
});

test('a window where spinning rarely pays drops to the minimum; each one where it pays doubles the budget', () => {
  const b = new SpinBudget(200, 5);
  window(b, 64);
  assert.is(b.us, 200);
  window(b, 47); // fewer than 3 in 4
  assert.is(b.us, 5);
  const us: number[] = [];
  for (let w = 0; w < 7; w++) {
    window(b, 48);
    us.push(b.us);
  } // 3 in 4 caught their event: spinning pays again
  assert.equal(us, [10, 20, 40, 80, 160, 200, 200]);
});

test('a budget that does not probe stays at its minimum while spinning does not pay', () => {
  const b = new SpinBudget(2000, 5, false);
  const us: number[] = [];
  for (let w = 1; w <= 17; w++) {
    window(b, 10);
    us.push(b.us);
  }
  assert.ok(
    us.every((u) => u === 5),
    us.join(' '),
  );
});

test('at the minimum, every 8th window is a probe at the maximum', () => {
  const b = new SpinBudget(160);
  const us: number[] = [];
  for (let w = 1; w <= 17; w++) {
    window(b, 0);
    us.push(b.us);
  }
  assert.equal(us, [10, 10, 10, 10, 10, 10, 10, 160, 10, 10, 10, 10, 10, 10, 10, 160, 10]);
});

test.run();
