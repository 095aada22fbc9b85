// `npm run dashboards`: (re)write dashboards/*.json from src/metrics/dashboards.ts.
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { buildDashboards, dashboardJson } from './dashboards.js';

const dir = fileURLToPath(new URL('../../../dashboards/', import.meta.url));
mkdirSync(dir, { recursive: true });
for (const [file, d] of Object.entries(buildDashboards())) {
  writeFileSync(`${dir}${file}`, dashboardJson(d));
  console.log(`wrote dashboards/${file}`);
}
