// Host readiness checks for device assignment, in the manner of virt-host-validate: each check
// gives PASS, WARN or FAIL with what it found and, when not PASS, what to do.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { decode } from '../../native/layout.js';
import { C, raw, rlimit } from '../../native/libc.js';
import * as vfio from '../../native/vfio.js';
import { DEV_IOMMU, DEV_VFIO_CONTAINER } from '../vfio/open.js';
import { listFunctions } from './pci-sysfs.js';

export type Verdict = 'PASS' | 'WARN' | 'FAIL';
export interface Check {
  name: string;
  verdict: Verdict;
  detail: string;
  fix?: string;
}

const list = (dir: string): string[] => {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
};
const read = (p: string): string => {
  try {
    return readFileSync(p, 'utf8');
  } catch {
    return '';
  }
};

function checkIommu(): Check {
  const units = list('/sys/class/iommu');
  const groups = list('/sys/kernel/iommu_groups');
  if (units.length && groups.length)
    return {
      name: 'IOMMU enabled',
      verdict: 'PASS',
      detail: `${units.join(', ')}; ${groups.length} IOMMU groups`,
    };
  return {
    name: 'IOMMU enabled',
    verdict: 'FAIL',
    detail: 'no IOMMU unit in /sys/class/iommu or no IOMMU groups',
    fix: 'enable VT-d/AMD-Vi in firmware and boot with intel_iommu=on (or amd_iommu=on)',
  };
}

function checkIommufd(): Check {
  const name = `iommufd (${DEV_IOMMU})`;
  if (!existsSync(DEV_IOMMU))
    return {
      name,
      verdict: 'FAIL',
      detail: `${DEV_IOMMU} does not exist`,
      fix: 'use a kernel with CONFIG_IOMMUFD (or `modprobe iommufd`); devices can still use the legacy path (omit iommu=)',
    };
  const fd = raw.open(DEV_IOMMU, C.O_RDWR | C.O_CLOEXEC, 0);
  if (fd < 0)
    return {
      name,
      verdict: 'WARN',
      detail: `${DEV_IOMMU} exists but cannot be opened here`,
      fix: 'run as root, or pass a pre-opened fd (iommufd_fd=<n>)',
    };
  raw.close(fd);
  return { name, verdict: 'PASS', detail: `${DEV_IOMMU} opens` };
}

function checkCdev(): Check {
  const nodes = list('/dev/vfio/devices');
  const supported = existsSync('/sys/class/vfio-dev') || nodes.length > 0;
  if (supported)
    return {
      name: 'VFIO cdev support',
      verdict: 'PASS',
      detail: nodes.length
        ? nodes.map((n) => `/dev/vfio/devices/${n}`).join(', ')
        : 'vfio-dev class present, no device bound yet',
    };
  return {
    name: 'VFIO cdev support',
    verdict: 'WARN',
    detail: 'no /sys/class/vfio-dev',
    fix: 'use a kernel with CONFIG_VFIO_DEVICE_CDEV for iommufd; the legacy group path still works',
  };
}

function checkContainer(): Check {
  const name = `VFIO legacy container (${DEV_VFIO_CONTAINER})`;
  if (!existsSync(DEV_VFIO_CONTAINER))
    return {
      name,
      verdict: 'WARN',
      detail: 'not present',
      fix: 'CONFIG_VFIO_CONTAINER, or use iommufd (iommu=<id>)',
    };
  const fd = raw.open(DEV_VFIO_CONTAINER, C.O_RDWR | C.O_CLOEXEC, 0);
  if (fd < 0)
    return {
      name,
      verdict: 'WARN',
      detail: 'present but cannot be opened here',
      fix: 'run as root',
    };
  const t = { fd, path: DEV_VFIO_CONTAINER };
  try {
    const v2 = vfio.checkExtension(t, vfio.VFIO_C.VFIO_TYPE1v2_IOMMU) === 1;
    return v2
      ? { name, verdict: 'PASS', detail: 'Type1v2 IOMMU supported' }
      : { name, verdict: 'WARN', detail: 'Type1v2 not supported', fix: 'CONFIG_VFIO_IOMMU_TYPE1' };
  } finally {
    raw.close(fd);
  }
}

