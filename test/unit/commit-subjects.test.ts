// Commit subjects: every commit after SINCE (the last one before the rule was kept) has a
// subject `component: what changed` of at most 72 characters, measurements going in the body
// (issue 23). Skipped, saying why, where there is no git history to read (a tarball, a shallow
// clone that does not reach SINCE).
import { execFileSync } from 'node:child_process';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { repoRoot } from '../support/paths.js';
import { skipBecause } from '../support/skip.js';

/** The newest commit whose subject was written before the rule: older history stays as it is. */
const SINCE = 'ddc5716';
const MAX = 72;
/** `component: what changed`; a component is a path or a name (src/vmm, lab/run, vfio-user, ci). */
const SHAPE = /^[A-Za-z0-9][\w./+-]*(, [\w./+-]+)*: \S/;

function subjects(): string[] | string {
  try {
    const out = execFileSync('git', ['log', '--no-merges', '--format=%h %s', `${SINCE}..HEAD`], {
      cwd: repoRoot,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return out.split('\n').filter(Boolean);
  } catch (e) {
    return `no git history reaching ${SINCE} here (${(e as Error).message.split('\n')[0]})`;
  }
}

const NAME = `commit subjects after ${SINCE}: component: what changed, at most ${MAX} characters`;
const list = subjects();
if (typeof list === 'string') skipBecause(test, NAME, list);
else
  test(NAME, () => {
    const bad = list.filter((l) => {
      const s = l.slice(l.indexOf(' ') + 1);
      return s.length > MAX || !SHAPE.test(s);
    });
    assert.equal(bad, [], `subjects over ${MAX} characters or not 'component: what changed'`);
  });

test.run();
