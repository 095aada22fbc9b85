// The HTTP API server, main-thread side: makes the listening socket (a Unix socket, mode 0600
// unless told otherwise; loopback TCP only when asked), starts the socket thread
// (server-thread.ts: accept, recvmsg with SCM_RIGHTS, the bounded parser, timeouts, the
// connection cap) and answers each complete request with the handler, one at a time per
// connection. A request's fds come as ReceivedFds: the handler takes the ones it keeps, the
// server closes the rest once the answer is sent.
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import { MessageChannel, Worker } from 'node:worker_threads';
import type { Registry } from 'prom-client';
import { C, check, raw } from '../../native/libc.js';
import { boundPort, SOCK, sock, sockaddrLoopback, sockaddrUn } from '../../native/socket.js';
import {
  API_STAT,
  API_STATUSES,
  type ApiRoute,
  apiRequestSlot,
  apiStatusIndex,
  createEventfd,
  type OwnedFd,
  registerApiMetrics,
  signalEventfd,
} from '../index.js';
import { INTERNAL_CODE } from './error-body.js';
import { DEFAULT_LIMITS, formatResponse, type HttpLimits } from './http.js';
import type { ServerThreadData, ToMain, ToThread } from './thread-protocol.js';

/** The fds attached to one request, by arrival order. take() hands one over; the rest are closed. */
export class ReceivedFds {
  readonly #fds: (number | undefined)[];
  constructor(fds: readonly number[]) {
    this.#fds = [...fds];
  }
  get length(): number {
    return this.#fds.length;
  }
  /** The fd numbers still held here (not taken), with their arrival index. */
  held(): { index: number; fd: number }[] {
    return this.#fds.flatMap((fd, index) => (fd === undefined ? [] : [{ index, fd }]));
  }
  /** Take fd `index`: the caller owns it from now on. */
  take(index: number): number {
    const fd = this.#fds[index];
    if (fd === undefined) throw new Error(`fd #${index} of the request was taken already`);
    this.#fds[index] = undefined;
    return fd;
  }
  closeRest(): void {
    for (const [i, fd] of this.#fds.entries()) {
      if (fd !== undefined) raw.close(fd);
      this.#fds[i] = undefined;
    }
  }
}

export interface ApiRequest {
  method: string;
  /** The path without its query string. */
  path: string;
  query: URLSearchParams;
  body: string;
  fds: ReceivedFds;
}
export interface ApiResponse {
  status: number;
  body?: unknown;
  /** The route that answered (routes.ts), counted with the status; none if not given. */
  route?: ApiRoute;
}
export type ApiHandler = (req: ApiRequest) => Promise<ApiResponse>;

export interface ApiServerOptions {
  /** A Unix socket path (made afresh; a stale socket there is replaced, a live one refused). */
  socket?: string;
  /** The socket's permissions (default 0o600: only the owner may connect). */
  mode?: number;
  /** Listen on 127.0.0.1:<port> instead (0: any free port). No fd passing over TCP. */
  tcpPort?: number;
  limits?: Partial<HttpLimits>;
  /** Connections open at once (default 16); one more is answered 503 and closed. */
  maxConnections?: number;
  /** A request must be whole this long after its first byte (default 5000 ms), else 408. */
  headTimeoutMs?: number;
  /** An idle keep-alive connection closes after this long (default 30000 ms). */
  idleTimeoutMs?: number;
  /** Fds one request may carry (default 4). */
  maxFds?: number;
}

export interface ApiServerStats {
  accepted: number;
  refusedFull: number;
  requests: number;
  rejected: number;
  headTimeouts: number;
  idleClosed: number;
  fdsReceived: number;
  open: number;
}

const WORKER_URL = new URL('./server-thread.js', import.meta.url);

export class ApiServer {
  readonly #worker: Worker;
  readonly #port: MessageChannel['port1'];
  readonly #listen: number;
  readonly #wake: OwnedFd;
  readonly #stats: Float64Array;
  #closing: Promise<void> | undefined;
  /** Where clients connect: the socket path, or 127.0.0.1:<port>. */
  readonly address: string;
  readonly tcp: boolean;

