// An adaptive spin budget: how many polls to make before sleeping. A spin that catches the
// event grows it; one that ends in sleep shrinks it, so oversubscribed threads (more busy
// threads than cores) stop burning the time slices the other side needs.
export class SpinBudget {
  n: number;
  constructor(readonly max: number, readonly min = 16) { this.n = max; }
  hit(): void { if (this.n < this.max) this.n = Math.min(this.max, this.n * 2); }
  miss(): void { if (this.n > this.min) this.n = Math.max(this.min, this.n >> 1); }
}
