import type { Store } from './store.js';

export interface LockWaitOptions<T> {
  /** How long to keep trying before giving up. */
  readonly waitMs: number;
  /** Pause before the next attempt (attempt counts from 0): a constant or a backoff. */
  readonly pollMs: number | ((attempt: number) => number);
  readonly now: () => number;
  /**
   * Checked before every attempt: a value means the holder's work made ours unnecessary (a peer
   * stored the result), and the wait ends with it instead of the lock.
   */
  readonly settled?: () => Promise<T | undefined>;
}

export type LockWaitOutcome<T> =
  { readonly owner: string } | { readonly settled: T } | { readonly timedOut: true };

/**
 * Takes the store lock `name` (TTL `ttlMs`), retrying while another holder has it, until the lock
 * is taken, `settled` answers, or `waitMs` has passed. Rejects only when the store does.
 */
export async function acquireLockWithin<T = never>(
  store: Pick<Store, 'acquireLock'>,
  name: string,
  ttlMs: number,
  options: LockWaitOptions<T>,
): Promise<LockWaitOutcome<T>> {
  const deadline = options.now() + options.waitMs;
  for (let attempt = 0; ; attempt++) {
    if (options.settled) {
      const value = await options.settled();
      if (value !== undefined) return { settled: value };
    }
    const owner = await store.acquireLock(name, ttlMs);
    if (owner) return { owner };
    if (options.now() > deadline) return { timedOut: true };
    const pause = typeof options.pollMs === 'number' ? options.pollMs : options.pollMs(attempt);
    await new Promise((resolve) => setTimeout(resolve, pause));
  }
}
