// Where the tests find the repository, the lab's kernel headers and the compiled tree.
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root (this file is compiled to dist/test/support/). */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

/** uAPI headers of the lab kernel: LAB_INCLUDE, ../shared/lab/include, or the lab build cache. */
export function labInclude(): { include: string; includeTest: string } | undefined {
  const cache = process.env.LAB_CACHE ?? join(homedir(), '.cache/vfio-runtime-lab');
  const candidates = [
    process.env.LAB_INCLUDE,
    join(repoRoot, '../shared/lab/include'),
    join(cache, 'include'),
  ];
  for (const c of candidates) {
    if (c && existsSync(join(c, 'linux/iommufd.h')))
      return { include: c, includeTest: join(c, '../include-test') };
  }
  return undefined;
}
