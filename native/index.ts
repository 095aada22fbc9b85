// The raw bindings, one module per uAPI: import what you use from here.

export { errnoName, errnoNumber, SysError } from './errno.js';
export { constantRegistry } from './ioctl.js';
export * as iommufd from './iommufd.js';
export * as iommufdTest from './iommufd-test.js';
export * as kvm from './kvm.js';
export * as layout from './layout.js';
export { structRegistry } from './layout.js';
export * as libc from './libc.js';
export { PCI } from './pci-regs.js';
export * as socket from './socket.js';
export * as vfio from './vfio.js';
