// Nested translation on the real lab kernel. No emulated IOMMU offers nesting, so the kernel's
// own test driver (IOMMUFD_TEST) provides the mock devices: GET_HW_INFO, the nest-parent HWPT,
// nested HWPTs with selftest data, a mock vIOMMU and vDevice, stage-1 install/uninstall, and
// invalidations whose effect the mock reports (MD_CHECK_IOTLB, DEV_CHECK_CACHE). Whether a
// device is attached to a HWPT is asked of the kernel: DESTROY of an attached HWPT fails EBUSY
// and changes nothing. Teardown is checked the same way: DESTROY of each freed id is ENOENT.
// The lab NVMe sits behind QEMU's intel-iommu, which has no nesting: the "unsupported" path.
import { Registry } from 'prom-client';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { SysError } from '../../native/errno.js';
import * as iommufd from '../../native/iommufd.js';
import { devCheckCache, mdCheckIotlb, IOMMUFD_TEST_C as T } from '../../native/iommufd-test.js';
import type { Target } from '../../native/libc.js';
import { Runtime } from '../../src/coordinator/runtime.js';
import { IommufdContext } from '../../src/dma/iommufd-context.js';
import { SELFTEST_ABORT_IOTLB, SELFTEST_BYPASS_IOTLB } from '../../src/nesting/iommu-types.js';
import { deviceIommuInfo, type NestingSetupError, VIommu } from '../../src/nesting/viommu.js';
import { loud } from '../support/hooks.js';
import { labDevice, requireLab } from '../support/lab.js';
import { type MockDevice, mockDevice } from '../support/mock-iommu.js';

const ENTRIES = [0, 1, 2, 3];

/** What DESTROY of `id` says, without changing anything if the object is in use. */
function destroyAnswer(fd: Target, id: number): string {
  try {
    iommufd.destroy(fd, id);
    return 'destroyed';
  } catch (e) {
    if (e instanceof SysError) return e.code;
    throw e;
  }
}
const iotlb = (fd: Target, hwpt: number, values: readonly number[]): boolean[] =>
  ENTRIES.map((i) => mdCheckIotlb(fd, hwpt, i, values[i]!));
const cache = (fd: Target, dev: number, values: readonly number[]): boolean[] =>
  ENTRIES.map((i) => mdCheckCache(fd, dev, i, values[i]!));
const mdCheckCache = devCheckCache;
const all = <T>(v: T): T[] => ENTRIES.map(() => v);

const s = suite('nested translation (iommufd selftest mock)');
const st: { ctx?: IommufdContext; mock?: MockDevice } = {};
const fd = (): Target => st.ctx!.iommufd;

s.before.each(
  loud('before', () => {
    requireLab();
    st.ctx = IommufdContext.open('nesting');
    st.mock = mockDevice(st.ctx);
  }),
);
s.after.each(
  loud('after', () => {
    try {
      st.mock?.destroy();
    } finally {
      st.ctx?.close();
    }
  }),
);

s('GET_HW_INFO of a mock device and of the lab NVMe (VT-d, no nesting)', () => {
  const mock = deviceIommuInfo(fd(), st.mock!.devId);
  assert.is(mock.type, T.IOMMU_HW_INFO_TYPE_SELFTEST);
  assert.equal(mock.info, {
    iommu: 'selftest',
    testReg: T.IOMMU_HW_INFO_SELFTEST_REGVAL,
    flags: 0,
    nesting: true,
  });
  assert.ok(mock.dirtyTracking, 'the mock IOMMU reports dirty tracking');

  const ctx = IommufdContext.open('nesting-nvme');
  const nvme = ctx.attachPciDevice(labDevice('nvme'));
  try {
    const info = deviceIommuInfo(ctx.iommufd, nvme.devId);
    assert.is(info.type, iommufd.IOMMUFD_C.IOMMU_HW_INFO_TYPE_INTEL_VTD);
    assert.is(info.info.iommu, 'intel-vtd');
    if (info.info.iommu !== 'intel-vtd') return;
    assert.ok(info.info.capReg !== 0n && info.info.ecapReg !== 0n, 'cap and ecap registers read');
    assert.is(
      info.info.nesting,
      false,
      `QEMU's intel-iommu has no ECAP.NEST (ecap 0x${info.info.ecapReg.toString(16)})`,
    );
  } finally {
    nvme.detach();
    ctx.close();
  }
});

