import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { acquireLockWithin } from '../../src/store/lock-wait.js';

/** A lock that is held by someone else for the first `busyAttempts` tries. */
function lockBusyFor(busyAttempts: number) {
  let attempts = 0;
  return {
    attempts: () => attempts,
    acquireLock: async (_name: string, _ttlMs: number) =>
      ++attempts > busyAttempts ? 'owner-token' : null,
  };
}

describe('acquireLockWithin', () => {
  test('when the lock frees up within the wait, then it is taken', async () => {
    const store = lockBusyFor(2);
    const outcome = await acquireLockWithin(store, 'x', 1000, {
      waitMs: 1000,
      pollMs: 1,
      now: Date.now,
    });
    assert.deepEqual(outcome, { owner: 'owner-token' });
    assert.equal(store.attempts(), 3);
  });

  test('when the holder keeps it past the wait, then the wait times out', async () => {
    const store = lockBusyFor(Infinity);
    const outcome = await acquireLockWithin(store, 'x', 1000, {
      waitMs: 30,
      pollMs: (attempt) => Math.min(2 ** attempt, 10),
      now: Date.now,
    });
    assert.deepEqual(outcome, { timedOut: true });
  });

  test('when the work is settled by a peer meanwhile, then the wait ends with its result and the lock is not taken', async () => {
    const store = lockBusyFor(Infinity);
    let checks = 0;
    const outcome = await acquireLockWithin(store, 'x', 1000, {
      waitMs: 1000,
      pollMs: 1,
      now: Date.now,
      settled: async () => (++checks === 3 ? 'peer result' : undefined),
    });
    assert.deepEqual(outcome, { settled: 'peer result' });
    assert.equal(store.attempts(), 2);
  });
});
