// An adaptive spin budget: how many polls to make before sleeping. Over each window of spin
// phases it counts how many caught their event. When spinning rarely pays (an idle device, or
// more busy threads than cores, where the spinner takes the time slice its peer needs) the
// budget drops to a minimum; when it pays, it stays at the maximum. A window at the maximum is
// tried now and then, so a budget at the minimum can find out that spinning pays again.
//
// The minimum is a sixteenth of the maximum, not a token few polls: it must still cover a busy
// peer's turnaround (a ring round trip is under a microsecond, a few hundred polls). With a
// minimum below that, a busy ring whose budgets had dropped (after a burst of misses: the peer
// descheduled, yielding, or waking from a sleep) missed on every request, so the window could not
// see that spinning pays and both sides slept and woke each other per request until a probe
// window happened to catch them both awake.
const WINDOW = 64;
const PROBE_EVERY = 8; // windows
const PAYS = WINDOW / 8; // at least 1 in 8 spins caught its event

export class SpinBudget {
  n: number;
  readonly min: number;
  #phases = 0;
  #hits = 0;
  #windows = 0;
  constructor(readonly max: number, min?: number) {
    this.min = Math.min(max, min ?? Math.max(16, max >> 4));
    this.n = max;
  }

  hit(): void { this.#hits++; this.#phase(); }
  miss(): void { this.#phase(); }

  #phase(): void {
    if (++this.#phases < WINDOW) return;
    const pays = this.#hits >= PAYS;
    this.#phases = this.#hits = 0;
    this.#windows++;
    this.n = pays || this.#windows % PROBE_EVERY === 0 ? this.max : this.min;
  }
}