s('vIOMMU: nest parent, vIOMMU object, bypass and abort HWPTs made from selftest data', () => {
  const v = VIommu.create('viommu0', st.ctx!, st.mock!, 'selftest');
  const ids = [v.parentHwptId, v.viommuId, v.bypass.hwptId, v.abort.hwptId];
  assert.ok(
    ids.every((id) => typeof id === 'number' && id > 0),
    `ids ${ids.join(', ')}`,
  );
  assert.is(new Set(ids).size, 4, 'four distinct objects');
  // The defaults are nested HWPTs the mock built from our data: their IOTLBs hold our markers.
  assert.equal(iotlb(fd(), v.bypass.hwptId!, all(SELFTEST_BYPASS_IOTLB)), all(true));
  assert.equal(iotlb(fd(), v.abort.hwptId!, all(SELFTEST_ABORT_IOTLB)), all(true));
  // The parent is held by the vIOMMU, which is held by the nested HWPTs.
  assert.is(destroyAnswer(fd(), v.parentHwptId), 'EBUSY');
  assert.is(destroyAnswer(fd(), v.viommuId!), 'EBUSY');
  const d = v.describe();
  assert.is(d.iommu, 'selftest');
  assert.is(d.context, 'nesting');
  assert.equal(d.stats.hwptsLive, 3);
  v.close();
});

s(
  'vDevice: virtual id, attached to bypass; stage-1 install replaces, uninstall goes to bypass or abort',
  () => {
    const v = VIommu.create('viommu0', st.ctx!, st.mock!, 'selftest');
    try {
      const dev = v.addDevice(st.mock!, 0x99);
      assert.ok(dev.vdeviceId! > 0, 'IOMMU_VDEVICE_ALLOC gave an id');
      assert.is(dev.mode, 'bypass');
      assert.is(st.mock!.ptId, v.bypass.hwptId);
      assert.is(
        destroyAnswer(fd(), v.bypass.hwptId!),
        'EBUSY',
        'the device is attached to the bypass HWPT',
      );
      assert.throws(() => v.addDevice(st.mock!, 0x98), /already under/);

      const a = dev.install({ iommu: 'selftest', iotlb: 0x1234 });
      assert.is(dev.mode, 'stage1');
      assert.equal(
        iotlb(fd(), a, all(0x1234)),
        all(true),
        'the stage-1 HWPT carries the guest data',
      );
      assert.is(destroyAnswer(fd(), a), 'EBUSY', 'the device is attached to stage-1 A');

      const b = dev.install({ iommu: 'selftest', iotlb: 0x5678 });
      assert.is(destroyAnswer(fd(), b), 'EBUSY', 'the device moved to stage-1 B');
      assert.is(destroyAnswer(fd(), a), 'ENOENT', 'A was freed after the replace');
      assert.is(v.hwptsLive, 4);

      dev.uninstall('abort');
      assert.is(dev.mode, 'abort');
      assert.is(
        destroyAnswer(fd(), v.abort.hwptId!),
        'EBUSY',
        'the device is attached to the abort HWPT',
      );
      assert.is(destroyAnswer(fd(), b), 'ENOENT', 'B was freed');

      dev.install({ iommu: 'selftest', iotlb: 1 });
      dev.uninstall();
      assert.is(dev.mode, 'bypass');
      assert.is(destroyAnswer(fd(), v.bypass.hwptId!), 'EBUSY', 'back on the bypass HWPT');
      assert.is(v.stats.stage1Installs, 3);
      assert.is(v.stats.stage1Uninstalls, 2);
      assert.is(v.hwptsLive, 3);
      assert.equal(v.describe().devices, [
        {
          device: st.mock!.label,
          devId: st.mock!.devId,
          virtId: '0x99',
          vdeviceId: dev.vdeviceId,
          mode: 'bypass',
          stage1HwptId: undefined,
        },
      ]);
    } finally {
      v.close();
    }
  },
);

