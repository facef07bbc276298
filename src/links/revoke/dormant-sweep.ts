import type { Logger } from 'pino';
import { settleWithin } from '../../jobs/settle-within.js';
import type { Store } from '../../store/store.js';
import type { Revocation } from './revocation.js';

export interface DormantSweepOptions {
  /** Revoke links unused for this many days; null = no sweep. */
  readonly dormantLinkDays: number | null;
  readonly dormantSweepIntervalMs: number;
}

export interface DormantSweepDeps {
  readonly store: Pick<
    Store,
    'acquireLock' | 'extendLock' | 'releaseLock' | 'scanLinkIds' | 'getLink'
  >;
  readonly revocation: Pick<Revocation, 'revokeLink'>;
  readonly log: Logger;
  readonly now: () => number;
  readonly options: DormantSweepOptions;
}

export interface DormantSweep {
  /** Sweeps periodically (first within 30 s) when `dormantLinkDays` is set. Idempotent. */
  start(): void;
  /** Stops scheduling sweeps, cuts a sweep in progress short, and resolves when it ended or after `waitMs`. */
  stop(waitMs: number): Promise<void>;
  /** One sweep (under the store lock); resolves with the number of links revoked. */
  sweep(): Promise<number>;
}

const DORMANT_LOCK = 'revocation:dormant-sweep';
const DORMANT_LOCK_TTL_MS = 5 * 60_000;

/**
 * Revokes links nobody has used for `dormantLinkDays` (RFC 9700 §4.14.2: credentials unused for
 * long should not stay valid), one replica at a time through a store lock.
 */
export function createDormantSweep(deps: DormantSweepDeps): DormantSweep {
  const { store, revocation, log, now, options } = deps;
  let started = false;
  let stopping = false;
  let timer: NodeJS.Timeout | undefined;
  let sweeping: Promise<unknown> | undefined;

  async function sweep(): Promise<number> {
    const days = options.dormantLinkDays;
    if (days === null) return 0;
    const owner = await store.acquireLock(DORMANT_LOCK, DORMANT_LOCK_TTL_MS);
    if (!owner) return 0;
    let revoked = 0;
    try {
      const cutoffMs = now() - days * 86_400_000;
      let seen = 0;
      for await (const id of store.scanLinkIds()) {
        if (stopping) break;
        if (
          ++seen % 200 === 0 &&
          !(await store.extendLock(DORMANT_LOCK, owner, DORMANT_LOCK_TTL_MS))
        )
          break;
        const link = await store.getLink(id);
        if (!link || link.status === 'revoked') continue;
        // "Unused": no token released since, and not (re)connected since. Refreshes do not count:
        // a background refresh is not use (RFC 9700 §4.14.2 is about credentials nobody uses).
        const lastUseMs = Math.max(link.createdAtMs, link.lastUsedAtMs ?? 0);
        if (lastUseMs >= cutoffMs) continue;
        try {
          const result = await revocation.revokeLink(id, {
            revokedBy: 'admin',
            serviceId: null,
            reason: 'dormant',
            requestId: null,
          });
          if (!result.alreadyRevoked) revoked++;
        } catch (err) {
          log.warn(
            { err, link_id: id },
            'dormant sweep: could not revoke a link; next sweep retries',
          );
        }
      }
    } finally {
      await store.releaseLock(DORMANT_LOCK, owner).catch(() => undefined);
    }
    if (revoked > 0) log.info({ revoked, dormant_link_days: days }, 'dormant links revoked');
    return revoked;
  }

  function schedule(delayMs: number): void {
    if (!started || stopping || options.dormantLinkDays === null) return;
    timer = setTimeout(() => {
      sweeping = sweep()
        .catch((err: unknown) => log.warn({ err }, 'dormant sweep failed'))
        .finally(() => {
          sweeping = undefined;
          schedule(options.dormantSweepIntervalMs);
        });
    }, delayMs);
    timer.unref();
  }

  return {
    start() {
      if (started) return;
      started = true;
      stopping = false;
      schedule(Math.min(options.dormantSweepIntervalMs, 30_000));
    },
    async stop(waitMs) {
      stopping = true;
      if (timer) clearTimeout(timer);
      await settleWithin(sweeping, waitMs);
      started = false;
    },
    sweep,
  };
}
