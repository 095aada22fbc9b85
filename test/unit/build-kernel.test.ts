// lab/build-kernel on a machine without the lab-kernel cache (the path a first CI run or a new
// machine takes, which a machine with the cache never does), in seconds: the script runs whole
// with apt, dpkg and make replaced by stubs on PATH that make a tiny kernel tree and a "kernel".
// A build that succeeds must exit 0 with its files in place and no staging folder left (its EXIT
// trap once ended the script with status 1 after a successful 19-minute build); one whose make
// fails must exit 1, leaving no half-built lab.
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';

const t = suite('lab/build-kernel without a cache (stubbed apt, dpkg and make)');
const SCRIPT = fileURLToPath(new URL('../../../lab/build-kernel', import.meta.url));

/** Options the script requires to have survived the configuration. */
const REQUIRED =
  'IOMMUFD IOMMUFD_TEST VFIO VFIO_GROUP VFIO_CONTAINER VFIO_DEVICE_CDEV VFIO_IOMMU_TYPE1 VFIO_PCI INTEL_IOMMU IRQ_REMAP KVM KVM_AMD NET_9P_VIRTIO 9P_FS OVERLAY_FS DEVTMPFS TMPFS BLK_DEV_INITRD SERIAL_8250_CONSOLE';

const stubs = (tarball: string, makeFails: boolean): Record<string, string> => ({
  'dpkg-query': 'echo "install ok installed"',
  'apt-get': `case " $* " in *" download "*) touch "\${@: -1}_7.3.0-stub_all.deb";; esac`,
  'apt-cache': 'echo linux-source-7.3',
  'dpkg-deb': 'echo 7.3.0-stub',
  dpkg: `mkdir -p "$3/usr/src" && cp ${tarball} "$3/usr/src/linux-source-7.3.tar.gz"`,
  make: `for a in "$@"; do case "$a" in
  tinyconfig|kvm_guest.config|olddefconfig) for o in ${REQUIRED}; do echo "CONFIG_$o=y"; done >> .config;;
  bzImage) ${makeFails ? 'echo "stub: compile error" >&2; exit 2' : 'mkdir -p arch/x86/boot && echo kernel > arch/x86/boot/bzImage'};;
  headers_install) ;;
  INSTALL_HDR_PATH=*) mkdir -p "\${a#*=}/include/linux" && touch "\${a#*=}/include/linux/iommufd.h";;
esac; done`,
});

/** Runs the script into a fresh OUT with the stubs first on PATH. */
function build(makeFails: boolean) {
  const dir = mkdtempSync(join(tmpdir(), 'vfr-build-kernel-'));
  const tree = join(dir, 'src/linux-source-7.3');
  mkdirSync(join(tree, 'scripts/kconfig'), { recursive: true });
  mkdirSync(join(tree, 'drivers/iommu/iommufd'), { recursive: true });
  writeFileSync(join(tree, 'drivers/iommu/iommufd/iommufd_test.h'), '/* stub */\n');
  writeFileSync(join(tree, 'scripts/kconfig/merge_config.sh'), '#!/bin/sh\nexit 0\n');
  chmodSync(join(tree, 'scripts/kconfig/merge_config.sh'), 0o755);
  const tarball = join(dir, 'linux.tar.gz');
  spawnSync('tar', ['-C', join(dir, 'src'), '-czf', tarball, 'linux-source-7.3']);
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  for (const [name, body] of Object.entries(stubs(tarball, makeFails))) {
    writeFileSync(join(bin, name), `#!/bin/bash\n${body}\n`);
    chmodSync(join(bin, name), 0o755);
  }
  const out = join(dir, 'out');
  const r = spawnSync('bash', [SCRIPT, out], {
    encoding: 'utf8',
    env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, TMPDIR: dir, LAB_JOBS: '1' },
    timeout: 60_000,
  });
  return { dir, out, r, files: existsSync(out) ? readdirSync(out) : [] };
}

const busybox = existsSync('/bin/busybox');
if (!busybox)
  console.log('  SKIP lab/build-kernel tests: /bin/busybox (busybox-static) is not installed');

t('a build that succeeds exits 0 with its files in place and no staging folder', () => {
  if (!busybox) return;
  const b = build(false);
  try {
    assert.is(b.r.status, 0, `exit ${b.r.status}: ${b.r.stderr.slice(-1500)}`);
    for (const f of ['bzImage', 'initramfs.cpio.gz', 'kernel.config', 'include', 'include-test'])
      assert.ok(b.files.includes(f), `OUT has ${f}: ${b.files.join(' ')}`);
    assert.equal(
      b.files.filter((f) => f.startsWith('.stage')),
      [],
      'no staging folder left',
    );
    assert.match(b.r.stdout, /^built: /m);
  } finally {
    rmSync(b.dir, { recursive: true, force: true });
  }
});

t('a build whose make fails exits 1, says why, and leaves no half-built lab', () => {
  if (!busybox) return;
  const b = build(true);
  try {
    assert.is(b.r.status, 1, `exit ${b.r.status}: ${b.r.stderr.slice(-800)}`);
    assert.match(b.r.stderr, /failed: building bzImage/);
    assert.match(b.r.stderr, /stub: compile error/);
    assert.not.ok(b.files.includes('bzImage'), 'no bzImage');
    assert.equal(
      b.files.filter((f) => f.startsWith('.stage')),
      [],
      'no staging folder left',
    );
  } finally {
    rmSync(b.dir, { recursive: true, force: true });
  }
});

t.run();
