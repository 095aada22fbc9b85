// What the API's socket thread (server-thread.ts) and the main thread (server.ts) exchange: the
// thread's start data and the messages each way (its counters' layout is API_STAT, schema.ts).
import type { MessagePort } from 'node:worker_threads';
import type { HttpLimits } from './http.js';

export interface ServerThreadData {
  listenFd: number;
  wakeFd: number;
  port: MessagePort;
  limits: HttpLimits;
  maxConnections: number;
  headTimeoutMs: number;
  idleTimeoutMs: number;
  maxFds: number;
  /**
   * The API's counters (Float64Array, API_STAT: declared in src/metrics/schema.ts's API_STATS):
   * this thread writes all but the routes' rows, which the main thread writes.
   */
  stats: SharedArrayBuffer;
}

export type ToMain = {
  type: 'request';
  conn: number;
  method: string;
  path: string;
  body: string;
  fds: number[];
};
export type ToThread =
  | { type: 'response'; conn: number; bytes: Uint8Array; keepAlive: boolean }
  | { type: 'stop' };
