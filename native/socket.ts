// Stream sockets through koffi, for the HTTP API (src/api/): socket, bind, listen, accept4,
// connect, and the two socket addresses it uses (sockaddr_un, sockaddr_in for loopback TCP).
// Node's net module cannot read SCM_RIGHTS ancillary data, so the API owns its sockets here.
import koffi from 'koffi';
import { defineConstants } from './ioctl.js';
import { check } from './libc.js';

const lib = koffi.load('libc.so.6');

export const sock = {
  socket: lib.func('int socket(int, int, int)') as (d: number, t: number, p: number) => number,
  bind: lib.func('int bind(int, const void *, unsigned int)') as (
    fd: number,
    addr: Uint8Array,
    len: number,
  ) => number,
  listen: lib.func('int listen(int, int)') as (fd: number, backlog: number) => number,
  accept4: lib.func('int accept4(int, void *, void *, int)') as (
    fd: number,
    addr: null,
    len: null,
    flags: number,
  ) => number,
  connect: lib.func('int connect(int, const void *, unsigned int)') as (
    fd: number,
    addr: Uint8Array,
    len: number,
  ) => number,
  getsockname: lib.func('int getsockname(int, void *, void *)') as (
    fd: number,
    addr: Uint8Array,
    len: Uint8Array,
  ) => number,
  send: lib.func('intptr_t send(int, const void *, size_t, int)') as (
    fd: number,
    buf: Uint8Array,
    len: number,
    flags: number,
  ) => number,
  setsockopt: lib.func('int setsockopt(int, int, int, const void *, unsigned int)') as (
    fd: number,
    level: number,
    name: number,
    value: Uint8Array,
    len: number,
  ) => number,
};

export const SOCK = defineConstants('libc', {
  AF_INET: 2,
  SOCK_NONBLOCK: 0o4000,
  SO_REUSEADDR: 2,
  MSG_DONTWAIT: 0x40,
  MSG_NOSIGNAL: 0x4000,
  POLLOUT: 4,
});

const SUN_PATH = 108; // sizeof(sockaddr_un.sun_path) on Linux

/** sockaddr_un for `path` (sun_family AF_UNIX = 1, then the NUL-terminated path). */
export function sockaddrUn(path: string): Buffer {
  const p = Buffer.from(path);
  if (p.length >= SUN_PATH)
    throw new Error(
      `socket path ${path} is ${p.length} bytes; a Unix socket path must be under ${SUN_PATH} (use a shorter directory)`,
    );
  const a = Buffer.alloc(2 + SUN_PATH);
  a.writeUInt16LE(1, 0);
  p.copy(a, 2);
  return a;
}

/** sockaddr_in for 127.0.0.1:`port` (port and address in network byte order). */
export function sockaddrLoopback(port: number): Buffer {
  const a = Buffer.alloc(16);
  a.writeUInt16LE(SOCK.AF_INET, 0);
  a.writeUInt16BE(port, 2);
  a.writeUInt32BE(0x7f000001, 4);
  return a;
}

/** The port a bound AF_INET socket got (for a listen on port 0). */
export function boundPort(fd: number): number {
  const a = Buffer.alloc(16),
    len = Buffer.alloc(4);
  len.writeUInt32LE(16);
  check(sock.getsockname(fd, a, len), 'getsockname', `socket ${fd}`);
  return a.readUInt16BE(2);
}
