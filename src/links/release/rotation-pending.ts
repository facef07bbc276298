import type { Logger } from 'pino';
import { isLinkvaultError, LinkvaultError } from '../../errors.js';
import type { Vault } from '../../keys/vault.js';
import { Counter, type Metrics } from '../../metrics.js';
import type { Secret } from '../../secret.js';
import { REFRESH_UNCERTAIN_KEY } from '../../store/expiry-index-score.js';
import type { Store } from '../../store/store.js';
import type { Audit } from '../audit/audit.js';
import type { LinkRecord } from '../link.js';
import type { Revocation } from '../revoke/revocation.js';
import { withoutLinkBackoff } from './refresh-backoff.js';
import type { RotationSpool, SealedFingerprint, SpooledRotation } from './rotation-spool.js';

/**
 * Rotations pending the store: a refresh whose provider answered (and may have rotated the refresh
 * token) but whose compare-and-set write the store refused (store_unavailable).
 *
 *   hand-over   the coordinator passes the sealed new set here, with the refresh lock it holds. It is
 *               spooled durably on the node (rotation-spool.ts) before the refresh's caller is
 *               answered 503, then the write is retried with backoff for `retryForMs` (longer than a
 *               Redis restart or failover). The lock is released once the store answers again.
 *   the write   applies only over the token set whose refresh token was spent (`previous`): a
 *               revoked link stays revoked (the new tokens go to the revocation queue), newer
 *               tokens stored meanwhile win, and a link marked needs_reauth over the spent token
 *               (another replica tried it while we could not write) is made active again. A store
 *               failure never marks a link needs_reauth.
 *   waiters     while a link's rotation is retried here, its callers on this node get 503
 *               store_unavailable at once instead of refreshing with the spent token.
 *   left over   when the bound runs out (or the process stops) the entry stays in the spool: it is
 *               replayed at start, every `replayIntervalMs`, and before any refresh of that link on
 *               this node. Without a spool (it could not be written) the retry never gives up: the
 *               set in memory is then the only copy.
 */

/** `linkvault_rotation_pending_store_total{provider,outcome}` for the process's metrics. */
const counters = new WeakMap<Metrics, Counter>();
export function rotationPendingCounter(metrics: Metrics): Counter {
  let counter = counters.get(metrics);
  if (!counter) {
    counter = metrics.add(
      new Counter(
        'linkvault_rotation_pending_store_total',
        'Refreshed token sets the store refused at first, by outcome (pending, stored, revoked, superseded, absent, spooled, spool_failed)',
        ['provider', 'outcome'],
      ),
    );
    counters.set(metrics, counter);
  }
  return counter;
}

export type ApplyOutcome = 'stored' | 'revoked' | 'superseded' | 'absent';

export interface HeldLock {
  readonly name: string;
  readonly owner: string;
}

export interface PendingRotationsDeps {
  readonly store: Pick<Store, 'getLink' | 'saveLink' | 'releaseLock'>;
  readonly vault: Pick<Vault, 'forget'>;
  readonly audit: Pick<Audit, 'record'>;
  readonly revocation: Pick<Revocation, 'revokeOrphanedTokens'>;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly now: () => number;
  /** Where pending sets are spooled; null keeps them in memory only (then retried until stored). */
  readonly spool: RotationSpool | null;
  /** How long a hand-over is retried in this process before it is left to the spool. */
  readonly retryForMs: number;
  /** Pause before retry `attempt` (from 0); default 100 ms doubling to 1 s. */
  readonly retryDelayMs?: (attempt: number) => number;
}

export interface PendingRotations {
  /** True while a rotation of `linkId` is retried in this process. */
  isRetrying(linkId: string): boolean;
  /** True while a rotation of `linkId` is retried here or waits in the spool. */
  isPending(linkId: string): boolean;
  /**
   * Takes over a rotation the store refused: spools it (resolves once it is on the disk, or the
   * spool failed and that was logged) and retries the write in the background, releasing `lock`
   * once the store answered.
   */
  handOver(entry: SpooledRotation, lock: HeldLock | null, accessToken?: Secret): Promise<void>;
  /**
   * Applies the spooled rotation of `linkId` now, once (no-op resolving null when none is spooled
   * or it is being retried). Rejects store_unavailable when the store still refuses.
   */
  applySpooled(linkId: string): Promise<ApplyOutcome | null>;
  /** Loads the spool and applies every entry not being retried; never rejects. */
  replay(): Promise<void>;
  /** Rotations retried or spooled now. */
  count(): number;
  /** Periodic replay every `intervalMs` (an unref'd timer), starting with one now. */
  start(intervalMs: number): void;
  /** Stops retrying (what is pending stays in the spool) and resolves when the loops have ended. */
  stop(): Promise<void>;
}

