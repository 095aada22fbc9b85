// Kills one device worker of a running VMM under the guest's I/O (issue 16): the guest announces
// rounds of NVMe I/O on its console (guest/init, guest.kill_rounds=N: "GUEST-KILL round K", then
// "GUEST-KILL end"); on a round, if the previous kill's restart has completed, the worker's next
// request is armed with a 'kill' fault (src/device/faults.ts: served, then the worker ends before
// completing it, so the request is one the dead worker had taken). The device's supervisor
// restarts the worker with its state; the guest's data checks say whether it noticed.
import type { RuntimeDevice } from '../../src/coordinator/runtime.js';

export interface KillReport {
  /** Kills armed, and rounds the guest announced. */
  armed: number;
  rounds: number;
  /** The supervisor's restarts when the guest said the rounds ended (-1: it never said). */
  restartsAtEnd: number;
  /** Each restart's recovery (detection to successor ready), in ms. */
  recoveriesMs: number[];
  /** Each round's length as the host saw its markers, in ms ('k' marks a round with a kill). */
  roundsMs: string[];
}

export class WorkerKiller {
  #partial = '';
  #armed = 0;
  #rounds = 0;
  #restartsAtEnd = -1;
  #roundAt = 0;
  #roundKilled = false;
  readonly #roundsMs: string[] = [];

  /** Kill `device`'s worker at most `kills` times (its supervisor and fault injection on). */
  constructor(
    readonly device: RuntimeDevice,
    readonly kills: number,
  ) {
    if (!device.supervisor || !device.handle.faultsEnabled)
      throw new Error(`${device.port}: needs supervision and fault injection (Vm faults)`);
  }

  /** Feed the guest's console text as it comes (markers may arrive in pieces). */
  feed(text: string): void {
    const lines = (this.#partial + text).split('\n');
    this.#partial = lines.pop()!;
    for (const line of lines) {
      const m = /GUEST-KILL (round \d+|end)/.exec(line);
      if (m) this.#on(m[1]!);
    }
  }

  #on(what: string): void {
    const sup = this.device.supervisor!;
    const now = performance.now();
    if (this.#roundAt)
      this.#roundsMs.push(`${(now - this.#roundAt).toFixed(0)}${this.#roundKilled ? 'k' : ''}`);
    this.#roundAt = now;
    this.#roundKilled = false;
    if (what === 'end') {
      this.#restartsAtEnd = sup.restarts;
      return;
    }
    this.#rounds++;
    // One kill at a time: arm the next only once the last one's successor serves.
    if (this.#armed < this.kills && sup.restarts === this.#armed && sup.state === 'running') {
      this.device.handle.injectFault('kill');
      this.#armed++;
      this.#roundKilled = true;
    }
  }

  report(): KillReport {
    return {
      armed: this.#armed,
      rounds: this.#rounds,
      restartsAtEnd: this.#restartsAtEnd,
      recoveriesMs: this.device.supervisor!.recoveries.map((ms) => Math.round(ms)),
      roundsMs: this.#roundsMs,
    };
  }
}
