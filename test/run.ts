// Test runner: runs every dist/test/<suite>/*.test.js under uvu in this one process and ends
// with the plain line CI reads: "N passed, N failed, N skipped".
//   node dist/test/run.js unit|lab [name-filter]
import { existsSync, readdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const [suite = 'unit', filter] = process.argv.slice(2);
const dir = join(dirname(fileURLToPath(import.meta.url)), suite);
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.test.js') && (!filter || f.includes(filter)))
  .sort();
if (files.length === 0) {
  console.error(`run: no test files in ${dir}${filter ? ` matching '${filter}'` : ''}`);
  process.exit(1);
}

// The guest suites each hold an idle KVM VM (test/support/kvm-hold.ts); one held for the whole
// run keeps the host's VM count from touching 0 between two suites, a flip of the lab kernel's
// scheduler static key (its int3 oops ended one hot-plug run that way).
// Without /dev/kvm (not the lab) the suites fail at once, naming the fix (requireLab).
if (suite === 'guest' && existsSync('/dev/kvm'))
  (await import('./support/kvm-hold.js')).holdKvmVm();

// libuv opens a reserve fd (/dev/null) for good on its loop's first listen(), its way out of
// EMFILE: a leak test whose "before" predates the process's first server (the real guest's
// metrics endpoint) found it as one new fd. Take it now, before any test counts fds.
await new Promise<void>((done) => {
  const s = createServer().listen(`\0vfio-runtime-test-${process.pid}`, () =>
    s.close(() => done()),
  );
});

// The flake ledger (test/support/flakes.ts): this run's retries are the lines added from here on.
const { ledgerLines, ledgerSummary } = await import('./support/flakes.js');
const ledgerStart = ledgerLines().length;

process.env.NO_COLOR = '1';
(globalThis as Record<string, unknown>).UVU_DEFER = 1;
const uvu = await import('uvu');
const queue = (globalThis as unknown as { UVU_QUEUE: unknown[][] }).UVU_QUEUE;
for (const [i, f] of files.entries()) {
  (globalThis as Record<string, unknown>).UVU_INDEX = i;
  queue.push([f]);
  await import(pathToFileURL(join(dir, f)).href);
}

// uvu prints Total/Passed/Skipped but no failed count: read its summary as it is written.
let captured = '';
const write = process.stdout.write.bind(process.stdout);
process.stdout.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
  captured += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString();
  return (write as (c: unknown, ...r: unknown[]) => boolean)(chunk, ...rest);
}) as typeof process.stdout.write;
await uvu.exec(false);
process.stdout.write = write;

const plain = captured.replace(/\x1b\[[0-9;]*m/g, '');
const num = (label: string): number =>
  Number(/\s*(\d+)/.exec(plain.slice(plain.lastIndexOf(label) + label.length))?.[1] ?? NaN);
const total = num('Total:'),
  passed = num('Passed:'),
  skipped = num('Skipped:');
const failed = total - passed;
console.log(`${suite}: ${passed} passed, ${failed} failed, ${skipped} skipped`);
console.log(`${suite}: ${ledgerSummary(ledgerLines(ledgerStart))} retried as the lab's`);
if (failed > 0 || Number.isNaN(total)) process.exitCode = 1;
// Worker threads or handles left open by a failed test must not keep CI waiting.
setTimeout(() => process.exit(), 200).unref();