  private constructor(
    listen: number,
    readonly handler: ApiHandler,
    readonly opts: ApiServerOptions,
    address: string,
  ) {
    this.#listen = listen;
    this.address = address;
    this.tcp = opts.tcpPort !== undefined;
    this.#wake = createEventfd();
    const stats = new SharedArrayBuffer(API_STAT.WORDS * Float64Array.BYTES_PER_ELEMENT);
    this.#stats = new Float64Array(stats);
    const { port1, port2 } = new MessageChannel();
    this.#port = port1;
    const data: ServerThreadData = {
      listenFd: listen,
      wakeFd: this.#wake.fd,
      port: port2,
      limits: { ...DEFAULT_LIMITS, ...opts.limits },
      maxConnections: opts.maxConnections ?? 16,
      headTimeoutMs: opts.headTimeoutMs ?? 5000,
      idleTimeoutMs: opts.idleTimeoutMs ?? 30000,
      maxFds: opts.maxFds ?? 4,
      stats,
    };
    this.#worker = new Worker(WORKER_URL, {
      workerData: data,
      transferList: [port2],
      name: 'api-server',
    });
    this.#worker.unref();
    port1.on('message', (m: ToMain) => void this.#serve(m));
    port1.unref();
  }

  /** Listen (a Unix socket unless tcpPort is given) and serve requests with `handler`. */
  static start(handler: ApiHandler, opts: ApiServerOptions): ApiServer {
    if ((opts.socket === undefined) === (opts.tcpPort === undefined))
      throw new Error('ApiServer: give a Unix socket path or a loopback TCP port (one of them)');
    const tcp = opts.tcpPort !== undefined;
    const fd = check(
      sock.socket(
        tcp ? SOCK.AF_INET : C.AF_UNIX,
        C.SOCK_STREAM | SOCK.SOCK_NONBLOCK | C.SOCK_CLOEXEC,
        0,
      ),
      'socket',
      tcp ? 'AF_INET' : 'AF_UNIX',
    );
    try {
      let address: string;
      if (tcp) {
        const one = Buffer.alloc(4);
        one.writeInt32LE(1);
        sock.setsockopt(fd, C.SOL_SOCKET, SOCK.SO_REUSEADDR, one, 4);
        const a = sockaddrLoopback(opts.tcpPort!);
        check(sock.bind(fd, a, a.length), 'bind', `127.0.0.1:${opts.tcpPort}`);
        address = `127.0.0.1:${boundPort(fd)}`;
      } else {
        const path = opts.socket!;
        removeStaleSocket(path);
        const a = sockaddrUn(path);
        check(sock.bind(fd, a, a.length), 'bind', path);
        // Before listen(): nobody can connect while the mode is still the umask's.
        chmodSync(path, opts.mode ?? 0o600);
        address = path;
      }
      check(sock.listen(fd, 64), 'listen', address);
      return new ApiServer(fd, handler, opts, address);
    } catch (e) {
      raw.close(fd);
      throw e;
    }
  }

  stats(): ApiServerStats {
    const s = this.#stats;
    const rejected = (status: number): number => s[API_STAT.REJECTED + apiStatusIndex(status)]!;
    let allRejected = 0;
    for (let i = 0; i < API_STATUSES.length; i++) allRejected += s[API_STAT.REJECTED + i]!;
    return {
      accepted: s[API_STAT.ACCEPTED]!,
      refusedFull: rejected(503),
      requests: s[API_STAT.REQUESTS]!,
      rejected: allRejected,
      headTimeouts: rejected(408),
      idleClosed: s[API_STAT.IDLE_CLOSED]!,
      fdsReceived: s[API_STAT.FDS_RECEIVED]!,
      open: s[API_STAT.OPEN]!,
    };
  }

  /**
   * Export the API's counters on a prom-client registry (docs/metrics.md, "The HTTP API"):
   * connections, requests by route and status, rejections by status, fds; read when scraped.
   */
  registerMetrics(registry: Registry): void {
    registerApiMetrics(registry, this.#stats);
  }

  async #serve(m: ToMain): Promise<void> {
    const fds = new ReceivedFds(m.fds);
    const q = m.path.indexOf('?');
    const req: ApiRequest = {
      method: m.method,
      path: q < 0 ? m.path : m.path.slice(0, q),
      query: new URLSearchParams(q < 0 ? '' : m.path.slice(q + 1)),
      body: m.body,
      fds,
    };
    let res: ApiResponse;
    try {
      res = await this.handler(req);
    } catch (e) {
      res = {
        status: 500,
        body: { error: { status: 500, code: INTERNAL_CODE, message: String(e) } },
      };
    } finally {
      fds.closeRest();
    }
    this.#stats[apiRequestSlot(res.route ?? 'none', res.status)]!++;
    this.#reply({
      type: 'response',
      conn: m.conn,
      bytes: formatResponse(res.status, res.body, true),
      keepAlive: true,
    });
  }

  #reply(m: ToThread): void {
    if (this.#closing) return;
    this.#port.postMessage(m);
    signalEventfd(this.#wake.fd);
  }

  /** Stop serving: the socket thread closes every connection and exits; the socket file goes. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#port.postMessage({ type: 'stop' } satisfies ToThread);
      signalEventfd(this.#wake.fd);
      const exited = new Promise<void>((r) => this.#worker.once('exit', () => r()));
      await Promise.race([exited, new Promise((r) => setTimeout(r, 2000))]);
      await this.#worker.terminate();
      this.#port.close();
      raw.close(this.#listen);
      this.#wake.close();
      if (!this.tcp) {
        try {
          unlinkSync(this.address);
        } catch {}
      }
    })();
    return this.#closing;
  }
}

/** A socket file left by a VMM that died is replaced; a live one (someone accepts) is refused. */
function removeStaleSocket(path: string): void {
  let st: ReturnType<typeof lstatSync>;
  try {
    st = lstatSync(path);
  } catch {
    return;
  }
  if (!st.isSocket())
    throw new Error(
      `--api-socket ${path}: a file that is not a socket is there; give another path`,
    );
  const probe = sock.socket(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_CLOEXEC, 0);
  const a = sockaddrUn(path);
  const live = sock.connect(probe, a, a.length) === 0;
  raw.close(probe);
  if (live)
    throw new Error(
      `--api-socket ${path}: another process serves that socket; stop it or give another path`,
    );
  unlinkSync(path);
}
