// uvu drops an error thrown by a before/after hook (its finally block returns over it), so
// every test in the suite fails with no message. Wrap hooks with loud() to print it.
export function loud<A extends unknown[]>(
  name: string,
  fn: (...a: A) => unknown,
): (...a: A) => Promise<void> {
  return async (...a: A) => {
    try {
      await fn(...a);
    } catch (e) {
      console.error(`  ${name} hook failed: ${e instanceof Error ? e.stack : String(e)}`);
      throw e;
    }
  };
}