function fingerprint(
  sealed: { readonly ct: string; readonly iv: string } | null,
): SealedFingerprint | null {
  return sealed ? { ct: sealed.ct, iv: sealed.iv } : null;
}

function sameFingerprint(a: SealedFingerprint | null, b: SealedFingerprint | null): boolean {
  return a?.ct === b?.ct && a?.iv === b?.iv;
}

function withoutKey(record: Readonly<Record<string, string>>, key: string): Record<string, string> {
  if (!(key in record)) return { ...record };
  const { [key]: _dropped, ...rest } = record;
  return rest;
}

export function createPendingRotations(deps: PendingRotationsDeps): PendingRotations {
  const { store, vault, audit, revocation, metrics, log, now, spool } = deps;
  const counter = rotationPendingCounter(metrics);
  const delay = deps.retryDelayMs ?? ((attempt: number) => Math.min(100 * 2 ** attempt, 1000));
  const retrying = new Map<string, Promise<void>>();
  const spooled = new Map<string, SpooledRotation>();
  const applying = new Map<string, Promise<ApplyOutcome | null>>();
  const wakers = new Set<() => void>();
  let stopped = false;
  let timer: NodeJS.Timeout | null = null;
  let replaying: Promise<void> | null = null;

  function sleep(ms: number): Promise<void> {
    if (stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(t);
        wakers.delete(wake);
        resolve();
      };
      const t = setTimeout(wake, ms);
      wakers.add(wake);
    });
  }

  /** One attempt: reads the link and writes the new set over the spent one. Rejects on a store failure. */
  async function apply(entry: SpooledRotation, accessToken?: Secret): Promise<ApplyOutcome> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const current = await store.getLink(entry.linkId);
      if (!current) return 'absent';
      if (sameFingerprint(fingerprint(current.tokens), fingerprint(entry.sealed))) return 'stored';
      if (current.status === 'revoked') {
        // The revocation won: the new tokens must not outlive the link. Queued (a store write: a
        // failure here keeps the entry and is retried like the write itself).
        await revocation.revokeOrphanedTokens(current, entry.sealed, null);
        return 'revoked';
      }
      if (!sameFingerprint(fingerprint(current.tokens), entry.previous)) return 'superseded';
      const at = now();
      const next: LinkRecord = {
        ...current,
        status: 'active',
        tokens: entry.sealed,
        accessTokenExpiresAtMs: entry.accessTokenExpiresAtMs,
        grantedScopes: entry.grantedScopes ?? current.grantedScopes,
        metadata: {
          ...withoutLinkBackoff(withoutKey(current.metadata, REFRESH_UNCERTAIN_KEY)),
          ...entry.capturedMetadata,
        },
        lastRefreshedAtMs: entry.refreshedAtMs,
        updatedAtMs: at,
      };
      const saved = await store.saveLink(next, current.version);
      if (!saved) continue;
      if (current.status !== 'active')
        log.warn(
          { link_id: entry.linkId, provider: entry.providerId, was: current.status },
          'a pending rotation made the link active again over its spent refresh token',
        );
      await audit
        .record('link.refreshed', {
          link_id: saved.id,
          tenant_id: saved.tenantId,
          provider_id: saved.providerId,
          rotated: entry.rotated,
          stored_after_store_failure: true,
          ...(accessToken ? { access_token: accessToken } : {}),
        })
        .catch((err: unknown) =>
          log.error({ link_id: saved.id, err }, 'audit of a refresh failed'),
        );
      return 'stored';
    }
    throw new LinkvaultError('conflict', { detail: 'The link kept changing; retry' });
  }

  async function settled(entry: SpooledRotation, outcome: ApplyOutcome): Promise<void> {
    counter.inc({ provider: entry.providerId, outcome });
    log.info(
      { link_id: entry.linkId, provider: entry.providerId, outcome },
      'rotation pending store: settled',
    );
    if (outcome !== 'stored') vault.forget(entry.sealed);
    spooled.delete(entry.linkId);
    if (spool)
      await spool
        .remove(entry.linkId)
        .catch((err: unknown) =>
          log.warn(
            { link_id: entry.linkId, err },
            'could not remove a settled rotation from the spool',
          ),
        );
  }

  async function retryLoop(
    entry: SpooledRotation,
    lock: HeldLock | null,
    onDisk: boolean,
    accessToken?: Secret,
  ): Promise<void> {
    const deadline = now() + deps.retryForMs;
    for (let attempt = 0; ; attempt++) {
      await sleep(delay(attempt));
      if (stopped) break;
      try {
        await settled(entry, await apply(entry, accessToken));
        if (lock)
          await store
            .releaseLock(lock.name, lock.owner)
            .catch((err: unknown) =>
              log.warn({ link_id: entry.linkId, err }, 'refresh lock release failed'),
            );
        return;
      } catch (err) {
        if (!isLinkvaultError(err, 'store_unavailable') && !isLinkvaultError(err, 'conflict'))
          log.warn({ link_id: entry.linkId, err }, 'rotation pending store: retry failed');
      }
      // Give up in memory only when the spool holds the set: otherwise this is the only copy.
      if (onDisk && now() >= deadline) break;
    }
    counter.inc({ provider: entry.providerId, outcome: 'spooled' });
    log.error(
      {
        link_id: entry.linkId,
        provider: entry.providerId,
        spool_dir: spool?.dir ?? null,
        on_disk: onDisk,
      },
      stopped
        ? 'rotation pending store: stopping; the new token set stays in the spool'
        : 'rotation pending store: the store still refuses the write; the new token set stays in the spool and is replayed',
    );
  }

  async function handOver(
    entry: SpooledRotation,
    lock: HeldLock | null,
    accessToken?: Secret,
  ): Promise<void> {
    counter.inc({ provider: entry.providerId, outcome: 'pending' });
    let onDisk = false;
    if (spool) {
      try {
        await spool.write(entry);
        onDisk = true;
      } catch (err) {
        counter.inc({ provider: entry.providerId, outcome: 'spool_failed' });
        log.error(
          { link_id: entry.linkId, provider: entry.providerId, spool_dir: spool.dir, err },
          'rotation pending store: could not spool the new token set; retrying from memory only',
        );
      }
    }
    spooled.set(entry.linkId, entry);
    log.error(
      {
        link_id: entry.linkId,
        provider: entry.providerId,
        rotated: entry.rotated,
        spooled: onDisk,
        retry_for_ms: deps.retryForMs,
      },
      'rotation pending store: the store refused a refreshed token set; retrying the write',
    );
    const loop = retryLoop(entry, lock, onDisk, accessToken).finally(() => {
      if (retrying.get(entry.linkId) === loop) retrying.delete(entry.linkId);
    });
    retrying.set(entry.linkId, loop);
  }

  function applySpooled(linkId: string): Promise<ApplyOutcome | null> {
    if (retrying.has(linkId)) return Promise.resolve(null);
    const entry = spooled.get(linkId);
    if (!entry) return Promise.resolve(null);
    const existing = applying.get(linkId);
    if (existing) return existing;
    const p = (async () => {
      const outcome = await apply(entry);
      // A newer hand-over of this link may have replaced the entry meanwhile.
      if (spooled.get(linkId) === entry) await settled(entry, outcome);
      return outcome;
    })();
    applying.set(linkId, p);
    const clear = () => {
      if (applying.get(linkId) === p) applying.delete(linkId);
    };
    p.then(clear, clear);
    return p;
  }

  async function replayNow(): Promise<void> {
    if (spool) {
      try {
        for (const entry of await spool.list())
          if (!spooled.has(entry.linkId) && !retrying.has(entry.linkId))
            spooled.set(entry.linkId, entry);
      } catch (err) {
        log.error({ spool_dir: spool.dir, err }, 'rotation spool could not be read');
      }
    }
    for (const linkId of [...spooled.keys()]) {
      if (stopped) return;
      try {
        await applySpooled(linkId);
      } catch (err) {
        log.warn(
          { link_id: linkId, err },
          'rotation pending store: replay failed; kept in the spool',
        );
      }
    }
  }

  function replay(): Promise<void> {
    replaying ??= replayNow().finally(() => {
      replaying = null;
    });
    return replaying;
  }

  return {
    isRetrying: (linkId) => retrying.has(linkId),
    isPending: (linkId) => retrying.has(linkId) || spooled.has(linkId),
    handOver,
    applySpooled,
    replay,
    count: () => new Set([...retrying.keys(), ...spooled.keys()]).size,
    start(intervalMs) {
      stopped = false;
      void replay();
      const tick = () => {
        timer = setTimeout(() => {
          void replay().finally(() => {
            if (!stopped) tick();
          });
        }, intervalMs);
        timer.unref();
      };
      tick();
    },
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      timer = null;
      for (const wake of [...wakers]) wake();
      await Promise.allSettled([...retrying.values(), ...(replaying ? [replaying] : [])]);
    },
  };
}
