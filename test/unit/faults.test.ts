// Fault injection's parts: the VFR_FAULTS text, the native boundary's errno hook, and the wrapped
// handler's kinds that need no worker (throw, errno, delay, corrupt), each counted.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { errnoNumber } from '../../native/errno.js';
import { failCall } from '../../native/fault-hooks.js';
import { C, check, errno, raw } from '../../native/libc.js';
import {
  armFault,
  createFaultCtl,
  faultyHandler,
  parseFaultSpec,
} from '../../src/device/faults.js';
import { InvalidSpecError } from '../../src/errors.js';
import { C_FAULT_KILL, FAULT_KINDS, STATS_SLOTS } from '../../src/metrics/schema.js';
import { OP, STATUS } from '../../src/ring/protocol.js';
import type { Request } from '../../src/ring/server.js';

test('VFR_FAULTS: keys parsed, mistakes named', () => {
  assert.is(parseFaultSpec(undefined), undefined);
  assert.is(parseFaultSpec(' '), undefined);
  assert.equal(parseFaultSpec('rate=0.01,kinds=kill+delay,seed=7,delay=3,errno=EBUSY'), {
    rate: 0.01,
    kinds: ['kill', 'delay'],
    seed: 7,
    delayMs: 3,
    errno: 'EBUSY',
  });
  assert.throws(
    () => parseFaultSpec('kinds=kill+melt'),
    (e: unknown) => e instanceof InvalidSpecError && /melt/.test((e as Error).message),
  );
  assert.throws(
    () => parseFaultSpec('rate=lots'),
    (e: unknown) => e instanceof InvalidSpecError && /rate/.test((e as Error).message),
  );
  assert.throws(
    () => parseFaultSpec('color=red'),
    (e: unknown) => e instanceof InvalidSpecError && /color/.test((e as Error).message),
  );
});

test('failCall: the hooked call fails with the chosen errno without reaching the kernel, then is put back', () => {
  const fd = check(raw.memfd_create('faults', C.MFD_CLOEXEC), 'memfd_create', 'faults');
  check(raw.ftruncate(fd, 4096), 'ftruncate', 'faults');
  const buf = new Uint8Array(4);
  let fail = true;
  const undo = failCall('pread', errnoNumber('EBUSY'), () => fail);
  try {
    assert.is(raw.pread(fd, buf, 4, 0), -1);
    assert.is(errno(), errnoNumber('EBUSY'));
    fail = false;
    assert.is(raw.pread(fd, buf, 4, 0), 4, 'passes through when not failing');
  } finally {
    undo();
    raw.close(fd);
  }
});

test('the wrapped handler: armed throw, errno, delay and corrupt faults, each counted', () => {
  const stats = new Float64Array(STATS_SLOTS);
  const ctl = createFaultCtl();
  const fd = check(raw.memfd_create('faults2', C.MFD_CLOEXEC), 'memfd_create', 'faults2');
  check(raw.ftruncate(fd, 4096), 'ftruncate', 'faults2');
  const seen: number[] = [];
  const inner = (req: Request): number => {
    seen.push(req.op);
    if (req.op !== OP.BAR_READ) return STATUS.BAD_OP;
    return raw.pread(fd, req.data, 4, 0) === 4 ? STATUS.OK : STATUS.IO_ERROR;
  };
  const h = faultyHandler(inner, { delayMs: 30, errno: 'EIO' }, ctl, stats);
  const req: Request = {
    op: OP.BAR_READ,
    index: 0,
    offset: 0,
    size: 4,
    data: new Uint8Array(16),
    words: undefined,
  };
  const call = (): number => {
    req.op = OP.BAR_READ;
    return h(req);
  };
  try {
    assert.is(call(), STATUS.OK, 'no fault armed, rate 0: the request as is');
    armFault(ctl, 'throw');
    assert.throws(() => call(), /injected fault/);
    armFault(ctl, 'errno');
    assert.is(call(), STATUS.IO_ERROR, 'its pread failed at the native boundary');
    assert.is(call(), STATUS.OK, 'one request only');
    armFault(ctl, 'delay');
    const t0 = performance.now();
    assert.is(call(), STATUS.OK);
    assert.ok(performance.now() - t0 >= 29, 'delayed');
    armFault(ctl, 'corrupt');
    assert.is(call(), STATUS.BAD_OP, 'its op was garbage');
    const counts = Object.fromEntries(FAULT_KINDS.map((k, i) => [k, stats[C_FAULT_KILL + i]]));
    assert.equal(counts, { kill: 0, throw: 1, crash: 0, hang: 0, errno: 1, delay: 1, corrupt: 1 });
  } finally {
    raw.close(fd);
  }
});

test.run();
