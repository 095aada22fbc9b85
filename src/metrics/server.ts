// The metrics endpoint (`--metrics-listen <addr:port>`): GET /metrics in the Prometheus text
// format, or OpenMetrics when the Accept header asks for it. Loopback only unless the caller
// allows another address. Anything else gets a clear HTTP error: another path 404, another
// method 405, headers over the bound 431, a client too slow to send its request 408; a scrape
// that fails 500. Self-contained (its own node:http server), so it cannot disturb the runtime.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { Registry } from 'prom-client';
import { InvalidSpecError } from '../errors.js';

export interface MetricsListen {
  host: string;
  port: number;
}

export interface MetricsServerOptions {
  /** A non-loopback address is refused unless this is true (`--metrics-allow-remote`). */
  allowRemote?: boolean;
  /** Request headers larger than this get 431 (bytes; default 8192). */
  maxHeaderBytes?: number;
  /** A client that has not sent its whole request in this long gets 408 (ms; default 5000). */
  requestTimeoutMs?: number;
}

export interface MetricsServer {
  readonly host: string;
  readonly port: number;
  /** `http://host:port/metrics` */
  readonly url: string;
  close(): Promise<void>;
}

const USAGE = '--metrics-listen <addr:port> (e.g. 127.0.0.1:9464, [::1]:9464)';

/** Parse `addr:port` (`[v6]:port`; `:port` or a bare port is 127.0.0.1). */
export function parseListen(text: string): MetricsListen {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d+)$/.exec(text) ?? /^()()(\d+)$/.exec(text);
  const port = Number(m?.[3]);
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535)
    throw new InvalidSpecError(`metrics: '${text}' is not an address and port: ${USAGE}`);
  const host = m[1] || m[2] || '127.0.0.1';
  if (host !== 'localhost' && isIP(host) === 0)
    throw new InvalidSpecError(`metrics: '${host}' is not an IP address: ${USAGE}`);
  return { host, port };
}

export function isLoopback(host: string): boolean {
  return (
    host === 'localhost' ||
    host === '::1' ||
    /^127\.\d+\.\d+\.\d+$/.test(host) ||
    /^::ffff:127\./i.test(host)
  );
}

/**
 * Serve the metrics `register` adds to a registry (called twice: once for a text registry and
 * once for an OpenMetrics one, as prom-client fixes the format per registry).
 */
export async function startMetricsServer(
  listen: MetricsListen | string,
  register: (registry: Registry) => void,
  opts: MetricsServerOptions = {},
): Promise<MetricsServer> {
  const { host, port } = typeof listen === 'string' ? parseListen(listen) : listen;
  if (!isLoopback(host) && !opts.allowRemote)
    throw new InvalidSpecError(
      `metrics: ${host} is not a loopback address; metrics reveal the host's devices: pass --metrics-allow-remote to serve them on ${host}, or listen on 127.0.0.1`,
    );
  const text = new Registry();
  const om = new Registry();
  (om as unknown as { setContentType(t: string): void }).setContentType(
    Registry.OPENMETRICS_CONTENT_TYPE,
  );
  register(text);
  register(om);
  const timeout = opts.requestTimeoutMs ?? 5000;
  const server = createServer(
    {
      maxHeaderSize: opts.maxHeaderBytes ?? 8192,
      requestTimeout: timeout,
      headersTimeout: timeout,
      keepAliveTimeout: timeout,
      // How often Node checks for requests past their timeout (default 30 s).
      connectionsCheckingInterval: Math.max(50, Math.min(1000, timeout / 4)),
    },
    (req, res) => {
      void handle(req, res, text, om);
    },
  );
  server.on('clientError', (err: Error & { code?: string }, socket) => {
    if (!socket.writable) return void socket.destroy();
    const status =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? 431
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? 408
          : 400;
    const body = `${STATUS_TEXT[status]}\n`;
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_TEXT[status]}\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
    );
  });
  await listenOn(server, host, port);
  const addr = server.address() as { address: string; port: number };
  const shown = addr.address.includes(':') ? `[${addr.address}]` : addr.address;
  return {
    host: addr.address,
    port: addr.port,
    url: `http://${shown}:${addr.port}/metrics`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  404: 'Not Found',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  431: 'Request Header Fields Too Large',
  500: 'Internal Server Error',
};

function listenOn(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const fail = (e: Error & { code?: string }): void =>
      reject(
        new InvalidSpecError(
          `metrics: cannot listen on ${host}:${port}: ${e.code ?? e.message}${e.code === 'EADDRINUSE' ? ' (the port is taken: choose another)' : ''}`,
        ),
      );
    server.once('error', fail);
    server.listen(port, host, () => {
      server.off('error', fail);
      resolve();
    });
  });
}

function reply(res: ServerResponse, status: number, body: string, headers = {}): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', ...headers });
  res.end(body);
}

/** Whether the client asked for OpenMetrics (Accept: application/openmetrics-text). */
export const wantsOpenMetrics = (accept: string | undefined): boolean =>
  /application\/openmetrics-text/i.test(accept ?? '');

async function handle(
  req: IncomingMessage,
  res: ServerResponse,
  text: Registry,
  om: Registry,
): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  if (path !== '/metrics')
    return reply(res, 404, `no ${path} here: metrics are served at /metrics\n`);
  if (req.method !== 'GET' && req.method !== 'HEAD')
    return reply(res, 405, `${req.method} is not allowed: use GET /metrics\n`, {
      Allow: 'GET, HEAD',
    });
  const registry = wantsOpenMetrics(req.headers.accept) ? om : text;
  try {
    const body = await registry.metrics();
    res.writeHead(200, { 'Content-Type': registry.contentType });
    res.end(req.method === 'HEAD' ? undefined : body);
  } catch (e) {
    reply(res, 500, `collecting metrics failed: ${(e as Error).message}\n`);
  }
}
