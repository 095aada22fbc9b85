// A client of the HTTP API: one request per connection, with fds attached by SCM_RIGHTS when
// given. The request goes out in one sendmsg through koffi (the fds ride on its first byte);
// the socket is then handed to a net.Socket to read the answer, so the caller's event loop keeps
// running (a runtime serving the API in the same process answers from that loop).
import { connect, Socket } from 'node:net';
import { C, check, raw } from '../../native/libc.js';
import { sock, sockaddrUn } from '../../native/socket.js';
import { sendFds } from '../index.js';
import { type ParsedResponse, parseResponse } from './http.js';

export interface ApiCall {
  method: 'GET' | 'PUT';
  path: string;
  body?: unknown;
  fds?: readonly number[];
  timeoutMs?: number;
}

export interface ApiReply extends ParsedResponse {
  json: unknown;
}

/** The request's bytes: HTTP/1.1, JSON body with its Content-Length, one request per connection. */
export function requestBytes(call: ApiCall): Buffer {
  const body = call.body === undefined ? '' : JSON.stringify(call.body);
  return Buffer.from(
    `${call.method} ${call.path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n` +
      (body ? 'Content-Type: application/json\r\n' : '') +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}

/** A Unix stream socket connected to `path` (blocking connect: local, at once or refused). */
function connectUnix(path: string): number {
  const fd = check(sock.socket(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_CLOEXEC, 0), 'socket', path);
  const a = sockaddrUn(path);
  try {
    check(
      sock.connect(fd, a, a.length),
      'connect',
      path,
      'is the VMM running with --api-socket at that path, and is it yours (mode 0600)?',
    );
  } catch (e) {
    raw.close(fd);
    throw e;
  }
  return fd;
}

/** Send one request to the API at `address` (a socket path, or host:port for loopback TCP). */
export async function apiCall(address: string, call: ApiCall): Promise<ApiReply> {
  const bytes = requestBytes(call);
  let s: Socket;
  const tcp = /^127\.0\.0\.1:\d+$/.exec(address);
  if (tcp) {
    if (call.fds?.length)
      throw new Error("fds cannot be passed over TCP: use the API's Unix socket (--api-socket)");
    s = connect({ host: '127.0.0.1', port: Number(address.split(':')[1]) });
    s.write(bytes);
  } else {
    const fd = connectUnix(address);
    try {
      sendFds({ fd, path: address }, call.fds ?? [], bytes);
    } catch (e) {
      raw.close(fd);
      throw e;
    }
    s = new Socket({ fd, readable: true, writable: true });
  }
  return readReply(s, call.timeoutMs ?? 30000, `${call.method} ${call.path}`);
}

function readReply(s: Socket, timeoutMs: number, what: string): Promise<ApiReply> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const done = (e: Error | undefined, r?: ApiReply): void => {
      clearTimeout(timer);
      s.destroy();
      if (e) reject(e);
      else resolve(r!);
    };
    const timer = setTimeout(
      () => done(new Error(`${what}: no answer within ${timeoutMs} ms`)),
      timeoutMs,
    );
    s.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      try {
        const r = parseResponse(buf);
        if (r) done(undefined, { ...r, json: r.body ? JSON.parse(r.body) : undefined });
      } catch (e) {
        done(e as Error);
      }
    });
    s.on('error', (e) => done(new Error(`${what}: ${e.message}`)));
    s.on('end', () =>
      done(new Error(`${what}: the server closed the connection without an answer`)),
    );
  });
}
