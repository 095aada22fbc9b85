// How a VMM hosting the runtime takes part in the HTTP API's hot-plug (types only): the API adds
// and removes devices on the Runtime, and these hooks put a device where the guest finds it and
// take it away again. The VMM implements them (Vm.apiHooks), the API (src/api/runtime-api.ts)
// calls them.
import type { DeviceAttachOptions, RuntimeDevice } from './runtime.js';

export interface DeviceHooks {
  /** A host that cannot add (remove) devices while it runs says why (the answer is 501). */
  cannotAdd?: string;
  cannotRemove?: string;
  /** Worker options for a new device (a VMM's KVM router and INTx GSI). */
  attachOptions?(port: string): DeviceAttachOptions;
  /** The device is attached and its worker runs: put it where the guest finds it. */
  plugged?(d: RuntimeDevice): Promise<Record<string, unknown>> | Record<string, unknown>;
  /** Before the runtime lets the device go: take it away from the guest (BARs, slots, routes). */
  unplugging?(port: string): Promise<void> | void;
  info?(): unknown;
  counters?(): unknown;
}