s('stage-1 invalidation: the mock IOTLB entries named are cleared, in one batch', () => {
  const v = VIommu.create('viommu0', st.ctx!, st.mock!, 'selftest');
  try {
    const dev = v.addDevice(st.mock!, 0x99);
    const hwpt = dev.install({ iommu: 'selftest', iotlb: T.IOMMU_TEST_IOTLB_DEFAULT });
    assert.is(dev.invalidateStage1([]), 0, 'an empty batch checks the data type');
    assert.is(
      dev.invalidateStage1([
        { iommu: 'selftest', iotlbId: 1 },
        { iommu: 'selftest', iotlbId: 3 },
      ]),
      2,
    );
    const D = T.IOMMU_TEST_IOTLB_DEFAULT;
    assert.equal(iotlb(fd(), hwpt, [D, 0, D, 0]), all(true));
    assert.is(dev.invalidateStage1([{ iommu: 'selftest', iotlbId: 'all' }]), 1);
    assert.equal(iotlb(fd(), hwpt, all(0)), all(true));
    assert.throws(
      () => dev.invalidateStage1([{ iommu: 'selftest', iotlbId: 4 }]),
      /iotlbId must be 0-3/,
    );
    assert.equal(
      {
        b: v.stats.invalidationBatches,
        e: v.stats.invalidationEntries,
        c: v.stats.invalidationConsumed,
        f: v.stats.invalidationFailures,
      },
      { b: 3, e: 3, c: 3, f: 0 },
    );
  } finally {
    v.close();
  }
});

