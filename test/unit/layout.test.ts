// Every struct, member offset, ioctl number and constant in native/ against the C compiler.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as vfio from '../../native/vfio.js';
import { runProbe } from '../layout/probe.js';
import { labInclude } from '../support/paths.js';
import { skipBecause } from '../support/skip.js';

const inc = labInclude();
if (!inc) {
  skipBecause(
    test,
    'layout matches the kernel uAPI',
    'no lab uAPI headers (set LAB_INCLUDE, or provide ../shared/lab/include)',
  );
} else {
  test('layout matches the kernel uAPI', () => {
    const r = runProbe(inc.include, inc.includeTest);
    console.log(
      `  layout: ${r.structs} structs, ${r.fields} member offsets, ${r.ioctls} ioctl numbers, ${r.constants} constants checked; ${r.mismatches.length} mismatches`,
    );
    assert.equal(r.mismatches, [], r.mismatches.join('\n'));
    assert.ok(r.structs > 40 && r.ioctls > 40);
  });

  test('a wrong definition is reported with its struct and field', () => {
    // vfio_irq_info with `flags` declared 64-bit: every later offset and the size move.
    const wrong = {
      ...vfio.vfio_irq_info,
      fields: vfio.vfio_irq_info.fields.map((f) => (f.name === 'index' ? { ...f, offset: 12 } : f)),
    };
    const badIoctl = {
      name: 'VFIO_DEVICE_RESET',
      value: vfio.VFIO.VFIO_DEVICE_RESET + 1,
      header: 'linux/vfio.h' as const,
      ioctl: true,
    };
    const r = runProbe(inc.include, inc.includeTest, [wrong], [badIoctl]);
    assert.equal(r.mismatches, [
      'offsetof(struct vfio_irq_info, index): TypeScript says 12, C says 8',
      `ioctl number VFIO_DEVICE_RESET: TypeScript says ${vfio.VFIO.VFIO_DEVICE_RESET + 1}, C says ${vfio.VFIO.VFIO_DEVICE_RESET}`,
    ]);
  });
}
test.run();
