// Per-IOMMU-type encodings for nested translation: stage-1 data, invalidation batches and
// hardware info, byte for byte against the uAPI layouts (the layout test checks the layouts
// themselves against the kernel headers).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { IOMMUFD_C as K } from '../../native/iommufd.js';
import { IOMMUFD_TEST_C as T } from '../../native/iommufd-test.js';
import {
  ARM_SMMUV3,
  decodeHwInfo,
  encodeInvalidations,
  INTEL_VTD,
  SELFTEST,
} from '../../src/nesting/iommu-types.js';

const s = suite('nesting: IOMMU types');

s('VT-d stage-1: flags, page-table address and width; bypass is the parent, abort blocks', () => {
  const b = INTEL_VTD.encodeStage1({
    iommu: 'intel-vtd',
    pgtblAddr: 0x1234_5000n,
    addrWidth: 57,
    writeProtect: true,
    supervisorRequests: true,
  });
  assert.is(b.length, 24);
  assert.is(b.readBigUInt64LE(0), BigInt(K.IOMMU_VTD_S1_WPE | K.IOMMU_VTD_S1_SRE));
  assert.is(b.readBigUInt64LE(8), 0x1234_5000n);
  assert.is(b.readUInt32LE(16), 57);
  assert.is(INTEL_VTD.viommuType, undefined);
  assert.equal(INTEL_VTD.bypass, { via: 'parent' });
  assert.equal(INTEL_VTD.abort, { via: 'blocked' });
});

s(
  'SMMUv3: STE words as given; default bypass and abort STEs are valid with Config 0b100 and 0b000',
  () => {
    const b = ARM_SMMUV3.encodeStage1({ iommu: 'arm-smmuv3', ste: [0x8000_0000_0000_000bn, 0x1n] });
    assert.is(b.readBigUInt64LE(0), 0x8000_0000_0000_000bn);
    assert.is(b.readBigUInt64LE(8), 1n);
    const ste0 = (m: typeof ARM_SMMUV3.bypass): bigint =>
      m.via === 'stage1' ? m.data.ste[0] : -1n;
    assert.is(ste0(ARM_SMMUV3.bypass) & 1n, 1n, 'bypass STE is valid');
    assert.is((ste0(ARM_SMMUV3.bypass) >> 1n) & 7n, 4n, 'Config = bypass');
    assert.is(ste0(ARM_SMMUV3.abort) & 1n, 1n, 'abort STE is valid');
    assert.is((ste0(ARM_SMMUV3.abort) >> 1n) & 7n, 0n, 'Config = abort');
  },
);

s('invalidation batches are packed back to back in the entry layout', () => {
  const vtd = encodeInvalidations(INTEL_VTD.stage1Invalidation!, [
    { iommu: 'intel-vtd', addr: 0x1000n, npages: 2n, leaf: true },
    { iommu: 'intel-vtd', addr: 0x8000n, npages: 1n },
  ]);
  assert.is(vtd.length, 48);
  assert.equal(
    [vtd.readBigUInt64LE(0), vtd.readBigUInt64LE(8), vtd.readUInt32LE(16)],
    [0x1000n, 2n, K.IOMMU_VTD_INV_FLAGS_LEAF],
  );
  assert.equal([vtd.readBigUInt64LE(24), vtd.readUInt32LE(40)], [0x8000n, 0]);
  const smmu = encodeInvalidations(ARM_SMMUV3.viommuInvalidation!, [
    { iommu: 'arm-smmuv3', cmd: [0x12n, 0x34n] },
  ]);
  assert.equal([smmu.readBigUInt64LE(0), smmu.readBigUInt64LE(8)], [0x12n, 0x34n]);
  const mock = encodeInvalidations(SELFTEST.viommuInvalidation!, [
    { iommu: 'selftest', virtId: 0x99, cacheId: 'all' },
    { iommu: 'selftest', virtId: 7, cacheId: 2 },
  ]);
  assert.equal(
    [
      mock.readUInt32LE(0),
      mock.readUInt32LE(4),
      mock.readUInt32LE(12),
      mock.readUInt32LE(16),
      mock.readUInt32LE(20),
    ],
    [T.IOMMU_TEST_INVALIDATE_FLAG_ALL, 0x99, 0, 7, 2],
  );
  assert.throws(
    () => encodeInvalidations(SELFTEST.stage1Invalidation!, [{ iommu: 'selftest', iotlbId: 4 }]),
    /iotlbId must be 0-3 or 'all', got 4/,
  );
  assert.is(encodeInvalidations(SELFTEST.stage1Invalidation!, []).length, 0);
});

s('hardware info: VT-d NEST and FSTS bits, SMMUv3 S1P+S2P, unknown types named', () => {
  const vtd = Buffer.alloc(24);
  vtd.writeUInt32LE(1, 0);
  vtd.writeBigUInt64LE(0xd2008c22260206n, 8);
  vtd.writeBigUInt64LE((1n << 26n) | (1n << 47n), 16);
  assert.equal(decodeHwInfo(K.IOMMU_HW_INFO_TYPE_INTEL_VTD, vtd), {
    iommu: 'intel-vtd',
    capReg: 0xd2008c22260206n,
    ecapReg: (1n << 26n) | (1n << 47n),
    nesting: true,
    firstStage: true,
    erratum772415: true,
  });
  // The lab's QEMU intel-iommu ecap: no NEST.
  vtd.writeBigUInt64LE(0xf00f4an, 16);
  assert.is(
    (decodeHwInfo(K.IOMMU_HW_INFO_TYPE_INTEL_VTD, vtd) as { nesting: boolean }).nesting,
    false,
  );
  const smmu = Buffer.alloc(40);
  smmu.writeUInt32LE(0b11, 8);
  assert.is(
    (decodeHwInfo(K.IOMMU_HW_INFO_TYPE_ARM_SMMUV3, smmu) as { nesting: boolean }).nesting,
    true,
  );
  smmu.writeUInt32LE(0b10, 8);
  assert.is(
    (decodeHwInfo(K.IOMMU_HW_INFO_TYPE_ARM_SMMUV3, smmu) as { nesting: boolean }).nesting,
    false,
  );
  assert.equal(decodeHwInfo(K.IOMMU_HW_INFO_TYPE_NONE, Buffer.alloc(0)), {
    iommu: 'none',
    nesting: false,
  });
  assert.equal(decodeHwInfo(0x1234, Buffer.alloc(0)), {
    iommu: 'unknown(4660)',
    nesting: 'unknown',
  });
  // A short answer (an older kernel's smaller struct) decodes with the missing fields as zero.
  assert.is(
    (decodeHwInfo(T.IOMMU_HW_INFO_TYPE_SELFTEST, Buffer.from([0, 0, 0, 0])) as { testReg: number })
      .testReg,
    0,
  );
});

s.run();
