// The API server's socket thread: accepts connections on the listening socket, reads requests
// with recvmsg (so the fds a client attaches by SCM_RIGHTS arrive with the request's bytes),
// parses them with the bounded parser (http.ts), hands each complete request to the main thread
// and writes back the response it gets.
//
// Why a thread of its own with poll() and recvmsg through koffi: Node's net sockets read with
// read(2), which drops SCM_RIGHTS ancillary data (the kernel closes fds nobody receives), and
// libuv reads as soon as a socket is readable, so there is no way to slip a recvmsg in before
// it. Blocking poll() on the main thread would stall the runtime (its comlink calls, GSI
// commits, the VMM's console); a 10 ms timer poll would add latency and wake-ups for nothing.
// A dedicated thread blocked in poll() costs nothing while idle, and slow, half-open or too
// many clients only ever occupy it, never the runtime: every bound (head/body size, head and
// idle timeouts, the connection cap) is enforced here before the main thread sees a byte.
//
// Ownership: fds that arrive with a request go to the main thread with it (it closes what it
// does not use); fds that arrive with a request refused here, or after it, are closed here.
import { receiveMessageOnPort, workerData } from 'node:worker_threads';
import { errnoNumber } from '../../native/errno.js';
import { decode, encode } from '../../native/layout.js';
import { addressOf, C, cmsghdr, errno, iovec, msghdr, pollfd, raw } from '../../native/libc.js';
import { SOCK, sock } from '../../native/socket.js';
import { API_STAT, apiStatusIndex, ERR } from '../threads.js';
import { formatResponse, isHeadError, parseHead } from './http.js';
import type { ServerThreadData, ToMain, ToThread } from './thread-protocol.js';

interface Conn {
  id: number;
  fd: number;
  data: Buffer;
  fds: number[];
  /** When the request being read began (its first byte), or 0 between requests. */
  started: number;
  lastActive: number;
  /** A request is with the main thread: read nothing more until it answers. */
  waiting: boolean;
  out: Buffer | undefined;
  closeAfterWrite: boolean;
}

const EAGAIN = errnoNumber('EAGAIN'),
  EINTR = errnoNumber('EINTR');
const READ_CHUNK = 65536;

class ServerThread {
  readonly #d: ServerThreadData;
  readonly #conns = new Map<number, Conn>();
  readonly #stats: Float64Array;
  #nextId = 1;
  #stopping = false;
  // One receive buffer and control buffer for every recvmsg (the thread reads one at a time).
  readonly #rx = Buffer.alloc(READ_CHUNK);
  readonly #control: Buffer;
  readonly #iov: Buffer;
  readonly #wakeBuf = Buffer.alloc(8);

  constructor(d: ServerThreadData) {
    this.#d = d;
    this.#stats = new Float64Array(d.stats);
    this.#control = Buffer.alloc(((cmsghdr.size + 7) & ~7) + 4 * d.maxFds);
    this.#iov = encode(iovec, { iov_base: addressOf(this.#rx), iov_len: BigInt(READ_CHUNK) });
  }

