// The front door (src/index.ts, src/threads.ts): the package's own name resolves to it through
// package.json "exports", every error kind is exported by name, the light half is the same
// bindings.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as door from '../../src/index.js';
import * as threads from '../../src/threads.js';

const pkg = (name: string): Promise<Record<string, unknown>> => import(name);

test('the package name resolves to the front door ("exports"), "./threads" to its light half', async () => {
  assert.is(await pkg('vfio-runtime'), door as unknown);
  assert.is(await pkg('vfio-runtime/threads'), threads as unknown);
});

test('every error kind and what a VMM builds on is exported by name', () => {
  for (const [code, cls] of door.ERROR_CLASSES)
    assert.is((door as Record<string, unknown>)[cls.name], cls, `${code}: ${cls.name}`);
  for (const name of [
    'Runtime',
    'DeviceHandle',
    'normalizeRuntimeSpec',
    'normalizeDeviceSpec',
    'GsiRouter',
    'RingClient',
    'STATUS',
    'OP',
    'MemfdRegion',
    'memfdRegionSource',
    'OwnedFd',
    'createEventfd',
    'sendFds',
    'listFunctions',
    'startMetricsServer',
  ])
    assert.type(
      (door as Record<string, unknown>)[name],
      name === 'STATUS' || name === 'OP' ? 'object' : 'function',
      name,
    );
});

test('the light half is the same bindings as the whole door', () => {
  for (const [name, value] of Object.entries(threads))
    assert.is((door as Record<string, unknown>)[name], value, name);
});

test.run();
