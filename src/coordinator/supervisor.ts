// The supervisor of one device worker, in the coordinator: it detects a worker that exits, dies
// of an uncaught error, or hangs (a request waiting at the ring's head while the ring server's
// heartbeat, C_HEARTBEATS in shared memory, stands still for `watchdogMs`), and restarts it with
// DeviceHandle.respawn() on the same ring, fd, shared state, eventfds and routes: the successor
// resumes the device's state, completes the request its predecessor had taken as WORKER_DIED and
// serves the queued ones. More than `maxRestarts` in `windowMs`, a restart that fails or takes
// longer than `restartTimeoutMs`, or a worker stuck in a kernel call (terminate() cannot end it)
// make the device failed: from then on a small thread (workers/failed-device.ts) completes every
// request at once as DEVICE_FAILED (the VMM reads all ones, drops writes) and control calls reject with
// DeviceFailedError. Counts and state are stats rows (src/metrics/schema.ts), read at scrape time.

import { Worker } from 'node:worker_threads';
import { DeviceFailedError, type DeviceFailureReason } from '../errors.js';
import {
  C_FAIL_EXIT,
  C_HEARTBEATS,
  C_RESTARTS,
  C_STATE_RUNNING,
  FAIL_REASONS,
  SUPERVISOR_STATES,
} from '../metrics/schema.js';
import { H_HEAD, ringGeometry, ringWords, S_SEQ, slotWord } from '../ring/protocol.js';
import type { DeviceHandle, DeviceWorkerExitEvent } from './device-handle.js';

class RestartTimeout extends Error {}

const FAILED_DEVICE_URL = new URL('../../workers/failed-device.js', import.meta.url);

export interface SupervisorOptions {
  /**
   * A request waiting at the ring's head while the worker's heartbeat stands still this long
   * means the worker hangs, in ms (default 2000: a real device's slowest call in the lab's TCG
   * guest, a reset, stays well under it).
   */
  watchdogMs?: number;
  /** How often the watchdog looks, in ms (default watchdogMs / 4). */
  checkMs?: number;
  /** Restarts allowed within `windowMs` before the device is failed (default 5 in 60 s). */
  maxRestarts?: number;
  windowMs?: number;
  /**
   * Longest restart (spawn to ready) before the device is failed, in ms (default 30000: a cold
   * worker takes ~9 s to start in the lab's TCG guest).
   */
  restartTimeoutMs?: number;
}

export type SupervisorState = (typeof SUPERVISOR_STATES)[number] | 'stopped';
export type FailureKind = (typeof FAIL_REASONS)[number];

/** What the supervisor saw and did, in order (the last 100 are kept in `events`). */
export interface SupervisorEvent {
  kind: FailureKind | 'restarted' | 'failed';
  /** performance.now() when it happened. */
  at: number;
  detail: string;
  /** restarted: from the failure's detection to the successor's ready(), in ms. */
  recoveryMs?: number;
}

export class Supervisor {
  readonly #handle: DeviceHandle;
  readonly #stats: Float64Array;
  readonly #ring: Int32Array;
  readonly #mask: number;
  readonly #watchdogMs: number;
  readonly #maxRestarts: number;
  readonly #windowMs: number;
  readonly #restartTimeoutMs: number;
  #state: SupervisorState = 'running';
  readonly #restartTimes: number[] = [];
  readonly #timer: NodeJS.Timeout;
  readonly #offExit: () => void;
  #lastBeat = -1;
  #beatAt = 0;
  #failServer: Worker | undefined;
  #restarting: Promise<void> | undefined;
  readonly #listeners = new Set<(e: SupervisorEvent) => void>();
  /** The last 100 events. */
  readonly events: SupervisorEvent[] = [];
  /** Each restart's recovery time (detection to successor ready), in ms. */
  readonly recoveries: number[] = [];

