// What a guest driver does to set up interrupts, done through a device's ring (config writes
// and BAR writes, as a vCPU would make them): MSI-X enable and table entries, the PBA, MSI, and
// the lab devices' interrupt registers. Plus a bare KVM VM whose vCPU 0 local APIC shows (IRR)
// what KVM injected.
import * as kvm from '../../native/kvm.js';
import { C } from '../../native/libc.js';
import { PCI } from '../../native/pci-regs.js';
import type { DeviceDescription } from '../../src/device/assigned-device.js';
import { OwnedFd } from '../../src/fd.js';
import type { RingClient } from '../../src/ring/client.js';

export const E1000E = {
  ICR: 0xc0,
  ICS: 0xc8,
  IMS: 0xd0,
  IMC: 0xd8,
  IVAR: 0xe4,
  RXQ0: 0x00100000,
} as const;
/**
 * e1000e (QEMU 7.2): raise RxQ0 once. A cause still set in ICR is not signalled again, so it
 * is cleared first (ICR is write-1-to-clear), as a driver's handler would have done.
 */
export function e1000eRaise(c: RingClient): void {
  c.barWrite(0, E1000E.ICR, 4, E1000E.RXQ0);
  c.barWrite(0, E1000E.ICS, 4, E1000E.RXQ0);
}

export const EDU = { RAISE: 0x60, ACK: 0x64, STATUS: 0x24 } as const;

export function capOffset(d: DeviceDescription, id: number): number {
  const c = d.capabilities.find((x) => x.id === id);
  if (!c) throw new Error(`${d.name} has no capability 0x${id.toString(16)}`);
  return c.offset;
}

export function busMaster(c: RingClient): void {
  c.cfgWrite(
    PCI.PCI_COMMAND,
    2,
    c.cfgRead(PCI.PCI_COMMAND, 2) | PCI.PCI_COMMAND_MEMORY | PCI.PCI_COMMAND_MASTER,
  );
}

export class GuestMsix {
  readonly cap: number;
  readonly m: NonNullable<DeviceDescription['msix']>;
  constructor(
    readonly c: RingClient,
    d: DeviceDescription,
  ) {
    this.cap = capOffset(d, PCI.PCI_CAP_ID_MSIX);
    this.m = d.msix!;
  }
  control(enable: boolean, functionMask = false): void {
    const ctl =
      this.c.cfgRead(this.cap + PCI.PCI_MSIX_FLAGS, 2) &
      ~(PCI.PCI_MSIX_FLAGS_ENABLE | PCI.PCI_MSIX_FLAGS_MASKALL);
    this.c.cfgWrite(
      this.cap + PCI.PCI_MSIX_FLAGS,
      2,
      ctl |
        (enable ? PCI.PCI_MSIX_FLAGS_ENABLE : 0) |
        (functionMask ? PCI.PCI_MSIX_FLAGS_MASKALL : 0),
    );
  }
  #at(v: number, field: number): number {
    return this.m.tableOffset + v * PCI.PCI_MSIX_ENTRY_SIZE + field;
  }
  /** Address and data as a driver writes them (dwords), leaving the mask bit alone. */
  program(v: number, address: number, data: number): void {
    this.c.barWrite(this.m.tableBar, this.#at(v, PCI.PCI_MSIX_ENTRY_LOWER_ADDR), 4, address);
    this.c.barWrite(this.m.tableBar, this.#at(v, PCI.PCI_MSIX_ENTRY_UPPER_ADDR), 4, 0);
    this.c.barWrite(this.m.tableBar, this.#at(v, PCI.PCI_MSIX_ENTRY_DATA), 4, data);
  }
  mask(v: number, on: boolean): void {
    this.c.barWrite(this.m.tableBar, this.#at(v, PCI.PCI_MSIX_ENTRY_VECTOR_CTRL), 4, on ? 1 : 0);
  }
  entry(v: number): { lo: number; hi: number; data: number; masked: boolean } {
    const r = (f: number): number => this.c.barRead(this.m.tableBar, this.#at(v, f), 4);
    return { lo: r(0), hi: r(4), data: r(8), masked: (r(12) & 1) === 1 };
  }
  pending(v: number): boolean {
    const word = this.c.barRead64(this.m.pbaBar, this.m.pbaOffset + 8 * (v >> 6));
    return ((word >> BigInt(v & 63)) & 1n) === 1n;
  }
}

export class GuestMsi {
  readonly cap: number;
  readonly is64: boolean;
  constructor(
    readonly c: RingClient,
    d: DeviceDescription,
  ) {
    this.cap = capOffset(d, PCI.PCI_CAP_ID_MSI);
    this.is64 = !!d.msi?.is64;
  }
  program(address: number, data: number): void {
    this.c.cfgWrite(this.cap + PCI.PCI_MSI_ADDRESS_LO, 4, address);
    if (this.is64) this.c.cfgWrite(this.cap + PCI.PCI_MSI_ADDRESS_HI, 4, 0);
    this.c.cfgWrite(this.cap + (this.is64 ? PCI.PCI_MSI_DATA_64 : PCI.PCI_MSI_DATA_32), 2, data);
  }
  enable(on: boolean): void {
    const ctl = this.c.cfgRead(this.cap + PCI.PCI_MSI_FLAGS, 2) & ~PCI.PCI_MSI_FLAGS_ENABLE;
    this.c.cfgWrite(this.cap + PCI.PCI_MSI_FLAGS, 2, ctl | (on ? PCI.PCI_MSI_FLAGS_ENABLE : 0));
  }
}

/** A VM with an in-kernel irqchip and vCPU 0, whose local APIC is software-enabled so fixed interrupts land in its IRR. */
export class ApicVm {
  readonly sys: OwnedFd;
  readonly vm: OwnedFd;
  readonly vcpu: OwnedFd;
  constructor() {
    this.sys = OwnedFd.open('/dev/kvm', C.O_RDWR);
    this.vm = new OwnedFd(kvm.createVm(this.sys), 'kvm-vm');
    kvm.createIrqchip(this.vm);
    this.vcpu = new OwnedFd(kvm.createVcpu(this.vm, 0), 'kvm-vcpu0');
    const regs = kvm.getLapic(this.vcpu);
    regs.writeUInt32LE(regs.readUInt32LE(0xf0) | 0x1ff, 0xf0); // SVR: APIC enabled, spurious vector 0xff
    kvm.setLapic(this.vcpu, regs);
  }
  /** Is `vector` requested (IRR) in vCPU 0's local APIC? */
  irr(vector: number): boolean {
    const regs = kvm.getLapic(this.vcpu);
    return ((regs.readUInt32LE(0x200 + 0x10 * (vector >> 5)) >>> (vector & 31)) & 1) === 1;
  }
  close(): void {
    this.vcpu.close();
    this.vm.close();
    this.sys.close();
  }
}

export { until } from './poll.js';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
