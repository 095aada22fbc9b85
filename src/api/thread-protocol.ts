// What the API's socket thread (server-thread.ts) and the main thread (server.ts) exchange: the
// thread's start data, its counters' layout, and the messages each way.
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
  /** API counters (Float64Array, API_STAT), this thread the only writer. */
  stats: SharedArrayBuffer;
}

/** The socket thread's counters. */
export const API_STAT = {
  ACCEPTED: 0,
  REFUSED_FULL: 1,
  REQUESTS: 2,
  REJECTED: 3,
  HEAD_TIMEOUTS: 4,
  IDLE_CLOSED: 5,
  FDS_RECEIVED: 6,
  OPEN: 7,
  WORDS: 8,
} as const;

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
