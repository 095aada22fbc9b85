// The VMM's console path (src/vmm/console.ts): bytes from any vCPU leave in the order the guest
// wrote them, a line at a time, and chunks that reach the main thread out of order are put back.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  CONSOLE_BYTES,
  type ConsoleChunk,
  ConsoleSink,
  ConsoleWriter,
  createConsoleBuffer,
} from '../../src/vmm/console.js';

const text = (s: string): number[] => [...Buffer.from(s)];

test('two vCPUs writing one line: one chunk, in order', () => {
  const sab = createConsoleBuffer(),
    posted: ConsoleChunk[] = [];
  const a = new ConsoleWriter(sab, (c) => posted.push(c)),
    b = new ConsoleWriter(sab, (c) => posted.push(c));
  a.put(71); // 'G' from one vCPU, the rest of the line from the other
  for (const x of text('UEST-CHECK ok\nnext')) b.put(x);
  assert.equal(
    posted.map((c) => [c.seq, Buffer.from(c.bytes).toString()]),
    [[0, 'GUEST-CHECK ok\n']],
  );
  a.flush();
  assert.equal(Buffer.from(posted[1]!.bytes).toString(), 'next');
});

test('a full buffer is posted without a newline', () => {
  const posted: ConsoleChunk[] = [];
  const w = new ConsoleWriter(createConsoleBuffer(), (c) => posted.push(c));
  for (let i = 0; i < CONSOLE_BYTES + 1; i++) w.put(65);
  assert.equal(
    posted.map((c) => c.bytes.length),
    [CONSOLE_BYTES],
  );
});

test('the sink delivers by sequence number', () => {
  const got: string[] = [];
  const s = new ConsoleSink((b) => got.push(Buffer.from(b).toString()));
  const chunk = (seq: number, t: string): ConsoleChunk => ({ seq, bytes: Buffer.from(t) });
  s.take(chunk(1, 'b'));
  assert.equal(got, []);
  s.take(chunk(0, 'a'));
  s.take(chunk(3, 'd'));
  s.take(chunk(2, 'c'));
  assert.equal(got, ['a', 'b', 'c', 'd']);
});

test.run();
