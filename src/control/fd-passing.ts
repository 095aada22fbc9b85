// Passing file descriptors between processes over a Unix socket (SCM_RIGHTS): how a privileged
// helper hands an unprivileged runtime its /dev/iommu, VFIO cdev or group fds.

import { decode, encode, encodeInto } from '../../native/layout.js';
import { addressOf, C, check, cmsghdr, iovec, msghdr, raw } from '../../native/libc.js';
import { OwnedFd } from '../fd.js';

const align8 = (n: number): number => (n + 7) & ~7;
const cmsgSpace = (dataBytes: number): number => align8(cmsghdr.size) + align8(dataBytes);

/** A connected pair of SOCK_SEQPACKET Unix sockets (message boundaries kept). */
export function socketPair(): [OwnedFd, OwnedFd] {
  const sv = Buffer.alloc(8);
  check(
    raw.socketpair(C.AF_UNIX, C.SOCK_SEQPACKET | C.SOCK_CLOEXEC, 0, sv),
    'socketpair',
    'AF_UNIX SOCK_SEQPACKET',
  );
  return [new OwnedFd(sv.readInt32LE(0), 'socket 0'), new OwnedFd(sv.readInt32LE(4), 'socket 1')];
}

/** Send `payload` with `fds` attached. The fds stay open here (the receiver gets duplicates). */
export function sendFds(
  sock: { fd: number; path: string },
  fds: readonly number[],
  payload: Uint8Array = Buffer.from([0]),
): void {
  if (payload.length === 0)
    throw new Error(
      'sendFds: the payload must not be empty (a message must carry at least one byte)',
    );
  const data = Buffer.from(payload);
  const iov = encode(iovec, { iov_base: addressOf(data), iov_len: BigInt(data.length) });
  const control = Buffer.alloc(fds.length ? cmsgSpace(4 * fds.length) : 0);
  if (fds.length) {
    encodeInto(cmsghdr, control, {
      cmsg_len: BigInt(align8(cmsghdr.size) + 4 * fds.length),
      cmsg_level: C.SOL_SOCKET,
      cmsg_type: C.SCM_RIGHTS,
    });
    fds.forEach((fd, i) => control.writeInt32LE(fd, align8(cmsghdr.size) + 4 * i));
  }
  const msg = encode(msghdr, {
    msg_iov: addressOf(iov),
    msg_iovlen: 1n,
    msg_control: fds.length ? addressOf(control) : 0n,
    msg_controllen: BigInt(control.length),
  });
  check(raw.sendmsg(sock.fd, msg, 0), 'sendmsg', sock.path);
}

/** Receive one message and the fds attached to it (opened close-on-exec). */
export function recvFds(
  sock: { fd: number; path: string },
  maxFds = 8,
  maxPayload = 4096,
): { payload: Buffer; fds: OwnedFd[] } {
  const data = Buffer.alloc(maxPayload);
  const iov = encode(iovec, { iov_base: addressOf(data), iov_len: BigInt(maxPayload) });
  const control = Buffer.alloc(cmsgSpace(4 * maxFds));
  const msg = encode(msghdr, {
    msg_iov: addressOf(iov),
    msg_iovlen: 1n,
    msg_control: addressOf(control),
    msg_controllen: BigInt(control.length),
  });
  const n = check(raw.recvmsg(sock.fd, msg, C.MSG_CMSG_CLOEXEC), 'recvmsg', sock.path);
  const got = decode(msghdr, msg);
  const fds: OwnedFd[] = [];
  const end = Number(got.msg_controllen);
  for (let off = 0; off + cmsghdr.size <= end; ) {
    const h = decode(cmsghdr, control, off);
    const len = Number(h.cmsg_len);
    if (len < cmsghdr.size) break;
    if (h.cmsg_level === C.SOL_SOCKET && h.cmsg_type === C.SCM_RIGHTS) {
      for (let p = off + align8(cmsghdr.size); p + 4 <= off + len; p += 4) {
        const fd = control.readInt32LE(p);
        fds.push(new OwnedFd(fd, `fd ${fd} from ${sock.path}`));
      }
    }
    off += align8(len);
  }
  if (got.msg_flags & 0x8 /* MSG_CTRUNC */) {
    for (const f of fds) f.close();
    throw new Error(
      `recvFds on ${sock.path}: more than ${maxFds} fds were sent; they were dropped`,
    );
  }
  return { payload: data.subarray(0, n), fds };
}