  run(): void {
    while (!this.#stopping) {
      const list = [...this.#conns.values()];
      const n = 2 + list.length;
      const pfd = Buffer.alloc(n * pollfd.size);
      const set = (i: number, fd: number, events: number): void => {
        pfd.writeInt32LE(fd, i * pollfd.size);
        pfd.writeInt16LE(events, i * pollfd.size + 4);
      };
      set(0, this.#d.wakeFd, C.POLLIN);
      set(1, this.#d.listenFd, C.POLLIN);
      list.forEach((c, i) => set(2 + i, c.fd, c.out ? SOCK.POLLOUT : c.waiting ? 0 : C.POLLIN));
      const r = raw.poll(pfd, n, this.#timeout(list));
      if (r < 0 && errno() !== EINTR) throw new Error(`API server: poll failed, errno ${errno()}`);
      const revents = (i: number): number => (r > 0 ? pfd.readInt16LE(i * pollfd.size + 6) : 0);
      if (revents(0)) this.#fromMain();
      if (revents(1) & C.POLLIN) this.#accept();
      list.forEach((c, i) => {
        const ev = revents(2 + i);
        if (!ev || !this.#conns.has(c.id)) return;
        if (ev & SOCK.POLLOUT) this.#flush(c);
        else if (ev & (C.POLLIN | C.POLLHUP | C.POLLERR)) this.#read(c);
      });
      this.#expire();
    }
    for (const c of [...this.#conns.values()]) this.#close(c);
  }

  /** Until the nearest head or idle deadline (at most 1 s, so a stop is never late). */
  #timeout(list: Conn[]): number {
    const now = Date.now();
    let t = 1000;
    for (const c of list) {
      if (c.waiting) continue;
      const due = c.out
        ? c.lastActive + this.#d.headTimeoutMs
        : c.started
          ? c.started + this.#d.headTimeoutMs
          : c.lastActive + this.#d.idleTimeoutMs;
      t = Math.min(t, Math.max(0, due - now));
    }
    return t;
  }

  #fromMain(): void {
    raw.read(this.#d.wakeFd, this.#wakeBuf, 8);
    for (;;) {
      const m = receiveMessageOnPort(this.#d.port)?.message as ToThread | undefined;
      if (!m) return;
      if (m.type === 'stop') {
        this.#stopping = true;
        return;
      }
      const c = this.#conns.get(m.conn);
      if (!c) continue; // the client went away while the main thread worked on its request
      c.waiting = false;
      c.started = 0;
      c.lastActive = Date.now();
      this.#send(c, Buffer.from(m.bytes), !m.keepAlive);
    }
  }

  #accept(): void {
    for (;;) {
      const fd = sock.accept4(this.#d.listenFd, null, null, SOCK.SOCK_NONBLOCK | C.SOCK_CLOEXEC);
      if (fd < 0) return; // EAGAIN: no more; other errors (EMFILE...) wait for the next poll
      this.#stats[API_STAT.ACCEPTED]!++;
      const c: Conn = {
        id: this.#nextId++,
        fd,
        data: Buffer.alloc(0),
        fds: [],
        started: 0,
        lastActive: Date.now(),
        waiting: false,
        out: undefined,
        closeAfterWrite: false,
      };
      this.#conns.set(c.id, c);
      this.#stats[API_STAT.OPEN] = this.#conns.size;
      if (this.#conns.size > this.#d.maxConnections) {
        this.#reject(
          c,
          503,
          `the API serves at most ${this.#d.maxConnections} connections at once: close idle ones and retry`,
        );
      }
    }
  }

  #read(c: Conn): void {
    this.#control.fill(0);
    const msg = encode(msghdr, {
      msg_iov: addressOf(this.#iov),
      msg_iovlen: 1n,
      msg_control: addressOf(this.#control),
      msg_controllen: BigInt(this.#control.length),
    });
    const n = raw.recvmsg(c.fd, msg, C.MSG_CMSG_CLOEXEC | SOCK.MSG_DONTWAIT);
    if (n < 0) {
      if (errno() !== EAGAIN && errno() !== EINTR) this.#close(c);
      return;
    }
    const got = decode(msghdr, msg);
    const fds = this.#takeFds(got.msg_controllen);
    this.#stats[API_STAT.FDS_RECEIVED]! += fds.length;
    if (n === 0) {
      for (const f of fds) raw.close(f);
      this.#close(c); // the client closed (or half-closed: it can send no more request)
      return;
    }
    c.fds.push(...fds);
    c.lastActive = Date.now();
    if (!c.started) c.started = c.lastActive;
    c.data = c.data.length
      ? Buffer.concat([c.data, this.#rx.subarray(0, n)])
      : Buffer.from(this.#rx.subarray(0, n));
    if (got.msg_flags & 0x8 /* MSG_CTRUNC */) {
      this.#reject(c, 400, `more than ${this.#d.maxFds} fds attached; the extra ones were dropped`);
      return;
    }
    if (c.fds.length > this.#d.maxFds) {
      this.#reject(c, 400, `more than ${this.#d.maxFds} fds attached to one request`);
      return;
    }
    if (!c.waiting) this.#parse(c); // one request at a time: more bytes wait for the answer
  }

  #takeFds(controllen: bigint): number[] {
    const fds: number[] = [];
    const end = Number(controllen);
    for (let off = 0; off + cmsghdr.size <= end; ) {
      const h = decode(cmsghdr, this.#control, off);
      const len = Number(h.cmsg_len);
      if (len < cmsghdr.size) break;
      if (h.cmsg_level === C.SOL_SOCKET && h.cmsg_type === C.SCM_RIGHTS)
        for (let p = off + ((cmsghdr.size + 7) & ~7); p + 4 <= off + len; p += 4)
          fds.push(this.#control.readInt32LE(p));
      off += (len + 7) & ~7;
    }
    return fds;
  }

  #parse(c: Conn): void {
    const head = parseHead(c.data, this.#d.limits);
    if (!head) return;
    if (isHeadError(head)) {
      this.#reject(c, head.status, head.message);
      return;
    }
    const total = head.headBytes + head.contentLength;
    if (c.data.length < total) return;
    if (c.data.length > total) {
      this.#reject(c, 400, 'bytes after the request: send one request, then wait for its answer');
      return;
    }
    this.#stats[API_STAT.REQUESTS]!++;
    const m: ToMain = {
      type: 'request',
      conn: c.id,
      method: head.method,
      path: head.path,
      body: c.data.toString('utf8', head.headBytes, total),
      fds: c.fds,
    };
    c.fds = [];
    c.data = Buffer.alloc(0);
    c.waiting = true;
    c.closeAfterWrite = !head.keepAlive;
    this.#d.port.postMessage(m);
  }

  /** Refuse what this thread can tell is wrong (size, syntax, flood): answer, close, count. */
  #reject(c: Conn, status: number, message: string): void {
    this.#stats[API_STAT.REJECTED + apiStatusIndex(status)]!++;
    for (const f of c.fds.splice(0)) raw.close(f);
    c.waiting = false;
    this.#send(
      c,
      formatResponse(status, { error: { status, code: ERR.HTTP, message } }, false),
      true,
    );
  }

  #send(c: Conn, bytes: Buffer, close: boolean): void {
    c.out = bytes;
    c.closeAfterWrite ||= close;
    this.#flush(c);
  }

  #flush(c: Conn): void {
    while (c.out?.length) {
      const n = sock.send(c.fd, c.out, c.out.length, SOCK.MSG_NOSIGNAL | SOCK.MSG_DONTWAIT);
      if (n < 0) {
        if (errno() === EAGAIN) return; // POLLOUT will call again
        this.#close(c);
        return;
      }
      c.out = c.out.subarray(n);
      c.lastActive = Date.now();
    }
    c.out = undefined;
    if (c.closeAfterWrite) this.#close(c);
    else if (c.data.length && !c.waiting) this.#parse(c); // sent while the answer was due
  }

  /**
   * A request not complete within the head timeout gets 408; an idle keep-alive connection
   * closes, and so does one that does not take its response within the head timeout.
   */
  #expire(): void {
    const now = Date.now();
    for (const c of [...this.#conns.values()]) {
      if (c.waiting) continue;
      if (c.out) {
        if (now - c.lastActive >= this.#d.headTimeoutMs) this.#close(c);
      } else if (c.started && now - c.started >= this.#d.headTimeoutMs) {
        this.#reject(
          c,
          408,
          `the request was not complete within ${this.#d.headTimeoutMs} ms: send it whole`,
        );
      } else if (!c.started && now - c.lastActive >= this.#d.idleTimeoutMs) {
        this.#stats[API_STAT.IDLE_CLOSED]!++;
        this.#close(c);
      }
    }
  }

  #close(c: Conn): void {
    if (!this.#conns.delete(c.id)) return;
    for (const f of c.fds.splice(0)) raw.close(f);
    raw.close(c.fd);
    this.#stats[API_STAT.OPEN] = this.#conns.size;
  }
}

new ServerThread(workerData as ServerThreadData).run();
