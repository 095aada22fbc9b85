// libc calls through koffi, with fixed prototypes (one per argument shape: cheaper than
// variadic, see docs/architecture.md), plus the structs and constants they take.
// koffi types and functions are per thread: each worker that imports this module gets its own.
import koffi from 'koffi';
import { SysError } from './errno.js';
import { defineConstants } from './ioctl.js';
import { s16, s32, struct, u32, u64 } from './layout.js';

const lib = koffi.load('libc.so.6');

export const raw = {
  open: lib.func('int open(const char *, int, unsigned int)') as (
    path: string,
    flags: number,
    mode: number,
  ) => number,
  close: lib.func('int close(int)') as (fd: number) => number,
  read: lib.func('intptr_t read(int, void *, size_t)') as (
    fd: number,
    buf: Uint8Array,
    len: number,
  ) => number,
  write: lib.func('intptr_t write(int, const void *, size_t)') as (
    fd: number,
    buf: Uint8Array,
    len: number,
  ) => number,
  pread: lib.func('intptr_t pread(int, void *, size_t, int64_t)') as (
    fd: number,
    buf: Uint8Array,
    len: number,
    off: number | bigint,
  ) => number,
  pwrite: lib.func('intptr_t pwrite(int, const void *, size_t, int64_t)') as (
    fd: number,
    buf: Uint8Array,
    len: number,
    off: number | bigint,
  ) => number,
  /** ioctl whose argument is a pointer to a struct (a Buffer). */
  ioctlPtr: lib.func('int ioctl(int, unsigned long, void *)') as (
    fd: number,
    req: number,
    arg: Uint8Array | null,
  ) => number,
  /** ioctl whose argument is an integer (VFIO_CHECK_EXTENSION, KVM_CREATE_VM, ...). */
  ioctlInt: lib.func('int ioctl(int, unsigned long, unsigned long)') as (
    fd: number,
    req: number,
    arg: number,
  ) => number,
  /** ioctl whose argument is a C string (VFIO_GROUP_GET_DEVICE_FD). */
  ioctlStr: lib.func('int ioctl(int, unsigned long, const char *)') as (
    fd: number,
    req: number,
    arg: string,
  ) => number,
  mmap: lib.func('void *mmap(void *, size_t, int, int, int, int64_t)') as (
    addr: bigint | null,
    len: number,
    prot: number,
    flags: number,
    fd: number,
    off: number | bigint,
  ) => bigint,
  munmap: lib.func('int munmap(void *, size_t)') as (addr: bigint, len: number) => number,
  eventfd: lib.func('int eventfd(unsigned int, int)') as (initval: number, flags: number) => number,
  poll: lib.func('int poll(void *, unsigned long, int)') as (
    fds: Uint8Array,
    nfds: number,
    timeoutMs: number,
  ) => number,
  memfd_create: lib.func('int memfd_create(const char *, unsigned int)') as (
    name: string,
    flags: number,
  ) => number,
  ftruncate: lib.func('int ftruncate(int, int64_t)') as (
    fd: number,
    len: number | bigint,
  ) => number,
  dup: lib.func('int dup(int)') as (fd: number) => number,
  fcntl: lib.func('int fcntl(int, int, int)') as (fd: number, cmd: number, arg: number) => number,
  socketpair: lib.func('int socketpair(int, int, int, void *)') as (
    domain: number,
    type: number,
    proto: number,
    sv: Uint8Array,
  ) => number,
  sendmsg: lib.func('intptr_t sendmsg(int, void *, int)') as (
    fd: number,
    msg: Uint8Array,
    flags: number,
  ) => number,
  recvmsg: lib.func('intptr_t recvmsg(int, void *, int)') as (
    fd: number,
    msg: Uint8Array,
    flags: number,
  ) => number,
  prlimit: lib.func('int prlimit(int, int, void *, void *)') as (
    pid: number,
    resource: number,
    newLimit: Uint8Array | null,
    oldLimit: Uint8Array | null,
  ) => number,
  getpid: lib.func('int getpid()') as () => number,
  /** This thread's pthread_t (a VMM kicks a vCPU thread out of KVM_RUN with pthread_kill). */
  pthread_self: lib.func('uint64_t pthread_self()') as () => number | bigint,
  pthread_kill: lib.func('int pthread_kill(uint64_t, int)') as (
    thread: bigint,
    sig: number,
  ) => number,
  pthread_sigmask: lib.func('int pthread_sigmask(int, void *, void *)') as (
    how: number,
    set: Uint8Array | null,
    old: Uint8Array | null,
  ) => number,
};

