// The one polling helper of the tests: wait until a condition holds, or fail naming what was
// awaited. Conditions may be async (a query to Prometheus, a file appearing).

/** Resolves once `ok()` is true; rejects after `ms` with "timed out after N ms waiting for <what>". */
export async function until(
  what: string,
  ok: () => boolean | Promise<boolean>,
  ms = 10_000,
  everyMs = 2,
): Promise<void> {
  const end = performance.now() + ms;
  while (!(await ok())) {
    if (performance.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