  private constructor(handle: DeviceHandle, opts: SupervisorOptions) {
    this.#handle = handle;
    this.#stats = new Float64Array(handle.memory.stats);
    this.#ring = ringWords(handle.ring);
    this.#mask = ringGeometry(handle.ring).capacity - 1;
    this.#watchdogMs = opts.watchdogMs ?? 2000;
    this.#maxRestarts = opts.maxRestarts ?? 5;
    this.#windowMs = opts.windowMs ?? 60_000;
    this.#restartTimeoutMs = opts.restartTimeoutMs ?? 30_000;
    this.#offExit = handle.onExit((e) => this.#onExit(e));
    this.#timer = setInterval(() => this.#check(), opts.checkMs ?? this.#watchdogMs / 4);
    this.#timer.unref();
    this.#setState('running');
  }

  /** Supervise a started device handle. */
  static watch(handle: DeviceHandle, opts: SupervisorOptions = {}): Supervisor {
    return new Supervisor(handle, opts);
  }

  get state(): SupervisorState {
    return this.#state;
  }

  /** Restarts done so far. */
  get restarts(): number {
    return this.#stats[C_RESTARTS]!;
  }

  /** Call `cb` on every event; returns the unsubscribe function. */
  onEvent(cb: (e: SupervisorEvent) => void): () => void {
    this.#listeners.add(cb);
    return () => {
      this.#listeners.delete(cb);
    };
  }

  /** Resolves when no restart is under way (for tests and orderly shutdown). */
  async settled(): Promise<void> {
    while (this.#restarting) await this.#restarting;
  }

  /**
   * Stop supervising (before the handle's shutdown): no more restarts; a failed device's
   * answering server stops (the handle's shutdown then closes the ring).
   */
  async stop(): Promise<void> {
    if (this.#state === 'stopped') return;
    clearInterval(this.#timer);
    this.#offExit();
    this.#state = 'stopped';
    await this.#restarting?.catch(() => {});
    const failed = this.#failServer;
    if (failed) {
      const done = new Promise((r) => failed.once('exit', r));
      failed.postMessage('stop');
      await done;
    }
  }

  #emit(kind: SupervisorEvent['kind'], detail: string, recoveryMs?: number): SupervisorEvent {
    const e: SupervisorEvent = {
      kind,
      at: performance.now(),
      detail,
      ...(recoveryMs !== undefined ? { recoveryMs } : {}),
    };
    this.events.push(e);
    if (this.events.length > 100) this.events.shift();
    for (const cb of this.#listeners) {
      try {
        cb(e);
      } catch (err) {
        console.error(
          `${this.#handle.name}: a supervisor listener threw: ${(err as Error).message}`,
        );
      }
    }
    return e;
  }

  #setState(s: SupervisorState): void {
    this.#state = s;
    SUPERVISOR_STATES.forEach((name, i) => {
      this.#stats[C_STATE_RUNNING + i] = name === s ? 1 : 0;
    });
  }

  #onExit(e: DeviceWorkerExitEvent): void {
    if (e.planned || this.#state !== 'running') return;
    const kind: FailureKind = e.error ? 'crash' : 'exit';
    const detail = e.error ? `uncaught error: ${e.error.message}` : `exited with code ${e.code}`;
    this.#begin(kind, detail);
  }

  /** The watchdog: a request waiting at the head and a heartbeat standing still. */
  #check(): void {
    if (this.#state !== 'running' || this.#handle.state !== 'running') {
      this.#beatAt = performance.now();
      return;
    }
    const beat = this.#stats[C_HEARTBEATS]!,
      now = performance.now();
    if (beat !== this.#lastBeat || !this.#waiting()) {
      this.#lastBeat = beat;
      this.#beatAt = now;
      return;
    }
    if (now - this.#beatAt >= this.#watchdogMs)
      this.#begin(
        'hang',
        `a request waited ${(now - this.#beatAt).toFixed(0)} ms with no heartbeat`,
      );
  }

