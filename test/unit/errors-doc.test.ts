// The errors table of docs/architecture.md ("Errors a caller can tell apart") lists exactly the
// codes in ERR, each row with its class, the HTTP status that class carries and fields its
// errors have (as fastify's test/internals/errors.test.js holds its docs to its errors).
import { readFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ERR, ERROR_CLASSES } from '../../src/errors.js';
import { samples } from '../support/error-thrower.js';

const doc = readFileSync(new URL('../../../docs/architecture.md', import.meta.url), 'utf8');

/** The table's rows under the heading, as [code, class, status, fields] cells. */
function rows(): string[][] {
  const section = doc.split('\n## Errors a caller can tell apart\n')[1]?.split('\n## ')[0] ?? '';
  return section
    .split('\n')
    .filter((l) => l.startsWith('| `VFR_ERR_'))
    .map((l) =>
      l
        .slice(1, -1)
        .split('|')
        .map((c) => c.trim()),
    );
}
const ticked = (cell: string): string[] =>
  [...cell.matchAll(/`([A-Za-z_][A-Za-z0-9_]*)`/g)].map((m) => m[1]!);

test('the table lists every code in ERR once, and no other', () => {
  const codes = rows().map((r) => ticked(r[0]!)[0]);
  assert.ok(codes.length > 0, 'the table is there');
  assert.equal([...codes].sort(), [...Object.values(ERR)].sort());
});

test("each row names its code's class and the HTTP status that class carries", () => {
  for (const [code, cls, status] of rows()) {
    const c = ticked(code!)[0]!;
    const klass = ERROR_CLASSES.get(c) as unknown as { name: string; statusCode: number };
    assert.is(ticked(cls!)[0], klass.name, `${c}: class`);
    if (status === '`status`') {
      // A kind whose instances carry their own status (ApiError): the sample's is its field.
      const e = samples[klass.name]!() as unknown as { status: number; statusCode: number };
      assert.is(e.statusCode, e.status, `${c}: statusCode is the error's own status`);
    } else assert.is(Number(status), klass.statusCode, `${c}: status`);
  }
});

test("each row's fields are fields its errors have", () => {
  for (const [code, cls, , fields] of rows()) {
    const e = samples[ticked(cls!)[0]!]!() as unknown as Record<string, unknown>;
    for (const f of ticked(fields!)) assert.ok(f in e, `${ticked(code!)[0]}: ${f}`);
  }
});

test.run();