function checkInterruptRemapping(): Check {
  const name = 'Interrupt remapping';
  const unsafe =
    read('/sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts').trim() === 'Y';
  const cmdline = read('/proc/cmdline');
  const irChips = /\bIR-(PCI-MSI|PCI-MSIX|IO-APIC)/.test(read('/proc/interrupts'));
  const ecapIr = list('/sys/class/iommu').some(
    (u) =>
      (BigInt(`0x${read(`/sys/class/iommu/${u}/intel-iommu/ecap`).trim() || '0'}`) & 8n) !== 0n,
  );
  if (irChips)
    return { name, verdict: 'PASS', detail: 'in use (IR- interrupt chips in /proc/interrupts)' };
  if (ecapIr && !/\b(intremap=off|nointremap)\b/.test(cmdline))
    return { name, verdict: 'PASS', detail: 'supported by the IOMMU (ECAP.IR)' };
  if (unsafe)
    return {
      name,
      verdict: 'WARN',
      detail: 'not available; vfio allow_unsafe_interrupts=Y lets devices bind anyway',
      fix: 'a device can forge MSIs: acceptable only for trusted devices',
    };
  return {
    name,
    verdict: 'WARN',
    detail: 'not detected',
    fix: 'VFIO_DEVICE_BIND_IOMMUFD and VFIO_SET_IOMMU fail without it: enable it in firmware, or set vfio_iommu_type1.allow_unsafe_interrupts=1 for trusted devices',
  };
}

function capEff(): bigint {
  const m = /CapEff:\s*([0-9a-f]+)/.exec(read('/proc/self/status'));
  return m ? BigInt(`0x${m[1]}`) : 0n;
}

function checkMemlock(): Check {
  const name = 'RLIMIT_MEMLOCK';
  const buf = Buffer.alloc(rlimit.size);
  if (raw.prlimit(0, C.RLIMIT_MEMLOCK, null, buf) < 0)
    return { name, verdict: 'WARN', detail: 'could not read the limit' };
  const cur = decode(rlimit, buf).rlim_cur;
  const CAP_IPC_LOCK = 14n;
  if (cur === 0xffffffffffffffffn) return { name, verdict: 'PASS', detail: 'unlimited' };
  if ((capEff() >> CAP_IPC_LOCK) & 1n)
    return { name, verdict: 'PASS', detail: `${cur} bytes, but CAP_IPC_LOCK exempts this process` };
  return {
    name,
    verdict: 'WARN',
    detail: `${cur / 1024n} KiB: guest RAM above this cannot be pinned for DMA`,
    fix: 'raise it (ulimit -l unlimited, systemd LimitMEMLOCK=infinity) to at least the guest RAM size',
  };
}

function checkKvm(): Check {
  if (existsSync('/dev/kvm'))
    return {
      name: 'KVM (/dev/kvm)',
      verdict: 'PASS',
      detail: 'present: interrupts can go straight to the guest by irqfd',
    };
  return {
    name: 'KVM (/dev/kvm)',
    verdict: 'WARN',
    detail: 'absent: interrupts are relayed through the runtime',
    fix: 'load kvm-intel/kvm-amd for in-kernel delivery',
  };
}

function checkDevices(): Check {
  if (!existsSync('/sys/bus/pci/drivers/vfio-pci'))
    return {
      name: 'vfio-pci driver',
      verdict: 'FAIL',
      detail: 'not loaded',
      fix: '`modprobe vfio-pci`',
    };
  const bound = listFunctions().filter((f) => f.driver === 'vfio-pci');
  if (bound.length)
    return {
      name: 'vfio-pci driver',
      verdict: 'PASS',
      detail: `${bound.length} function(s) bound: ${bound.map((f) => f.bdf).join(', ')}`,
    };
  return {
    name: 'vfio-pci driver',
    verdict: 'WARN',
    detail: 'loaded, but no function is bound to it',
    fix: 'bind a device: echo vfio-pci > /sys/bus/pci/devices/<bdf>/driver_override, unbind, drivers_probe',
  };
}

export function validateHost(): Check[] {
  return [
    checkIommu(),
    checkIommufd(),
    checkCdev(),
    checkContainer(),
    checkInterruptRemapping(),
    checkMemlock(),
    checkKvm(),
    checkDevices(),
  ];
}
