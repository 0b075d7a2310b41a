/**
 * node:test runs a test's `after` hooks in the order they were registered. A worker started
 * after `provision` would then still be running when its topics are deleted, and its consumers
 * re-create them (and keep their groups alive). `defer` collects a test's cleanups and runs
 * them last-in first-out from a single hook, each one even when an earlier one failed.
 */
import type { TestContext } from 'node:test';

type Cleanup = () => unknown;

const cleanupsOf = new WeakMap<TestContext, Cleanup[]>();

/** Runs `cleanup` when `t` ends, before every cleanup deferred earlier. */
export function defer(t: TestContext, cleanup: Cleanup): void {
  let cleanups = cleanupsOf.get(t);
  if (!cleanups) {
    const own: Cleanup[] = [];
    cleanupsOf.set(t, own);
    t.after(() => runInReverse(own));
    cleanups = own;
  }
  cleanups.push(cleanup);
}

async function runInReverse(cleanups: readonly Cleanup[]): Promise<void> {
  const failures: unknown[] = [];
  for (const cleanup of [...cleanups].reverse()) {
    try {
      await cleanup();
    } catch (err) {
      failures.push(err);
    }
  }
  if (failures.length === 1) throw failures[0];
  if (failures.length > 1) throw new AggregateError(failures, 'several cleanups failed');
}
