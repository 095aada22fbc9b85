// The Intel MultiProcessor Specification 1.4 table the guest (booted with acpi=off) reads to
// find its CPUs' local APICs, the IOAPIC and how ISA and PCI interrupts reach IOAPIC pins.
// A guest-memory format, not a kernel uAPI: written byte by byte from the spec's layouts.
import { IOAPIC_ADDR, LAPIC_ADDR } from './memory-map.js';

const APIC_VERSION = 0x14;
const IOAPIC_VERSION = 0x11;
const BUS_PCI = 0,
  BUS_ISA = 1;
const INT = 0,
  NMI = 1,
  EXTINT = 3;
/** Conforms to the bus: edge/high for ISA. */
const FLAGS_DEFAULT = 0;
/**
 * PCI INTx: level-triggered, active high. Real INTx is active low, but KVM's IOAPIC ignores
 * the polarity bit (a 1 from KVM_IRQ_LINE or an irqfd is "asserted") and QEMU declares its PCI
 * GSIs active high too; so the guest's view and KVM's agree.
 */
const FLAGS_PCI = 0x1 | (0x3 << 2);

export interface MpPciIrq {
  slot: number /** 1 = INTA# .. 4 = INTD# */;
  pin: number;
  ioapicPin: number;
}
export interface MpTableSpec {
  cpus: number;
  cpuSignature: number;
  cpuFeatures: number;
  pciIrqs: MpPciIrq[];
}

function checksum(b: Uint8Array, from: number, to: number): number {
  let s = 0;
  for (let i = from; i < to; i++) s = (s + b[i]!) & 0xff;
  return (0x100 - s) & 0xff;
}

/** The floating pointer (16 bytes) followed by the configuration table, for guest address `at`. */
export function buildMpTable(at: number, spec: MpTableSpec): Uint8Array {
  const ioapicId = spec.cpus;
  const entries: number[][] = [];
  const le32 = (n: number): number[] => [
    n & 0xff,
    (n >>> 8) & 0xff,
    (n >>> 16) & 0xff,
    (n >>> 24) & 0xff,
  ];
  const ascii = (s: string, n: number): number[] =>
    [...s.padEnd(n, ' ').slice(0, n)].map((c) => c.charCodeAt(0));
  for (let id = 0; id < spec.cpus; id++) {
    const flags = 0x1 | (id === 0 ? 0x2 : 0); // enabled, boot processor
    entries.push([
      0,
      id,
      APIC_VERSION,
      flags,
      ...le32(spec.cpuSignature),
      ...le32(spec.cpuFeatures),
      ...le32(0),
      ...le32(0),
    ]);
  }
  entries.push([1, BUS_PCI, ...ascii('PCI', 6)]);
  entries.push([1, BUS_ISA, ...ascii('ISA', 6)]);
  entries.push([2, ioapicId, IOAPIC_VERSION, 1, ...le32(IOAPIC_ADDR)]);
  const io = (type: number, flags: number, bus: number, irq: number, pin: number): number[] => [
    3,
    type,
    flags & 0xff,
    flags >> 8,
    bus,
    irq,
    ioapicId,
    pin,
  ];
  // ISA IRQ n on pin n (KVM's default GSI routing; the in-kernel PIT raises GSI 0). IRQ 2 is the cascade.
  for (let irq = 0; irq < 16; irq++)
    if (irq !== 2) entries.push(io(INT, FLAGS_DEFAULT, BUS_ISA, irq, irq));
  for (const p of spec.pciIrqs)
    entries.push(io(INT, FLAGS_PCI, BUS_PCI, (p.slot << 2) | (p.pin - 1), p.ioapicPin));
  entries.push([4, EXTINT, 0, 0, BUS_ISA, 0, 0xff, 0]); // LINT0 of every CPU: ExtINT (the PIC)
  entries.push([4, NMI, 0, 0, BUS_ISA, 0, 0xff, 1]); // LINT1: NMI

  const body = entries.flat();
  const HDR = 44;
  const out = new Uint8Array(16 + HDR + body.length);
  const v = new DataView(out.buffer);
  // Floating pointer: "_MP_", physical address of the table, length 1 (x16 bytes), spec 1.4.
  out.set(ascii('_MP_', 4), 0);
  v.setUint32(4, at + 16, true);
  out[8] = 1;
  out[9] = 4;
  out[10] = checksum(out, 0, 16);
  // Configuration table header.
  const t = 16;
  out.set(ascii('PCMP', 4), t);
  v.setUint16(t + 4, HDR + body.length, true);
  out[t + 6] = 4;
  out.set(ascii('VFIO-RT', 8), t + 8);
  out.set(ascii('VMM', 12), t + 16);
  v.setUint16(t + 34, entries.length, true);
  v.setUint32(t + 36, LAPIC_ADDR, true);
  out.set(body, t + HDR);
  out[t + 7] = checksum(out, t, out.length);
  return out;
}