export const errno = (): number => koffi.errno();
/** The address of a Buffer's memory, for structs that carry user pointers. */
export const addressOf = (buf: Uint8Array): bigint => koffi.address(buf) as bigint;
/** An ArrayBuffer over native memory (mmap), without copying. */
export const view = (addr: bigint, len: number): ArrayBuffer =>
  koffi.view(addr, len) as ArrayBuffer;

export const MAP_FAILED = 0xffffffffffffffffn;

export const C = defineConstants('libc', {
  O_RDONLY: 0o0,
  O_RDWR: 0o2,
  O_NONBLOCK: 0o4000,
  O_CLOEXEC: 0o2000000,
  EFD_CLOEXEC: 0o2000000,
  EFD_NONBLOCK: 0o4000,
  EFD_SEMAPHORE: 1,
  PROT_READ: 1,
  PROT_WRITE: 2,
  MAP_SHARED: 1,
  MAP_PRIVATE: 2,
  MAP_ANONYMOUS: 0x20,
  POLLIN: 1,
  POLLERR: 8,
  POLLHUP: 16,
  POLLNVAL: 32,
  F_GETFD: 1,
  F_SETFD: 2,
  F_GETFL: 3,
  F_DUPFD_CLOEXEC: 1030,
  FD_CLOEXEC: 1,
  MFD_CLOEXEC: 1,
  AF_UNIX: 1,
  SOCK_STREAM: 1,
  SOCK_SEQPACKET: 5,
  SOCK_CLOEXEC: 0o2000000,
  SOL_SOCKET: 1,
  SCM_RIGHTS: 1,
  MSG_CMSG_CLOEXEC: 0x40000000,
  RLIMIT_MEMLOCK: 8,
  SIGUSR2: 12,
  SIG_UNBLOCK: 1,
});

export const pollfd = struct('struct pollfd', { fd: s32, events: s16, revents: s16 });
export const iovec = struct('struct iovec', { iov_base: u64, iov_len: u64 });
export const msghdr = struct('struct msghdr', {
  msg_name: u64,
  msg_namelen: u32,
  msg_iov: u64,
  msg_iovlen: u64,
  msg_control: u64,
  msg_controllen: u64,
  msg_flags: s32,
});
export const cmsghdr = struct('struct cmsghdr', { cmsg_len: u64, cmsg_level: s32, cmsg_type: s32 });
export const rlimit = struct('struct rlimit', { rlim_cur: u64, rlim_max: u64 });

/** Throw a SysError if a call returned < 0; pass its result through otherwise. */
export function check(ret: number, call: string, target: string, hint?: string): number {
  if (ret < 0) throw new SysError(call, target, koffi.errno(), hint);
  return ret;
}

export function open(path: string, flags: number): number {
  return check(raw.open(path, flags | C.O_CLOEXEC, 0), 'open', path);
}

export function close(fd: number): void {
  check(raw.close(fd), 'close', `fd ${fd}`);
}

/** An open file descriptor and the path it names in error messages. */
export interface Target {
  readonly fd: number;
  readonly path: string;
}

/** ioctl with a struct argument, throwing `<NAME> on <path>: <ERRNO>`. */
export function ioctl(t: Target, name: string, req: number, arg: Uint8Array | null): number {
  return check(raw.ioctlPtr(t.fd, req, arg), name, t.path);
}

export function ioctlInt(t: Target, name: string, req: number, arg: number): number {
  return check(raw.ioctlInt(t.fd, req, arg), name, t.path);
}