  /** Is the request at the ring's head published but not completed? */
  #waiting(): boolean {
    const h = this.#ring,
      t = Atomics.load(h, H_HEAD);
    return Atomics.load(h, slotWord(t & this.#mask) + S_SEQ) === ((t + 1) | 0);
  }

  #begin(kind: FailureKind, detail: string): void {
    const detected = this.#emit(kind, detail).at;
    this.#stats[C_FAIL_EXIT + FAIL_REASONS.indexOf(kind)]!++;
    this.#setState('restarting');
    this.#restarting = this.#restart(kind, detected).finally(() => {
      this.#restarting = undefined;
    });
  }

  /**
   * Restart within the budget (`maxRestarts` in `windowMs`): a restart whose new worker fails to
   * start is tried again while the budget lasts; one that outlasts `restartTimeoutMs`, or a worker
   * stuck in a kernel call, fails the device at once.
   */
  async #restart(kind: FailureKind, detected: number): Promise<void> {
    for (let hang = kind === 'hang'; ; hang = false) {
      const now = performance.now();
      while (this.#restartTimes.length && now - this.#restartTimes[0]! > this.#windowMs)
        this.#restartTimes.shift();
      if (this.#restartTimes.length >= this.#maxRestarts) {
        await this.#fail(
          'restarts',
          `${this.#restartTimes.length} restarts within ${this.#windowMs} ms, and it failed again (${kind})`,
        );
        return;
      }
      this.#restartTimes.push(now);
      const error = await this.#respawn(hang);
      if (this.#state === 'stopped') return;
      if (!error) break;
      const stuck = error instanceof DeviceFailedError && error.reason === 'stuck';
      const late = error instanceof RestartTimeout;
      this.#stats[C_FAIL_EXIT + FAIL_REASONS.indexOf(stuck ? 'stuck' : 'spawn')]!++;
      this.#emit(stuck ? 'stuck' : 'spawn', error.message);
      if (stuck || late) {
        await this.#fail(stuck ? 'stuck' : 'spawn', error.message);
        return;
      }
    }
    this.#stats[C_RESTARTS]!++;
    const recoveryMs = performance.now() - detected;
    this.recoveries.push(recoveryMs);
    if (this.recoveries.length > 10_000) this.recoveries.shift();
    this.#beatAt = performance.now();
    this.#setState('running');
    this.#emit('restarted', `incarnation ${this.#stats[C_RESTARTS]! + 1}`, recoveryMs);
  }

  /** One respawn, bounded by restartTimeoutMs; its error, if it failed. */
  async #respawn(hang: boolean): Promise<Error | undefined> {
    let timer: NodeJS.Timeout | undefined;
    try {
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new RestartTimeout(`the restart took over ${this.#restartTimeoutMs} ms`)),
          this.#restartTimeoutMs,
        );
      });
      // A hung worker would not answer a shutdown call: terminate it at once.
      await Promise.race([this.#handle.respawn(hang ? { graceMs: 0 } : {}), late]);
      return undefined;
    } catch (e) {
      return e instanceof Error ? e : new Error(String(e));
    } finally {
      clearTimeout(timer);
    }
  }

  /** Give the device up: the handle rejects calls, and this thread answers its ring. */
  async #fail(reason: DeviceFailureReason, why: string): Promise<void> {
    const error = new DeviceFailedError(
      `device ${this.#handle.name} has failed: ${why}; its requests complete as DEVICE_FAILED. ` +
        'Remove the device and add it again',
      this.#handle.name,
      reason,
    );
    this.#setState('failed');
    // Its worker ends first: two servers must never take the same request (a stuck one is
    // inside its handler, and fenced: it cannot complete, nor take another).
    await this.#handle.fail(error);
    if (this.#state === 'stopped') return;
    this.#emit('failed', error.message);
    this.#failServer = new Worker(FAILED_DEVICE_URL, {
      workerData: { ring: this.#handle.ring, stats: this.#handle.memory.stats },
      name: `failed:${this.#handle.name}`,
    });
  }
}
