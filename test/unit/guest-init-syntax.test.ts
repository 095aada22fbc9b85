// guest/init is the test guest's init (busybox sh): a syntax error there kills every guest's init
// at boot (the kernel panics, "Attempted to kill init"), which the guest suite only finds after a
// lab boot. Check it here with the shells at hand (dash is a POSIX sh like busybox's ash).
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const INIT = fileURLToPath(new URL('../../../guest/init', import.meta.url));

for (const sh of ['dash', 'bash']) {
  test(`guest/init parses with ${sh} -n`, () => {
    const r = spawnSync(sh, ['-n', INIT], { encoding: 'utf8' });
    if (r.error) throw new Error(`${sh} is needed for this check: ${r.error.message}`);
    assert.is(r.status, 0, `${sh} -n guest/init: ${r.stderr}`);
  });
}

test.run();
