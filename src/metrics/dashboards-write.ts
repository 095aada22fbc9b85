// `npm run dashboards`: (re)write dashboards/*.json and dashboards/vm/*.json from
// src/metrics/dashboards.ts.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildDashboards, dashboardJson } from './dashboards.js';

const dir = fileURLToPath(new URL('../../../dashboards/', import.meta.url));
for (const [file, d] of Object.entries(buildDashboards())) {
  mkdirSync(dirname(`${dir}${file}`), { recursive: true });
  writeFileSync(`${dir}${file}`, dashboardJson(d));
  console.log(`wrote dashboards/${file}`);
}
