// What the interrupt code reads of the device's emulated state, as interfaces, so src/irq/
// depends on nothing in src/device/: the emulated config space (ConfigSpace) and MSI-X table
// (MsixTableEmulator) satisfy these structurally. src/device/ may import from src/irq/, never
// the reverse.

/** The emulated MSI capability's layout (ConfigSpace.msi). */
export interface MsiCapability {
  offset: number;
  is64: boolean;
  maskable: boolean;
  vectors: number;
}

/** The config space as the vector logic reads it: the virtual image and the MSI/MSI-X control state. */
export interface InterruptConfigView {
  /** The guest-visible image (emulated bytes); MSI pending bits are written here. */
  readonly virt: Uint8Array;
  readonly msi: MsiCapability | undefined;
  readonly msixEnabled: boolean;
  readonly msixFunctionMasked: boolean;
  virt16(offset: number): number;
  virt32(offset: number): number;
  /** The physical config region (the interrupt pin is read from it). */
  readonly io: { read(offset: number, size: 1 | 2 | 4): number };
}

/** Told by the emulated MSI-X table of each guest change (DeviceInterrupts is one). */
export interface MsixTableListener {
  /** Vector `v`'s address/data or mask bit changed (called once per affected vector per access). */
  vectorChanged(v: number): void;
  /** The guest read the PBA: a chance to fold in interrupts that arrived while masked. */
  pbaRead?(): void;
}

/** The emulated MSI-X table and PBA as the vector logic reads them. */
export interface MsixTableView {
  readonly size: number;
  listener: MsixTableListener | undefined;
  addressLo(v: number): number;
  addressHi(v: number): number;
  data(v: number): number;
  masked(v: number): boolean;
  pending(v: number): boolean;
  setPending(v: number, on: boolean): void;
}

/** The config-space hooks DeviceInterrupts gives the config space (a subset of ConfigHooks). */
export interface InterruptConfigHooks {
  msixControl(): void;
  msiChanged(): void;
}
