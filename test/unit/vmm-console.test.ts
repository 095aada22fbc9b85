// The VMM's console ring: bytes come out in the order the UART took them, across the ring's
// wrap, and a full ring drops (and counts) rather than overwriting what was not read.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  CONSOLE_BYTES,
  ConsoleWriter,
  consoleDropped,
  createConsoleRing,
  drainConsole,
} from '../../src/vmm/console-ring.js';

const t = suite('vmm: console ring');

t('two writers (as two vCPUs under the UART lock) keep the order of their puts', () => {
  const sab = createConsoleRing(),
    a = new ConsoleWriter(sab),
    b = new ConsoleWriter(sab);
  for (const [w, c] of [
    [b, 'G'],
    [a, 'U'],
    [a, 'E'],
    [b, 'S'],
    [a, 'T'],
  ] as const)
    w.put(c.charCodeAt(0));
  assert.is(Buffer.from(drainConsole(sab)!).toString(), 'GUEST');
  assert.is(drainConsole(sab), undefined, 'nothing more');
});

t('across the wrap, and a full ring drops and counts', () => {
  const sab = createConsoleRing(),
    w = new ConsoleWriter(sab);
  for (let i = 0; i < CONSOLE_BYTES - 3; i++) w.put(i & 0xff);
  assert.is(drainConsole(sab)!.length, CONSOLE_BYTES - 3);
  for (let i = 0; i < 10; i++) w.put(i);
  assert.equal([...drainConsole(sab)!], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  for (let i = 0; i < CONSOLE_BYTES + 5; i++) w.put(7);
  assert.is(consoleDropped(sab), 5);
  const all = drainConsole(sab)!;
  assert.is(all.length, CONSOLE_BYTES);
  assert.ok(all.every((x) => x === 7));
});

t.run();
