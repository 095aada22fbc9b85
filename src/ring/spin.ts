// How long a ring side polls before it sleeps: an adaptive budget in time, and the poll loop's
// clock check. Sleeping is expensive here: a futex wake-up costs 80-190 µs on this VM (the vCPU
// halts and the host must reschedule it), and a vCPU that halted often comes back on a farther
// core, where every cross-core hop costs twice as much for the next few milliseconds. So a side
// that expects its event soon spins for up to `max` µs (like KVM's halt polling, 200 µs) rather
// than sleep and pay for the wake-up twice.
//
// Spinning only pays while the peer runs on another core. When it does not (more busy threads
// than cores: the spinner holds the CPU its peer needs), events come late or not at all, and a
// spin that runs out burns its whole budget. Over each window of spin phases the budget counts
// how many caught their event in time. A window where fewer than 3 in 4 did drops the budget to
// `min` µs; one where they did doubles it, up to `max`. A side whose minimum cannot see whether
// longer spins would pay (a server: requests come after the producer's own think time) probes:
// every 8th window at the minimum runs at the maximum. (With 4 producers and 2 servers on 2
// CPUs, keeping the maximum while 1 in 8 spins caught, or probing at a 2 ms maximum from the
// producers, made the run 3-4× slower.) The minimum must still cover a busy peer's turnaround (a
// round trip is about a microsecond): with a token minimum, a busy ring whose budgets had dropped
// missed on every request, and both sides woke each other per request.
const WINDOW = 64;
const PROBE_EVERY = 8; // windows
const PAYS = (WINDOW * 3) / 4; // at least 3 in 4 spins caught their event in time

/** Polls between two clock reads in a spin loop (a clock read costs ~50 ns; a poll a few). */
export const POLLS_PER_CLOCK = 256;

export class SpinBudget {
  /** The current budget in µs. */
  us: number;
  readonly min: number;
  #phases = 0;
  #hits = 0;
  #windows = 0;
  /** `max` and `min` in µs (the minimum defaults to a sixteenth of the maximum); `probe`: see above. */
  constructor(
    readonly max: number,
    min?: number,
    readonly probe = true,
  ) {
    this.min = Math.min(max, Math.max(1, min ?? max / 16)); // a minimum of 0 could never double
    this.us = max;
  }

  /** The current budget in ms: what the spin loops compare performance.now() against. */
  get ms(): number {
    return this.us / 1000;
  }

  hit(): void {
    this.#hits++;
    this.#phase();
  }
  miss(): void {
    this.#phase();
  }

  #phase(): void {
    if (++this.#phases < WINDOW) return;
    const pays = this.#hits >= PAYS;
    this.#phases = this.#hits = 0;
    this.#windows++;
    this.us = pays
      ? Math.min(this.max, this.us * 2)
      : this.probe && this.#windows % PROBE_EVERY === 0
        ? this.max
        : this.min;
  }
}
