// The API's HTTP/1.1, bounded: a request head parser (request line, headers, Content-Length)
// that refuses what it will not buffer, and the response bytes. Only what the API needs: no
// chunked bodies (a client sends Content-Length), no pipelining past one request at a time,
// keep-alive unless the client says `Connection: close`. Pure functions over bytes, so the
// server thread (server-thread.ts) and the unit tests share them.

export interface HttpLimits {
  /** Request line plus headers, bytes (431 beyond). */
  maxHead: number;
  /** Body bytes (413 beyond). */
  maxBody: number;
}

export const DEFAULT_LIMITS: HttpLimits = { maxHead: 8192, maxBody: 65536 };

export interface RequestHead {
  method: string;
  path: string;
  /** Lower-case header names. */
  headers: Record<string, string>;
  /** Bytes of the head, its final CRLFCRLF included: the body starts there. */
  headBytes: number;
  contentLength: number;
  keepAlive: boolean;
}

/** A request the parser refuses: the status to answer with, and why. */
export interface HeadError {
  status: number;
  message: string;
}

const CRLFCRLF = Buffer.from('\r\n\r\n');
const TOKEN = /^[A-Z]{1,16}$/;

/**
 * Parse the head at the start of `buf`: undefined while it is incomplete (and within
 * maxHead), a HeadError for a malformed or oversized one.
 */
export function parseHead(buf: Buffer, limits: HttpLimits): RequestHead | HeadError | undefined {
  const end = buf.indexOf(CRLFCRLF);
  if (end < 0) {
    return buf.length > limits.maxHead
      ? { status: 431, message: `request head over ${limits.maxHead} bytes` }
      : undefined;
  }
  if (end + 4 > limits.maxHead)
    return { status: 431, message: `request head over ${limits.maxHead} bytes` };
  const lines = buf.toString('latin1', 0, end).split('\r\n');
  const parts = lines[0]!.split(' ');
  if (parts.length !== 3 || !TOKEN.test(parts[0]!) || !parts[1]!.startsWith('/'))
    return { status: 400, message: `malformed request line '${lines[0]!.slice(0, 80)}'` };
  if (parts[2] !== 'HTTP/1.1' && parts[2] !== 'HTTP/1.0')
    return { status: 505, message: `${parts[2]!.slice(0, 20)}: this API speaks HTTP/1.1` };
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0) return { status: 400, message: `malformed header line '${line.slice(0, 80)}'` };
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  if (headers['transfer-encoding'] !== undefined)
    return {
      status: 411,
      message: 'chunked bodies are not accepted: send the body with a Content-Length',
    };
  const cl = headers['content-length'] ?? '0';
  if (!/^\d{1,10}$/.test(cl))
    return { status: 400, message: `Content-Length '${cl.slice(0, 20)}' is not a byte count` };
  const contentLength = Number(cl);
  if (contentLength > limits.maxBody)
    return {
      status: 413,
      message: `request body of ${contentLength} bytes is over the limit of ${limits.maxBody}`,
    };
  const conn = (headers.connection ?? '').toLowerCase();
  const keepAlive = parts[2] === 'HTTP/1.1' ? conn !== 'close' : conn === 'keep-alive';
  return {
    method: parts[0]!,
    path: parts[1]!,
    headers,
    headBytes: end + 4,
    contentLength,
    keepAlive,
  };
}

export const isHeadError = (x: RequestHead | HeadError): x is HeadError => 'status' in x;

const REASONS: Record<number, string> = {
  200: 'OK',
  202: 'Accepted',
  204: 'No Content',
  400: 'Bad Request',
  404: 'Not Found',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  409: 'Conflict',
  411: 'Length Required',
  413: 'Content Too Large',
  431: 'Request Header Fields Too Large',
  500: 'Internal Server Error',
  501: 'Not Implemented',
  503: 'Service Unavailable',
  505: 'HTTP Version Not Supported',
};

/** A whole response: status line, JSON content headers, body (none for 204). */
export function formatResponse(status: number, body: unknown, keepAlive: boolean): Buffer {
  const text = status === 204 || body === undefined ? '' : `${JSON.stringify(body)}\n`;
  const head =
    `HTTP/1.1 ${status} ${REASONS[status] ?? 'Status'}\r\n` +
    (text ? 'Content-Type: application/json\r\n' : '') +
    `Content-Length: ${Buffer.byteLength(text)}\r\n` +
    `Connection: ${keepAlive ? 'keep-alive' : 'close'}\r\n\r\n`;
  return Buffer.from(head + text);
}

export interface ParsedResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** The client's side: a complete response at the start of `buf`, or undefined while incomplete. */
export function parseResponse(buf: Buffer): ParsedResponse | undefined {
  const end = buf.indexOf(CRLFCRLF);
  if (end < 0) return undefined;
  const lines = buf.toString('latin1', 0, end).split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]!);
  if (!m) throw new Error(`not an HTTP response: '${lines[0]!.slice(0, 80)}'`);
  const headers: Record<string, string> = {};
  for (const l of lines.slice(1)) {
    const c = l.indexOf(':');
    if (c > 0) headers[l.slice(0, c).trim().toLowerCase()] = l.slice(c + 1).trim();
  }
  const len = Number(headers['content-length'] ?? 0);
  if (buf.length < end + 4 + len) return undefined;
  return {
    status: Number(m[1]),
    headers,
    body: buf.toString('utf8', end + 4, end + 4 + len),
  };
}
