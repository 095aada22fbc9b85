// What the API's JSON bodies become: an add-device body the runtime's device spec (checked by
// the runtime's own normalizer, through Runtime.checkAdd, with messages naming the body's keys),
// a remove-device body the port to remove. The API's own rules stay here: fd numbers are never
// taken from JSON (fds ride on the request by SCM_RIGHTS), and a device goes on an iommufd
// context (iommu is required).
import { InvalidSpecError, type SpecStyle } from '../index.js';

const ADD = 'vm.add-device';
const REMOVE = 'vm.remove-device';
const FD_KEYS = ['fd', 'fds', 'groupFd', 'group_fd', 'iommufd_fd', 'iommufdFd'];
const REMOVE_KEYS = ['port', 'id', 'wait'];

/** How the runtime's spec checks name an add-device body: by its keys, as the route. */
export const API_STYLE: SpecStyle = {
  option: () => ADD,
  entry: () => ADD,
  key: (k) => k,
  field: (_kind, _index, key) => key,
  keys: () => ['port', 'iommu', 'bdf'],
};

function refuseFdKeys(body: Record<string, unknown>, route: string): void {
  for (const k of Object.keys(body))
    if (FD_KEYS.includes(k))
      throw new InvalidSpecError(
        `${route}: '${k}' in the body is not used: fd numbers are never taken from JSON; attach the fds to the request by SCM_RIGHTS`,
        k,
      );
}

/** The device spec an add-device body asks for (not yet checked: Runtime.checkAdd does that). */
export function addDeviceInput(body: Record<string, unknown>): Record<string, unknown> {
  refuseFdKeys(body, ADD);
  const { id, ...rest } = body;
  if (rest.port === undefined && id !== undefined) rest.port = id; // id is port's other name
  if (rest.iommu === undefined)
    throw new InvalidSpecError(
      `${ADD}: iommu=<context id> is required: the API adds devices to iommufd contexts`,
      'iommu',
    );
  return rest;
}

/** The port a remove-device body names, and whether to wait for the removal. */
export function removeDeviceInput(body: Record<string, unknown>): { port: string; wait: boolean } {
  refuseFdKeys(body, REMOVE);
  for (const k of Object.keys(body))
    if (!REMOVE_KEYS.includes(k))
      throw new InvalidSpecError(
        `${REMOVE}: unknown key '${k}' (known: ${REMOVE_KEYS.join(', ')})`,
        k,
      );
  const port = body.id ?? body.port;
  if (typeof port !== 'string' || port === '')
    throw new InvalidSpecError(`${REMOVE}: give the device's port as "id"`, 'id');
  if (body.wait !== undefined && typeof body.wait !== 'boolean')
    throw new InvalidSpecError(`${REMOVE}: wait must be true or false`, 'wait');
  return { port, wait: body.wait !== false };
}
