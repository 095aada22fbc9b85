// npm run bench [-- ffi|ring ...]: runs the named benchmarks (all by default); the last line
// printed is one JSON object with every figure, ratios measured against a baseline in the same run.

import { benchConfig } from './config.js';
import { benchFfi } from './ffi.js';
import { benchMap } from './map.js';
import { benchMetrics } from './metrics.js';
import { benchRing } from './ring.js';

const all: Record<string, () => Record<string, number> | Promise<Record<string, number>>> = {
  ffi: () => benchFfi(),
  ring: () => benchRing(),
  metrics: () => benchMetrics(),
};

/** Benchmarks that run only when named: the lab's devices (map), or a long check (config). */
const labOnly: Record<string, () => Record<string, number> | Promise<Record<string, number>>> = {
  map: () => benchMap(),
  config: () => benchConfig(),
};

const wanted = process.argv.slice(2);
Object.assign(
  all,
  Object.fromEntries(wanted.filter((w) => labOnly[w]).map((w) => [w, labOnly[w]!])),
);
for (const w of wanted)
  if (!all[w]) {
    console.error(
      `bench: unknown benchmark '${w}' (${[...Object.keys(all), ...Object.keys(labOnly)].join(', ')})`,
    );
    process.exit(2);
  }
const result: Record<string, number> = {};
for (const name of wanted.length ? wanted : Object.keys(all)) {
  console.log(`--- ${name}`);
  Object.assign(result, await all[name]!());
}
console.log(JSON.stringify(result));
