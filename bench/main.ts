// npm run bench [-- ffi|ring ...]: runs the named benchmarks (all by default); the last line
// printed is one JSON object with every figure, ratios measured against a baseline in the same run.
import { benchFfi } from './ffi.js';
import { benchRing } from './ring.js';

const all: Record<string, () => Record<string, number> | Promise<Record<string, number>>> = {
  ffi: () => benchFfi(),
  ring: () => benchRing(),
};

const wanted = process.argv.slice(2);
for (const w of wanted) if (!all[w]) { console.error(`bench: unknown benchmark '${w}' (${Object.keys(all).join(', ')})`); process.exit(2); }
const result: Record<string, number> = {};
for (const name of wanted.length ? wanted : Object.keys(all)) {
  console.log(`--- ${name}`);
  Object.assign(result, await all[name]!());
}
console.log(JSON.stringify(result));
