// The API on the command line: `--api-socket <path>` / `--api-tcp <port>` for `run` and `vm`
// (takeApiOptions, serveApi), and `vfio-runtime remote` (like ch-remote): add-device,
// remove-device, info, counters against a running runtime, passing fds it was given (--fd) or
// opens itself (the device's cdev from sysfs, /dev/iommu for a new context).
import { readdirSync } from 'node:fs';
import { C, open, raw } from '../../native/libc.js';
import { HostSetupError, InvalidSpecError, normalizeBdf, type Runtime } from '../index.js';
import { type ApiReply, apiCall } from './client.js';
import { apiHandler } from './routes.js';
import { type DeviceHooks, RuntimeApi } from './runtime-api.js';
import { ApiServer, type ApiServerOptions } from './server.js';

export const API_USAGE = `  run, vm   [--api-socket <path> | --api-tcp <port>]: serve the HTTP API (docs/user-guide.md)
  remote    talk to a running runtime's API: --api-socket <path> (or --api-tcp <port>) and
            add-device port=<name>,iommu=<id>[,bdf=<bdf>] [--fd <n>]... [--new-context]
                                  (without --fd: opens the bdf's cdev and, with --new-context,
                                   /dev/iommu itself, and passes them by SCM_RIGHTS)
            remove-device <id> [--no-wait] | removal <id> | info | counters`;

/** Take one `--name value` or `--name=value` out of `rest`. */
function take(rest: string[], name: string): string | undefined {
  const i = rest.findIndex((a) => a === name || a.startsWith(`${name}=`));
  if (i < 0) return undefined;
  const a = rest[i]!;
  const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : rest[i + 1];
  if (v === undefined || v.startsWith('--')) throw new InvalidSpecError(`${name} needs a value`);
  rest.splice(i, a.includes('=') ? 1 : 2);
  return v;
}

/** `--api-socket <path>` or `--api-tcp <port>` out of `rest`, as server options (or none). */
export function takeApiOptions(rest: string[]): ApiServerOptions | undefined {
  const socket = take(rest, '--api-socket'),
    tcp = take(rest, '--api-tcp');
  if (socket !== undefined && tcp !== undefined)
    throw new InvalidSpecError('give --api-socket <path> or --api-tcp <port>, not both');
  if (tcp !== undefined) {
    if (!/^\d{1,5}$/.test(tcp) || Number(tcp) > 65535)
      throw new InvalidSpecError(`--api-tcp ${tcp} is not a port number (0 for any free port)`);
    return { tcpPort: Number(tcp) };
  }
  return socket !== undefined ? { socket } : undefined;
}

/** Serve the API for `runtime` (with a VMM's hooks); the caller closes the server. */
export function serveApi(
  runtime: Runtime,
  opts: ApiServerOptions,
  hooks: DeviceHooks = {},
): { server: ApiServer; api: RuntimeApi } {
  const api = new RuntimeApi(runtime, hooks);
  const server = ApiServer.start(apiHandler(api), opts);
  api.serverStats = () => server.stats();
  return { server, api };
}

/** The device's VFIO cdev node, from sysfs (HostSetupError naming the fix when it has none). */
export function cdevOf(bdf: string): string {
  let nodes: string[];
  try {
    nodes = readdirSync(`/sys/bus/pci/devices/${bdf}/vfio-dev`);
  } catch {
    throw new HostSetupError(
      `${bdf} has no VFIO cdev: bind it to vfio-pci (echo vfio-pci > /sys/bus/pci/devices/${bdf}/driver_override; echo ${bdf} > /sys/bus/pci/drivers_probe) on a kernel with CONFIG_VFIO_DEVICE_CDEV`,
      bdf,
    );
  }
  const n = nodes.find((x) => /^vfio\d+$/.test(x));
  if (!n) throw new HostSetupError(`${bdf}: no vfioN under vfio-dev/`, bdf);
  return `/dev/vfio/devices/${n}`;
}

function keyValues(text: string | undefined): Record<string, string> {
  if (!text) throw new InvalidSpecError('add-device needs port=<name>,iommu=<id>[,bdf=<bdf>]');
  const out: Record<string, string> = {};
  for (const kv of text.split(',')) {
    const [k, v] = kv.split('=');
    if (!k || v === undefined) throw new InvalidSpecError(`add-device: '${kv}' is not key=value`);
    out[k] = v;
  }
  return out;
}

async function addDevice(address: string, args: string[]): Promise<ApiReply> {
  const given: number[] = [];
  for (let v = take(args, '--fd'); v !== undefined; v = take(args, '--fd')) {
    if (!/^\d+$/.test(v)) throw new InvalidSpecError(`--fd ${v} is not an fd number`);
    given.push(Number(v));
  }
  const newContext = args.includes('--new-context');
  const body: Record<string, string> = keyValues(args.find((a) => !a.startsWith('--')));
  const opened: number[] = [];
  try {
    if (given.length === 0) {
      if (body.bdf) {
        const bdf = normalizeBdf(body.bdf);
        if (!bdf) throw new InvalidSpecError(`bdf=${body.bdf} is not a PCI address`);
        opened.push(open(cdevOf(bdf), C.O_RDWR));
      }
      if (newContext) opened.push(open('/dev/iommu', C.O_RDWR));
    }
    return await apiCall(address, {
      method: 'PUT',
      path: '/api/v1/vm.add-device',
      body,
      fds: given.length ? given : opened,
    });
  } finally {
    for (const fd of opened) raw.close(fd);
  }
}

/** `vfio-runtime remote ...`: prints the answer's JSON; exit 0 on 2xx, 1 otherwise. */
export async function remoteCommand(argv: string[]): Promise<number> {
  const rest = [...argv];
  const api = takeApiOptions(rest);
  if (!api)
    throw new InvalidSpecError(
      'remote: give --api-socket <path> (or --api-tcp <port>) of the runtime',
    );
  const address = api.socket ?? `127.0.0.1:${api.tcpPort}`;
  const [cmd, ...args] = rest.filter((a) => a !== '--json');
  let r: ApiReply;
  switch (cmd) {
    case 'add-device':
      r = await addDevice(address, args);
      break;
    case 'remove-device':
    case 'removal': {
      const id = args.find((a) => !a.startsWith('--'));
      if (!id) throw new InvalidSpecError(`remote ${cmd} <id>: give the device's id (its port)`);
      r =
        cmd === 'removal'
          ? await apiCall(address, {
              method: 'GET',
              path: `/api/v1/vm.removal?id=${encodeURIComponent(id)}`,
            })
          : await apiCall(address, {
              method: 'PUT',
              path: '/api/v1/vm.remove-device',
              body: { id, ...(args.includes('--no-wait') ? { wait: false } : {}) },
            });
      break;
    }
    case 'info':
    case 'counters':
      r = await apiCall(address, { method: 'GET', path: `/api/v1/vm.${cmd}` });
      break;
    default:
      throw new InvalidSpecError(
        `remote: unknown request '${cmd ?? ''}' (add-device, remove-device, removal, info, counters)`,
      );
  }
  console.log(r.body.trim() || `${r.status}`);
  return r.status < 300 ? 0 : 1;
}