s(
  'vIOMMU invalidation: device cache entries cleared; a batch the kernel stops part way reports what it consumed',
  () => {
    const v = VIommu.create('viommu0', st.ctx!, st.mock!, 'selftest');
    try {
      v.addDevice(st.mock!, 0x99);
      const D = T.IOMMU_TEST_DEV_CACHE_DEFAULT,
        dev = st.mock!.devId;
      assert.equal(cache(fd(), dev, all(D)), all(true));
      assert.is(
        v.invalidate([
          { iommu: 'selftest', virtId: 0x99, cacheId: 0 },
          { iommu: 'selftest', virtId: 0x99, cacheId: 2 },
        ]),
        2,
      );
      assert.equal(cache(fd(), dev, [0, D, 0, D]), all(true));
      // Entry #1 names a virtual id no vDevice has: the kernel applies #0 and stops.
      let err: (Error & { consumed?: number }) | undefined;
      try {
        v.invalidate([
          { iommu: 'selftest', virtId: 0x99, cacheId: 1 },
          { iommu: 'selftest', virtId: 0x9, cacheId: 3 },
        ]);
      } catch (e) {
        err = e as Error;
      }
      assert.is(err?.consumed, 1);
      assert.ok(err instanceof SysError, 'the kernel refused the batch');
      assert.match(err.message, /IOMMU_HWPT_INVALIDATE on \/dev\/iommu: EINVAL/);
      assert.match(err.message, /applied 1 of 2 entries; entry #1 was rejected/);
      assert.equal(
        cache(fd(), dev, [0, 0, 0, D]),
        all(true),
        'entry #0 took effect, entry #1 did not',
      );
      assert.equal(
        {
          b: v.stats.invalidationBatches,
          e: v.stats.invalidationEntries,
          c: v.stats.invalidationConsumed,
          f: v.stats.invalidationFailures,
        },
        { b: 2, e: 4, c: 3, f: 1 },
      );
    } finally {
      v.close();
    }
  },
);

s(
  'teardown leaves nothing: every freed id is ENOENT, a second close does nothing, the device is home',
  () => {
    const v = VIommu.create('viommu0', st.ctx!, st.mock!, 'selftest');
    const dev = v.addDevice(st.mock!, 0x42);
    const s1 = dev.install({ iommu: 'selftest', iotlb: 7 });
    const ids = {
      parent: v.parentHwptId,
      viommu: v.viommuId!,
      bypass: v.bypass.hwptId!,
      abort: v.abort.hwptId!,
      vdevice: dev.vdeviceId!,
      stage1: s1,
    };
    v.close();
    assert.ok(v.closed && dev.closed);
    for (const [what, id] of Object.entries(ids))
      assert.is(destroyAnswer(fd(), id), 'ENOENT', `${what} ${id} is gone`);
    assert.not.throws(() => v.close(), 'a second close is a no-op');
    assert.throws(() => dev.install({ iommu: 'selftest', iotlb: 1 }), /is closed/);
    // The device is back on the IOAS: the kernel gave it an automatic HWPT there.
    assert.ok(st.mock!.ptId !== ids.stage1 && st.mock!.ptId !== ids.bypass);
    assert.is(
      destroyAnswer(fd(), st.mock!.ptId),
      'EBUSY',
      'the device is attached to its IOAS HWPT',
    );
  },
);

s(
  'closing the context closes its vIOMMUs first (vDevice, HWPTs, vIOMMU, parent), then the IOAS',
  () => {
    const v = VIommu.create('viommu0', st.ctx!, st.mock!, 'selftest');
    const dev = v.addDevice(st.mock!, 0x42);
    dev.install({ iommu: 'selftest', iotlb: 7 });
    st.ctx!.close(); // the IOAS cannot be destroyed while any HWPT built on it is alive
    assert.ok(v.closed && dev.closed);
    st.mock = undefined;
    st.ctx = undefined;
  },
);

s(
  'a failure half way destroys what was made: vIOMMU data the kernel rejects, after the parent HWPT',
  () => {
    let err: NestingSetupError | undefined;
    try {
      VIommu.create('bad', st.ctx!, st.mock!, 'selftest', { viommuData: Buffer.alloc(2) });
    } catch (e) {
      err = e as NestingSetupError;
    }
    assert.ok(err, 'creation failed');
    assert.is(err.step, 'vIOMMU');
    assert.match(err.message, /IOMMU_VIOMMU_ALLOC on \/dev\/iommu: EINVAL/);
    assert.match(err.message, /rejected the vIOMMU's type-specific data/);
    assert.equal(
      err.undone.map((u) => u.what),
      ['nesting parent HWPT'],
    );
    assert.is(destroyAnswer(fd(), err.undone[0]!.id), 'ENOENT', 'the parent HWPT was destroyed');
  },
);

s(
  'wrong IOMMU type, wrong stage-1 data, and an IOMMU without nesting: clear errors, nothing left behind',
  () => {
    // An SMMUv3 vIOMMU cannot sit on the mock IOMMU: refused before anything is allocated.
    assert.throws(
      () => VIommu.create('smmu', st.ctx!, st.mock!, 'arm-smmuv3'),
      /sits behind iommufd selftest mock .* not ARM SMMUv3/,
    );
    const v = VIommu.create('viommu0', st.ctx!, st.mock!, 'selftest');
    try {
      const dev = v.addDevice(st.mock!, 1);
      // Data of another type only gets here past the compiler (test/types/nesting.ts): refused at run time too.
      assert.throws(
        () => dev.install({ iommu: 'intel-vtd', pgtblAddr: 0n, addrWidth: 48 } as never),
        /takes selftest stage-1 data, not intel-vtd/,
      );
      assert.throws(
        () => v.invalidate([{ iommu: 'arm-smmuv3', cmd: [0n, 0n] } as never]),
        /takes selftest invalidations, not arm-smmuv3/,
      );
      assert.is(dev.mode, 'bypass');
      assert.is(v.hwptsLive, 3, 'nothing was allocated');

      // A device has one vDevice: under a second vIOMMU the kernel refuses it, and the device stays where it was.
      const v2 = VIommu.create('viommu1', st.ctx!, st.mock!, 'selftest');
      try {
        assert.throws(
          () => v2.addDevice(st.mock!, 2),
          (e: Error) =>
            /IOMMU_VDEVICE_ALLOC on \/dev\/iommu: EEXIST/.test(e.message) &&
            /already has a vDevice/.test(e.message) &&
            (e as NestingSetupError).step === 'vDevice',
        );
        assert.is(v2.devices.length, 0);
        assert.is(st.mock!.ptId, v.bypass.hwptId, "still on the first vIOMMU's bypass HWPT");
      } finally {
        v2.close();
      }
    } finally {
      v.close();
    }

    // The lab NVMe's IOMMU (QEMU intel-iommu) cannot be a nesting parent.
    const ctx = IommufdContext.open('nesting-nvme');
    const nvme = ctx.attachPciDevice(labDevice('nvme'));
    try {
      let err: NestingSetupError | undefined;
      try {
        VIommu.create('vtd', ctx, ctx.nestable(nvme.device), 'intel-vtd');
      } catch (e) {
        err = e as NestingSetupError;
      }
      assert.ok(err);
      assert.is(err.step, 'nesting parent HWPT');
      assert.match(err.message, /IOMMU_HWPT_ALLOC on \/dev\/iommu: EOPNOTSUPP/);
      assert.match(
        err.message,
        /cannot be a nesting parent \(Intel VT-d reports no nesting support: ECAP.NEST is 0\)/,
      );
      assert.equal(err.undone, []);
      assert.throws(
        () => VIommu.create('mock-on-vtd', ctx, ctx.nestable(nvme.device), 'selftest'),
        /sits behind Intel VT-d/,
      );
    } finally {
      nvme.detach();
      ctx.close();
    }
  },
);

s.run();

// ---------------------------------------------------------------- in the runtime
const r = suite('nested translation in the runtime');
r.before(() => requireLab());

r(
  'devices report their IOMMU; a vIOMMU lives on a context and closes with its last device',
  async () => {
    const rt = await Runtime.start({
      iommu: [{ id: 'ctx0' }],
      memory: [],
      vfio: [
        { bdf: labDevice('nvme'), port: 'nvme0', iommu: 'ctx0' },
        { bdf: labDevice('e1000e'), port: 'nic0' },
      ],
    });
    let v: VIommu<'selftest'> | undefined;
    try {
      const d = rt.describe();
      assert.equal(d.devices[0]!.iommu, {
        type: 'intel-vtd',
        nesting: false,
        dirtyTracking: rt.devices.get('nvme0')!.iommu!.dirtyTracking,
      });
      assert.is(d.devices[1]!.iommu, undefined, 'the legacy container has no GET_HW_INFO');
      assert.throws(
        () => rt.createVIommu('v0', 'intel-vtd', 'nvme0'),
        /nvme0|vfio\d+.*cannot be a nesting parent/,
      );
      assert.throws(
        () => rt.createVIommu('v0', 'selftest', 'nic0'),
        /legacy VFIO container; nested translation needs iommufd/,
      );
      assert.throws(() => rt.createVIommu('v0', 'selftest', 'nope'), /no device on port 'nope'/);
      assert.equal(rt.describe().viommus, []);

      // A mock device on the same context stands in for a device whose IOMMU nests.
      const ctx = rt.contexts.get('ctx0')!;
      const mock = mockDevice(ctx);
      v = VIommu.create('v0', ctx, mock, 'selftest');
      rt.viommus.set('v0', v);
      const dev = v.addDevice(mock, 0x10);
      dev.install({ iommu: 'selftest', iotlb: 3 });
      const seen = rt.describe().viommus;
      assert.is(seen.length, 1);
      assert.equal(
        {
          name: seen[0]!.name,
          context: seen[0]!.context,
          mode: seen[0]!.devices[0]!.mode,
          live: seen[0]!.stats.hwptsLive,
        },
        { name: 'v0', context: 'ctx0', mode: 'stage1', live: 4 },
      );

      // The same counters, as Prometheus scrapes them.
      dev.invalidateStage1([
        { iommu: 'selftest', iotlbId: 0 },
        { iommu: 'selftest', iotlbId: 'all' },
      ]);
      const registry = new Registry();
      rt.registerMetrics(registry);
      const text = await registry.metrics();
      const L = '{viommu="v0",iommu="selftest",context="ctx0"';
      for (const line of [
        `vfio_runtime_viommu_hwpts${L}} 4`,
        `vfio_runtime_viommu_vdevices${L},mode="stage1"} 1`,
        `vfio_runtime_viommu_vdevices${L},mode="bypass"} 0`,
        `vfio_runtime_viommu_stage1_installs_total${L}} 1`,
        `vfio_runtime_viommu_invalidation_batches_total${L}} 1`,
        `vfio_runtime_viommu_invalidation_entries_total${L}} 2`,
        `vfio_runtime_viommu_invalidation_consumed_total${L}} 2`,
        `vfio_runtime_viommu_invalidation_failures_total${L}} 0`,
      ]) {
        assert.ok(text.includes(line), `metrics have ${line}\n${text}`);
      }
    } finally {
      await rt.shutdown(); // nvme0 leaves ctx0 last: the context closes the vIOMMU, then the mock, then its IOAS
    }
    assert.ok(v?.closed, 'the vIOMMU closed with its context');
    assert.ok(v?.devices.length === 0);
  },
);

r.run();
