// The CLI's observability options, shared by `run` and `vm`: --metrics-listen <addr:port> (a
// Prometheus endpoint, loopback unless --metrics-allow-remote), --log-level <level> (pino JSON
// lines on stderr, one per lifecycle event). Taken out of the argument list before the
// commands look for unknown arguments.
import type { Registry } from 'prom-client';
import type { Runtime } from '../coordinator/runtime.js';
import { InvalidSpecError } from '../errors.js';
import { createLogger, type RuntimeLogger } from '../log.js';
import {
  isLoopback,
  type MetricsServer,
  parseListen,
  startMetricsServer,
} from '../metrics/server.js';

export const OBSERVABILITY_USAGE = `            --metrics-listen <addr:port>   serve Prometheus metrics at http://<addr:port>/metrics
                                           (loopback only; another address needs --metrics-allow-remote)
            --log-level <level>            JSON log lines on stderr: fatal, error, warn, info (default), debug, silent`;

export interface ObservabilityArgs {
  metricsListen?: string;
  allowRemote: boolean;
  logLevel: string;
}

function take(rest: string[], name: string): string | undefined {
  const i = rest.findIndex((a) => a === name || a.startsWith(`${name}=`));
  if (i < 0) return undefined;
  const a = rest[i]!;
  const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : rest[i + 1];
  if (v === undefined || v.startsWith('--'))
    throw new InvalidSpecError(`${name} needs a value`, name.slice(2));
  rest.splice(i, a.includes('=') ? 1 : 2);
  return v;
}

/** Remove the observability options from `rest` (in place) and return them, checked. */
export function takeObservabilityArgs(rest: string[]): ObservabilityArgs {
  const metricsListen = take(rest, '--metrics-listen');
  const i = rest.indexOf('--metrics-allow-remote');
  const allowRemote = i >= 0;
  if (allowRemote) rest.splice(i, 1);
  if (allowRemote && metricsListen === undefined)
    throw new InvalidSpecError('--metrics-allow-remote needs --metrics-listen <addr:port>');
  // A bad or refused address fails here, before any device is set up.
  if (metricsListen !== undefined) {
    const { host } = parseListen(metricsListen);
    if (!allowRemote && !isLoopback(host))
      throw new InvalidSpecError(
        `--metrics-listen ${metricsListen}: ${host} is not a loopback address; metrics reveal the host's devices: add --metrics-allow-remote to serve them there, or listen on 127.0.0.1`,
        'metrics-listen',
      );
  }
  const logLevel = take(rest, '--log-level') ?? 'info';
  createLogger(logLevel); // checks the level
  return { ...(metricsListen !== undefined ? { metricsListen } : {}), allowRemote, logLevel };
}

export const cliLogger = (a: ObservabilityArgs): RuntimeLogger => createLogger(a.logLevel);

/**
 * Start the metrics endpoint for `runtime` if asked; logs where it listens. `also` registers
 * the families of what runs on it (the API server's, the VM's).
 */
export async function startCliMetrics(
  a: ObservabilityArgs,
  runtime: Runtime,
  log: RuntimeLogger,
  also: readonly { registerMetrics(registry: Registry): void }[] = [],
): Promise<MetricsServer | undefined> {
  if (a.metricsListen === undefined) return undefined;
  const server = await startMetricsServer(
    a.metricsListen,
    (r) => {
      runtime.registerMetrics(r, { process: true });
      for (const x of also) x.registerMetrics(r);
    },
    { allowRemote: a.allowRemote },
  );
  log.info({ event: 'metrics_listening', url: server.url }, 'serving metrics');
  return server;
}
