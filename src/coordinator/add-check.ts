// Runtime.checkAdd's rules, on their own: what Runtime.addDevice refuses before it touches a
// node or an fd — the spec itself, a port or device taken, a cdev fd that is another device than
// its bdf= says, a context that does not exist (or, for a caller bringing one, that does) —
// answered without side effects, as Cloud Hypervisor validates a device addition on a clone of
// its config. addDevice and the HTTP API both ask here, so both refuse with the same messages.
import { readlinkSync } from 'node:fs';
import { bdfOfCdev } from '../dma/diagnose.js';
import { ConflictError, InvalidSpecError, NotFoundError } from '../errors.js';
import {
  type DeviceSpec,
  fieldPath,
  normalizeDeviceSpec,
  OBJECT_STYLE,
  type SpecStyle,
} from './spec.js';

export interface AddCheckOptions {
  /** The caller brings the device's context (the API: a /dev/iommu fd): it must not exist yet. */
  newContext?: boolean;
  /** How messages and `field` name the spec's parts (the API names its body's keys). */
  style?: SpecStyle;
}

/** What the checks read of a runtime: its devices by port and its contexts by id. */
export interface AddCheckState {
  readonly devices: ReadonlyMap<
    string,
    { readonly port: string; readonly bdf: string | undefined }
  >;
  readonly contexts: ReadonlyMap<string, unknown>;
}

/** The PCI address of a cdev fd of this process, if sysfs tells. */
export function cdevBdf(fd: number): string | undefined {
  try {
    return bdfOfCdev(readlinkSync(`/proc/self/fd/${fd}`));
  } catch {
    return undefined;
  }
}

/** A context id that is taken (Runtime.addContext, and an add that brings its context). */
export function contextTaken(id: string): ConflictError {
  return new ConflictError(
    `iommufd context '${id}' exists already: add the device to it without bringing a new one, or give the new context another id`,
    'context',
    id,
  );
}

/** The spec, normalized (its bdf read off its cdev fd when not given), or the error addDevice would throw. */
export function checkAdd(
  rt: AddCheckState,
  input: unknown,
  opts: AddCheckOptions = {},
): DeviceSpec {
  const style = opts.style ?? OBJECT_STYLE;
  const v = normalizeDeviceSpec(input, 0, style);
  const fromFd = v.fd !== undefined ? cdevBdf(v.fd) : undefined;
  if (v.bdf && fromFd && v.bdf !== fromFd)
    throw new InvalidSpecError(
      `bdf ${v.bdf} does not match the cdev fd ${v.fd}, which is ${fromFd}: pass that device's cdev or drop bdf`,
      fieldPath(style, 'vfio', 0, 'bdf'),
    );
  const bdf = v.bdf ?? fromFd;
  if (rt.devices.has(v.port))
    throw new ConflictError(
      `port ${v.port} already has a device: remove it first or pick another port`,
      'port',
      v.port,
    );
  const holder =
    bdf === undefined ? undefined : [...rt.devices.values()].find((d) => d.bdf === bdf);
  if (holder)
    throw new ConflictError(`${bdf} is assigned already, on port ${holder.port}`, 'device', bdf!);
  if (v.iommu === undefined) {
    if (opts.newContext)
      throw new InvalidSpecError(
        'a new iommufd context needs its id: give iommu=<id>',
        fieldPath(style, 'vfio', 0, 'iommu'),
      );
  } else if (opts.newContext && rt.contexts.has(v.iommu)) {
    throw contextTaken(v.iommu);
  } else if (!opts.newContext && !rt.contexts.has(v.iommu)) {
    const known = [...rt.contexts.keys()].join(', ') || 'none';
    throw new NotFoundError(
      `port ${v.port}: no iommufd context '${v.iommu}' (contexts: ${known}): name one of them, or create it first (Runtime.addContext; over the HTTP API, attach an fd opened on /dev/iommu)`,
      'context',
      v.iommu,
    );
  }
  return bdf !== undefined && v.bdf === undefined ? { ...v, bdf } : v;
}
