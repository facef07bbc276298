import type { Logger } from 'pino';
import { isLinkvaultError, LinkvaultError } from '../../errors.js';
import type { Vault } from '../../keys/vault.js';
import type { Metrics } from '../../metrics.js';
import type { OAuthTokenClient, TokenSet } from '../../oauth/oauth-client.js';
import { REFRESH_UNCERTAIN_KEY } from '../../store/expiry-index-score.js';
import { acquireLockWithin } from '../../store/lock-wait.js';
import type { Store } from '../../store/store.js';
import type { LinkRecord } from '../link.js';
import type { SealedRecord } from '../../keys/sealed-record.js';
import type { Audit } from '../audit/audit.js';
import type { Revocation } from '../revoke/revocation.js';
import { openTokenSet, sealTokenSet } from '../sealing/token-vault.js';
import type { PendingRotations } from './rotation-pending.js';
import {
  createProviderPauses,
  linkBackoffAfterFailure,
  PROVIDER_PAUSE_MAX_SECONDS,
  linkBackoffRemainingMs,
  retryAfterSecondsFor,
  withoutLinkBackoff,
  REFRESH_FAILURES_KEY,
} from './refresh-backoff.js';

/**
 * Refresh coordination: at most one refresh per link at a time, across every replica, and no
 * replica ever overwrites newer tokens (docs/api.md, "Token release and refresh").
 *
 *   inside a process  a Map of in-flight refreshes: concurrent callers for one link share one result
 *   across replicas   a store lock `refresh:<linkId>` (owner token + TTL). A replica that does not get
 *                     it does not refresh: it polls and re-reads the stored link until the holder's
 *                     result is there
 *   fencing           the write is saveLink(expectedVersion = the version read under the lock). A
 *                     holder whose lock expired (paused, slow) fails that CAS and re-reads; it never
 *                     overwrites what a later holder stored
 *   durability        a rotated refresh token is sealed and stored (CAS succeeded) before any caller
 *                     gets the new access token (RFC 9700 §4.14.2: a rotated token is the only live one)
 *   back-off          after a failed refresh the provider is not asked again before its Retry-After
 *                     (per provider) or the link's exponential back-off (refresh-backoff.ts), on any
 *                     replica; callers meanwhile get 503 with the remaining time
 *   forced refresh    a token this service refreshed less than FORCED_REFRESH_INTERVAL_MS ago is
 *                     served instead of being refreshed again
 *   store failure     when the store refuses the write of a new token set (the provider may have
 *                     rotated: the old refresh token is spent), the sealed set is handed to
 *                     rotation-pending.ts (spooled on the node, the CAS retried, the lock released
 *                     once the store answers); the caller gets 503 store_unavailable, and callers
 *                     of that link on this node get the same at once until it is stored
 */

/**
 * Metadata key marking a refresh whose answer was lost after the provider may have rotated the
 * refresh token. Defined by the store's expiry index, which files a marked link as due at once.
 */
export { REFRESH_UNCERTAIN_KEY } from '../../store/expiry-index-score.js';

export interface FreshTokens {
  readonly link: LinkRecord;
  readonly tokens: TokenSet;
}

export interface RefreshCriteria {
  /** The access token must stay valid this long after it is returned. */
  readonly minValidityMs: number;
  /** Refresh even when the token is fresh (the caller saw it rejected). */
  readonly force: boolean;
  readonly requestId: string | null;
}

export interface RefreshCoordinatorDeps {
  readonly store: Pick<
    Store,
    | 'getLink'
    | 'saveLink'
    | 'acquireLock'
    | 'extendLock'
    | 'releaseLock'
    | 'getJobStatus'
    | 'putJobStatus'
  >;
  readonly vault: Vault;
  readonly oauth: OAuthTokenClient;
  readonly audit: Pick<Audit, 'record'>;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly now: () => number;
  /** TTL of the refresh lock; must exceed one provider call (config.refreshLockTtlMs). */
  readonly lockTtlMs: number;
  /** How long a caller waits for another replica's refresh before giving up (default lockTtlMs + 5 s). */
  readonly waitForPeerMs?: number;
  /**
   * Non-secret members of a refresh response to keep in the link's metadata (the catalogue's
   * capture_metadata, e.g. Pipedrive's api_domain that can change on every refresh).
   */
  readonly captureMetadata: (
    providerId: string,
    extra: Readonly<Record<string, unknown>>,
  ) => Record<string, string>;
  /**
   * Where the tokens of a refresh that lost to a revocation go: the durable revocation queue,
   * retried with backoff until the provider confirms.
   */
  readonly revocation: Pick<Revocation, 'revokeOrphanedTokens'>;
  /** Where a new token set the store refused goes (rotation-pending.ts). */
  readonly rotations: PendingRotations;
}

export interface RefreshCoordinator {
  /**
   * Tokens that satisfy `criteria`, refreshing when due. Rejects link_revoked, reauth_required,
   * refresh_not_possible, provider_unavailable (Retry-After; unless the current access token is
   * still valid and the refresh was not forced, which is then served), provider_misconfigured,
   * provider_error, store_unavailable, key_service_unavailable.
   */
  ensureFresh(link: LinkRecord, tokens: TokenSet, criteria: RefreshCriteria): Promise<FreshTokens>;
  /**
   * Background: refreshes `linkId` when its token expires within `leadMs`, only if no one else is
   * refreshing it (never waits for a peer). Resolves the outcome; never rejects for provider trouble.
   */
  refreshAhead(
    linkId: string,
    leadMs: number,
  ): Promise<'refreshed' | 'fresh' | 'busy' | 'skipped' | 'failed'>;
  /** Number of refreshes in flight in this process. */
  inFlight(): number;
  /** Rotations waiting for the store in this process (retried or spooled). */
  pendingRotations(): number;
}

/**
 * A token issued less than this long ago is not refreshed again (unless forced): a refresh cannot
 * return a longer-lived token than the one just issued, and asking on every call would burn the
 * provider's limits (Zoho: 10 access tokens per refresh token per 10 minutes).
 */
export const MIN_REFRESH_INTERVAL_MS = 60_000;

/**
 * force_refresh asks for a token other than the one its caller saw rejected. A token this service
 * refreshed less than this long ago is the answer to every such caller (they typically all saw the
 * previous token fail at once): it is served, not refreshed again, so N forced calls cost at most
 * one provider refresh per interval.
 */
export const FORCED_REFRESH_INTERVAL_MS = 30_000;

/** Retry-After of the 503 answered while a refreshed token set waits for the store. */
export const PENDING_RETRY_AFTER_SECONDS = 2;

/**
 * True when `link`'s access token expires within `minValidityMs` and refreshing can help: a token
 * without expiry never is; a still-valid token issued (connected or refreshed) within
 * MIN_REFRESH_INTERVAL_MS is not — its caller gets it with less validity than asked for.
 */
export function refreshDue(
  link: Pick<LinkRecord, 'accessTokenExpiresAtMs' | 'lastRefreshedAtMs' | 'createdAtMs'>,
  nowMs: number,
  minValidityMs: number,
): boolean {
  const expiresAtMs = link.accessTokenExpiresAtMs;
  if (expiresAtMs === null || expiresAtMs - nowMs >= minValidityMs) return false;
  if (
    expiresAtMs > nowMs &&
    nowMs - (link.lastRefreshedAtMs ?? link.createdAtMs) < MIN_REFRESH_INTERVAL_MS
  )
    return false;
  return true;
}

function sameTokens(a: LinkRecord, b: LinkRecord): boolean {
  return a.tokens?.ct === b.tokens?.ct && a.tokens?.iv === b.tokens?.iv;
}

export function createRefreshCoordinator(deps: RefreshCoordinatorDeps): RefreshCoordinator {
  const { store, vault, oauth, audit, metrics, log, now, lockTtlMs, rotations } = deps;
  const waitForPeerMs = deps.waitForPeerMs ?? lockTtlMs + 5000;
  const inflight = new Map<string, Promise<FreshTokens>>();
  const lockName = (linkId: string) => `refresh:${linkId}`;
  const pauses = createProviderPauses({ store, now });

  // ---- entry points ----

  async function ensureFresh(
    link: LinkRecord,
    tokens: TokenSet,
    criteria: RefreshCriteria,
  ): Promise<FreshTokens> {
    const effective = honourForce(link, criteria);
    if (!effective.force && !refreshDue(link, now(), effective.minValidityMs))
      return { link, tokens };
    if (!tokens.refreshToken) return withoutRefreshToken(link, tokens, effective);
    if (rotations.isPending(link.id)) {
      const current = await settlePendingRotation(link.id);
      return ensureFresh(current, await openLink(current), criteria);
    }
    const served = await checkBackoff(link, tokens, effective);
    if (served) return served;
    return singleFlight(link.id, () => refreshAcrossReplicas(link, effective));
  }

  /**
   * A rotation of this link waits for the store on this node: the stored refresh token is spent.
   * While it is retried, callers fail fast (503 store_unavailable); a spooled one is applied first.
   * Resolves the stored link once the rotation is settled.
   */
  async function settlePendingRotation(linkId: string): Promise<LinkRecord> {
    if (rotations.isRetrying(linkId)) throw pendingStoreError();
    await rotations.applySpooled(linkId);
    if (rotations.isPending(linkId)) throw pendingStoreError();
    return readLink(linkId);
  }

  function pendingStoreError(): LinkvaultError {
    return new LinkvaultError('store_unavailable', {
      detail: 'A refreshed token set of this link is waiting for the store; retry',
      retryAfterSeconds: PENDING_RETRY_AFTER_SECONDS,
    });
  }

  /** A forced refresh of a token refreshed moments ago is answered with that token (FORCED_REFRESH_INTERVAL_MS). */
  function honourForce(link: LinkRecord, criteria: RefreshCriteria): RefreshCriteria {
    if (!criteria.force || !recentlyRefreshed(link)) return criteria;
    return { ...criteria, force: false };
  }

  function recentlyRefreshed(link: LinkRecord): boolean {
    return (
      link.lastRefreshedAtMs !== null &&
      now() - link.lastRefreshedAtMs < FORCED_REFRESH_INTERVAL_MS &&
      stillValid(link)
    );
  }

  /** Milliseconds before the provider may be asked to refresh `link` (the later of both back-offs). */
  async function backoffRemainingMs(link: LinkRecord): Promise<number> {
    const own = linkBackoffRemainingMs(link, now());
    const provider = await pauses.remainingMs(link.providerId);
    return Math.max(own, provider);
  }

  /**
   * During a back-off the provider is not asked: a still-valid token is served (unless forced),
   * otherwise 503 with the remaining time. Resolves when a refresh may be tried.
   */
  async function checkBackoff(
    link: LinkRecord,
    tokens: TokenSet,
    criteria: RefreshCriteria,
  ): Promise<FreshTokens | undefined> {
    const remainingMs = await backoffRemainingMs(link);
    if (remainingMs <= 0) return undefined;
    if (!criteria.force && stillValid(link)) return { link, tokens };
    metrics.refreshes.inc({ provider: link.providerId, outcome: 'backoff' });
    // The same answer as the failure that started the back-off: whether the provider was asked is
    // not the caller's concern, only when to come back.
    throw new LinkvaultError('provider_unavailable', {
      retryAfterSeconds: retryAfterSecondsFor(remainingMs),
    });
  }

  async function refreshAhead(
    linkId: string,
    leadMs: number,
  ): Promise<'refreshed' | 'fresh' | 'busy' | 'skipped' | 'failed'> {
    if (inflight.has(linkId) || rotations.isRetrying(linkId)) return 'busy';
    if (rotations.isPending(linkId)) {
      const outcome = await rotations.applySpooled(linkId).catch((err: unknown) => {
        log.warn({ link_id: linkId, err }, 'a spooled rotation could not be stored yet');
        return 'failed' as const;
      });
      return outcome === 'stored' ? 'refreshed' : outcome === 'failed' ? 'failed' : 'skipped';
    }
    const owner = await store.acquireLock(lockName(linkId), lockTtlMs);
    if (!owner) return 'busy';
    let before: LinkRecord | null = null;
    let backedOff = false;
    const run = (async (): Promise<FreshTokens> => {
      try {
        const link = await readLink(linkId);
        before = link;
        if ((await backoffRemainingMs(link)) > 0) {
          backedOff = true;
          throw new LinkvaultError('provider_unavailable');
        }
        // A lost refresh answer is retried promptly: providers with a reuse grace period accept
        // the old refresh token again only for a short while.
        const criteria: RefreshCriteria = {
          minValidityMs: leadMs,
          force: REFRESH_UNCERTAIN_KEY in link.metadata,
          requestId: null,
        };
        return await refreshUnderLock(link, link, owner, criteria);
      } finally {
        // A rotation handed over keeps the lock until the store has it (rotation-pending.ts).
        if (!rotations.isRetrying(linkId))
          await store
            .releaseLock(lockName(linkId), owner)
            .catch((err: unknown) =>
              log.warn({ link_id: linkId, err }, 'refresh lock release failed'),
            );
      }
    })();
    inflight.set(linkId, run);
    try {
      const result = await run;
      return before !== null && !sameTokens(result.link, before) ? 'refreshed' : 'fresh';
    } catch (err) {
      if (backedOff) return 'busy';
      if (
        isLinkvaultError(err, 'link_revoked') ||
        isLinkvaultError(err, 'link_not_found') ||
        isLinkvaultError(err, 'reauth_required') ||
        isLinkvaultError(err, 'refresh_not_possible')
      )
        return 'skipped';
      log.warn({ link_id: linkId, err }, 'background refresh failed');
      return 'failed';
    } finally {
      if (inflight.get(linkId) === run) inflight.delete(linkId);
    }
  }

  function singleFlight(linkId: string, run: () => Promise<FreshTokens>): Promise<FreshTokens> {
    const existing = inflight.get(linkId);
    if (existing) return existing;
    const p = run();
    inflight.set(linkId, p);
    const clear = () => {
      if (inflight.get(linkId) === p) inflight.delete(linkId);
    };
    p.then(clear, clear);
    return p;
  }

  // ---- the steps ----

  /** No refresh token: serve a token that is still valid; an expired one means the user must reconnect. */
  async function withoutRefreshToken(
    link: LinkRecord,
    tokens: TokenSet,
    criteria: RefreshCriteria,
  ): Promise<FreshTokens> {
    if (criteria.force)
      throw new LinkvaultError('refresh_not_possible', {
        detail: 'The provider issued no refresh token for this link',
      });
    if (link.accessTokenExpiresAtMs !== null && link.accessTokenExpiresAtMs <= now()) {
      const newer = await markNeedsReauth(link, 'expired_without_refresh_token', criteria);
      return { link: newer, tokens: await openLink(newer) };
    }
    return { link, tokens };
  }

  /**
   * Takes the store lock and refreshes, or — when a peer holds it — waits for the peer's result by
   * re-reading the stored link. A waiter retries the lock on every poll, so a holder that died or
   * gave up hands over after its release or TTL.
   */
  async function refreshAcrossReplicas(
    observed: LinkRecord,
    criteria: RefreshCriteria,
  ): Promise<FreshTokens> {
    const lock = await acquireLockWithin(store, lockName(observed.id), lockTtlMs, {
      waitMs: waitForPeerMs,
      pollMs: (attempt) => Math.min(10 * 2 ** attempt, 200),
      now,
      settled: async () => {
        const current = await readLink(observed.id);
        return satisfied(current, observed, criteria) ? current : undefined;
      },
    });
    if ('settled' in lock) return { link: lock.settled, tokens: await openLink(lock.settled) };
    if ('owner' in lock) {
      try {
        const current = await readLink(observed.id);
        return await refreshUnderLock(current, observed, lock.owner, criteria);
      } finally {
        if (!rotations.isRetrying(observed.id))
          await store
            .releaseLock(lockName(observed.id), lock.owner)
            .catch((err: unknown) =>
              log.warn({ link_id: observed.id, err }, 'refresh lock release failed'),
            );
      }
    }
    metrics.refreshes.inc({ provider: observed.providerId, outcome: 'peer_timeout' });
    const current = await readLink(observed.id);
    if (!criteria.force && stillValid(current))
      return { link: current, tokens: await openLink(current) };
    throw new LinkvaultError('provider_unavailable', {
      detail: 'A refresh of this link is taking too long; retry',
      retryAfterSeconds: 1,
    });
  }

  /**
   * Under the lock: re-check (a peer may have refreshed between our read and our lock), spend
   * the refresh token once, store the result with CAS, and only then hand it out.
   */
  async function refreshUnderLock(
    link: LinkRecord,
    observed: LinkRecord,
    owner: string,
    criteria: RefreshCriteria,
  ): Promise<FreshTokens> {
    if (satisfied(link, observed, criteria)) return { link, tokens: await openLink(link) };
    // Never spend the stored refresh token while a newer one waits for the store on this node.
    if (rotations.isPending(link.id)) throw pendingStoreError();
    const tokens = await openLink(link);
    if (!tokens.refreshToken) return withoutRefreshToken(link, tokens, criteria);
    // Re-checked under the lock: a peer may have failed (and recorded a back-off) since our read.
    const served = await checkBackoff(link, tokens, criteria);
    if (served) return served;
    // Narrow the window in which a paused holder could spend a token a later holder already spent:
    // check we still hold the lock right before the provider call. The CAS below is the real fence.
    if (!(await store.extendLock(lockName(link.id), owner, lockTtlMs))) {
      metrics.refreshes.inc({ provider: link.providerId, outcome: 'lock_lost' });
      const current = await readLink(link.id);
      if (!sameTokens(current, link) || stillValid(current))
        return { link: current, tokens: await openLink(current) };
      throw new LinkvaultError('provider_unavailable', {
        detail: 'The refresh lock was lost; retry',
        retryAfterSeconds: 1,
      });
    }
    let fresh: TokenSet;
    try {
      fresh = await oauth.refresh({
        providerId: link.providerId,
        endpointVariables: link.endpointVariables,
        refreshToken: tokens.refreshToken,
      });
    } catch (err) {
      return onRefreshFailure(link, tokens, err, criteria);
    }
    metrics.refreshes.inc({ provider: link.providerId, outcome: 'ok' });
    return storeRefreshed(link, tokens, fresh, criteria, owner);
  }

  /** Seals and CAS-writes the new token set; on a lost CAS, reconciles with what is stored. */
  async function storeRefreshed(
    link: LinkRecord,
    old: TokenSet,
    fresh: TokenSet,
    criteria: RefreshCriteria,
    owner: string,
  ): Promise<FreshTokens> {
    const merged: TokenSet = {
      accessToken: fresh.accessToken,
      // Providers that do not rotate answer without a refresh token: keep ours (RFC 6749 §6).
      refreshToken: fresh.refreshToken ?? old.refreshToken,
      idToken: fresh.idToken ?? old.idToken,
      tokenType: fresh.tokenType,
      expiresAtMs: fresh.expiresAtMs,
      scopes: fresh.scopes ?? old.scopes,
      extra: fresh.extra,
    };
    const rotated =
      fresh.refreshToken !== null && fresh.refreshToken.reveal() !== old.refreshToken?.reveal();
    let sealed;
    try {
      sealed = await sealTokenSet(vault, link, merged, link.tokens);
    } catch (err) {
      if (rotated)
        log.error(
          { link_id: link.id, provider: link.providerId, err },
          'a rotated refresh token could not be sealed; the link may need the user to reconnect',
        );
      throw err;
    }
    const refreshedAtMs = now();
    const captured = captureFrom(link, fresh);
    /**
     * The store refused the write (or the read after a lost CAS): the new set must not be dropped.
     * Handed over (spooled, retried, lock kept until stored); the caller gets 503, never a 200
     * before the set is stored.
     */
    const handOver = async (err: unknown): Promise<never> => {
      await rotations.handOver(
        {
          linkId: link.id,
          tenantId: link.tenantId,
          providerId: link.providerId,
          previous: link.tokens ? { ct: link.tokens.ct, iv: link.tokens.iv } : null,
          sealed,
          accessTokenExpiresAtMs: merged.expiresAtMs,
          grantedScopes: fresh.scopes ?? null,
          capturedMetadata: captured,
          rotated,
          refreshedAtMs,
          spooledAtMs: now(),
        },
        { name: lockName(link.id), owner },
        merged.accessToken,
      );
      metrics.refreshes.inc({ provider: link.providerId, outcome: 'pending_store' });
      throw new LinkvaultError('store_unavailable', {
        cause: err,
        detail: 'The refreshed tokens could not be stored yet; retry',
        retryAfterSeconds: PENDING_RETRY_AFTER_SECONDS,
      });
    };
    let base = link;
    for (let attempt = 0; attempt < 3; attempt++) {
      const metadata = {
        ...withoutLinkBackoff(withoutKey(base.metadata, REFRESH_UNCERTAIN_KEY)),
        ...captured,
      };
      const next: LinkRecord = {
        ...base,
        status: 'active',
        tokens: sealed,
        accessTokenExpiresAtMs: merged.expiresAtMs,
        grantedScopes: fresh.scopes ?? base.grantedScopes,
        metadata,
        lastRefreshedAtMs: refreshedAtMs,
        updatedAtMs: refreshedAtMs,
      };
      let saved: LinkRecord | null;
      try {
        saved = await store.saveLink(next, base.version);
      } catch (err) {
        if (!isLinkvaultError(err, 'store_unavailable')) throw err;
        return handOver(err);
      }
      if (saved) {
        await audit
          .record(
            'link.refreshed',
            {
              link_id: saved.id,
              tenant_id: saved.tenantId,
              user_id: saved.userId,
              provider_id: saved.providerId,
              rotated,
              // After failed refreshes (the link's back-off was set): the lifecycle webhook
              // link.recovered is this record.
              ...(base.metadata[REFRESH_FAILURES_KEY] !== undefined ? { recovered: true } : {}),
              access_token: merged.accessToken,
            },
            criteria.requestId,
          )
          .catch((err: unknown) =>
            log.error({ link_id: saved.id, err }, 'audit of a refresh failed'),
          );
        return { link: saved, tokens: merged };
      }
      // Lost the CAS: someone wrote the link after we read it.
      let current: LinkRecord | null;
      try {
        current = await store.getLink(link.id);
      } catch (err) {
        if (!isLinkvaultError(err, 'store_unavailable')) throw err;
        return handOver(err);
      }
      if (!current || current.status === 'revoked') {
        await revokeOrphan(link, sealed, fresh, merged, criteria);
        throw current ? new LinkvaultError('link_revoked') : new LinkvaultError('link_not_found');
      }
      if (!sameTokens(current, link)) {
        // Newer tokens are stored (a peer whose lock outlived ours, or a reconnect): they win, ours
        // are dropped. Not revoked at the provider: some providers revoke the whole grant on any
        // revocation (RFC 7009 §2.1 allows it), which would kill the stored tokens too.
        metrics.refreshes.inc({ provider: link.providerId, outcome: 'lost_race' });
        vault.forget(sealed);
        checkUsable(current);
        return { link: current, tokens: await openLink(current) };
      }
      // Only non-token fields changed (a marker, a status, metadata): the token we spent is the one
      // stored, so ours must win or the link is dead. Rebase onto the current record and retry.
      base = current;
    }
    throw new LinkvaultError('conflict', {
      detail: 'The link kept changing during a refresh; retry',
    });
  }

  /**
   * Metadata from the refresh answer. Never fails the refresh: the new tokens are already issued
   * (and the old refresh token maybe spent), so unacceptable metadata keeps the old values.
   */
  function captureFrom(link: LinkRecord, fresh: TokenSet): Record<string, string> {
    try {
      return deps.captureMetadata(link.providerId, fresh.extra);
    } catch (err) {
      log.warn(
        { link_id: link.id, provider: link.providerId, err },
        'refresh answer metadata refused; keeping the previous metadata',
      );
      return {};
    }
  }

  /** Classifies a failed refresh (oauth-client.ts) and decides what callers get. */
  async function onRefreshFailure(
    link: LinkRecord,
    tokens: TokenSet,
    err: unknown,
    criteria: RefreshCriteria,
  ): Promise<FreshTokens> {
    // The port promises classified errors; anything else is treated as an answer that may have been lost.
    const failure = isLinkvaultError(err)
      ? err
      : new LinkvaultError('provider_unavailable', {
          cause: err,
          retryAfterSeconds: 1,
          extra: { maybe_delivered: true },
        });
    const provider = link.providerId;
    switch (failure.code) {
      case 'reauth_required': {
        metrics.refreshes.inc({ provider, outcome: 'invalid_grant' });
        const reason = link.metadata[REFRESH_UNCERTAIN_KEY]
          ? 'refresh_token_rejected_after_lost_answer'
          : 'refresh_token_rejected';
        const newer = await markNeedsReauth(link, reason, criteria);
        return { link: newer, tokens: await openLink(newer) };
      }
      case 'provider_misconfigured':
        metrics.refreshes.inc({ provider, outcome: 'misconfigured' });
        log.error(
          { link_id: link.id, provider, err: failure },
          'the provider rejected our client configuration during a refresh',
        );
        throw new LinkvaultError('provider_misconfigured', {
          cause: failure,
          retryAfterSeconds: 60,
        });
      case 'provider_unavailable':
      case 'invalid_token_response':
      case 'provider_error': {
        // A 2xx we could not accept, or an answer lost after sending: the provider may have rotated.
        const maybeRotated =
          failure.code === 'invalid_token_response' || failure.extra?.maybe_delivered === true;
        metrics.refreshes.inc({
          provider,
          outcome: maybeRotated
            ? 'maybe_delivered'
            : failure.code === 'provider_error'
              ? 'provider_error'
              : 'unavailable',
        });
        let waitMs = 1000;
        if (
          failure.code === 'provider_unavailable' &&
          !maybeRotated &&
          failure.retryAfterSeconds !== undefined
        ) {
          // 429, or 503 with Retry-After: the provider as a whole said "not now".
          waitMs = await pauseProvider(provider, failure.retryAfterSeconds);
        } else if (failure.code !== 'provider_error') {
          const recorded = await recordLinkFailure(link, maybeRotated, failure.retryAfterSeconds);
          if ('newer' in recorded)
            return { link: recorded.newer, tokens: await openLink(recorded.newer) };
          waitMs = recorded.waitMs;
        }
        // Degrade, do not fail: an access token that is still valid is served (not for force_refresh,
        // whose caller has just seen this token rejected).
        if (!criteria.force && stillValid(link)) return { link, tokens };
        if (failure.code === 'provider_unavailable') {
          throw new LinkvaultError('provider_unavailable', {
            cause: failure,
            retryAfterSeconds: retryAfterSecondsFor(waitMs),
          });
        }
        throw failure;
      }
      default:
        throw failure;
    }
  }

  /**
   * Remembers the provider's pause for every replica; returns how long it lasts. A pause that
   * cannot be stored is logged: the caller's answer is the same, only the next caller may ask again.
   */
  async function pauseProvider(providerId: string, retryAfterSeconds: number): Promise<number> {
    try {
      await pauses.pause(providerId, retryAfterSeconds);
    } catch (err) {
      log.warn({ provider: providerId, err }, 'could not store the provider refresh pause');
    }
    const remainingMs = await pauses
      .remainingMs(providerId)
      .catch(() => Math.min(retryAfterSeconds, PROVIDER_PAUSE_MAX_SECONDS) * 1000);
    return Math.max(1000, remainingMs);
  }

  /**
   * CAS-writes the link's back-off (and, when the answer may have been lost after the provider
   * rotated, the "refresh answer lost" marker, keeping the old refresh token: the only one we
   * have). Resolves the back-off's length, or the newer stored link when the CAS loses to newer tokens.
   */
  async function recordLinkFailure(
    link: LinkRecord,
    maybeRotated: boolean,
    retryAfterSeconds: number | undefined,
  ): Promise<{ waitMs: number } | { newer: LinkRecord }> {
    if (maybeRotated)
      log.warn(
        { link_id: link.id, provider: link.providerId },
        'refresh answer lost after sending; the provider may have rotated the refresh token',
      );
    let base = link;
    let waitMs = 1000;
    for (let attempt = 0; attempt < 3; attempt++) {
      const at = now();
      const backoff = linkBackoffAfterFailure(base, at, retryAfterSeconds);
      waitMs = backoff.waitMs;
      const write = store.saveLink(
        {
          ...base,
          metadata: {
            ...base.metadata,
            ...backoff.entries,
            ...(maybeRotated ? { [REFRESH_UNCERTAIN_KEY]: new Date(at).toISOString() } : {}),
          },
          updatedAtMs: at,
        },
        base.version,
      );
      // The lost-answer marker must be stored (or the caller told it failed); a back-off alone is
      // best effort: without it the next caller merely asks the provider again.
      const saved = maybeRotated
        ? await write
        : await write.catch((err: unknown) => {
            log.warn({ link_id: link.id, err }, 'could not store the refresh back-off');
            return 'unstored' as const;
          });
      if (saved === 'unstored') return { waitMs };
      if (saved) {
        // The first failure of a streak is a lifecycle event (webhook link.refresh_failed, not
        // permanent); later ones in the same streak are not repeated.
        if (base.metadata[REFRESH_FAILURES_KEY] === undefined)
          await audit
            .record(
              'link.refresh_failed',
              {
                link_id: link.id,
                tenant_id: link.tenantId,
                user_id: link.userId,
                provider_id: link.providerId,
                error_code: maybeRotated ? 'maybe_delivered' : 'provider_unavailable',
              },
              null,
            )
            .catch((err: unknown) =>
              log.error({ link_id: link.id, err }, 'audit of a refresh failure failed'),
            );
        return { waitMs };
      }
      const current = await readLink(link.id);
      if (!sameTokens(current, link)) return { newer: current };
      base = current;
    }
    return { waitMs };
  }

  /**
   * invalid_grant: the refresh token is dead. CAS-write needs_reauth (audited) so that no replica
   * tries again; from then on the link answers 409 until the user reconnects. Always rejects
   * reauth_required, except when newer tokens were stored meanwhile: then resolves that link.
   */
  async function markNeedsReauth(
    link: LinkRecord,
    reason: string,
    criteria: RefreshCriteria,
  ): Promise<LinkRecord> {
    let base = link;
    for (let attempt = 0; attempt < 3; attempt++) {
      const at = now();
      const saved = await store.saveLink(
        {
          ...base,
          status: 'needs_reauth',
          metadata: withoutLinkBackoff(withoutKey(base.metadata, REFRESH_UNCERTAIN_KEY)),
          updatedAtMs: at,
        },
        base.version,
      );
      if (saved) {
        log.warn(
          { link_id: link.id, provider: link.providerId, reason },
          'link needs the user to reconnect',
        );
        await audit
          .record(
            'link.needs_reauth',
            {
              link_id: link.id,
              tenant_id: link.tenantId,
              user_id: link.userId,
              provider_id: link.providerId,
              reason,
            },
            criteria.requestId,
          )
          .catch((err: unknown) =>
            log.error({ link_id: link.id, err }, 'audit of needs_reauth failed'),
          );
        throw new LinkvaultError('reauth_required');
      }
      const current = await readLink(link.id);
      // Someone stored newer tokens (or reconnected) meanwhile: our verdict was about a token no longer stored.
      if (!sameTokens(current, link)) {
        checkUsable(current);
        return current;
      }
      if (current.status === 'needs_reauth') throw new LinkvaultError('reauth_required');
      base = current;
    }
    throw new LinkvaultError('conflict', { detail: 'The link kept changing; retry' });
  }

  /**
   * A refresh that raced a revocation: the tokens it obtained must not outlive the link. They go to
   * the durable revocation queue (`sealed`, the token set sealed for `link`), which retries until
   * the provider answers; only when the queue cannot take them (the store is down) are they
   * revoked inline, once, best effort.
   */
  async function revokeOrphan(
    link: LinkRecord,
    sealed: SealedRecord,
    fresh: TokenSet,
    merged: TokenSet,
    criteria: RefreshCriteria,
  ): Promise<void> {
    try {
      await deps.revocation.revokeOrphanedTokens(link, sealed, criteria.requestId);
      return;
    } catch (err) {
      log.error(
        { link_id: link.id, provider: link.providerId, err },
        'could not queue the revocation of tokens obtained by a refresh that raced a revocation; revoking them inline',
      );
    }
    const token = fresh.refreshToken ?? merged.accessToken;
    const tokenTypeHint = fresh.refreshToken ? 'refresh_token' : 'access_token';
    try {
      await oauth.revoke({
        providerId: link.providerId,
        endpointVariables: link.endpointVariables,
        token,
        tokenTypeHint,
      });
    } catch (err) {
      log.warn(
        { link_id: link.id, provider: link.providerId, err },
        'could not revoke tokens obtained by a refresh that raced a revocation',
      );
    } finally {
      vault.forget(sealed);
    }
  }

  // ---- small reads ----

  /** The stored link; link_not_found when gone, link_revoked when revoked. */
  async function readLink(id: string): Promise<LinkRecord> {
    const link = await store.getLink(id);
    if (!link) throw new LinkvaultError('link_not_found');
    if (link.status === 'revoked') throw new LinkvaultError('link_revoked');
    return link;
  }

  function checkUsable(link: LinkRecord): void {
    if (link.status === 'revoked') throw new LinkvaultError('link_revoked');
    if (link.status === 'needs_reauth') throw new LinkvaultError('reauth_required');
    if (link.status !== 'active') throw new LinkvaultError('link_not_found');
  }

  async function openLink(link: LinkRecord): Promise<TokenSet> {
    checkUsable(link);
    if (!link.tokens)
      throw new LinkvaultError('reauth_required', { detail: 'The link holds no tokens' });
    return openTokenSet(vault, link, link.tokens);
  }

  /** Whether `current` already answers the caller that looked at `observed`. */
  function satisfied(
    current: LinkRecord,
    observed: LinkRecord,
    criteria: RefreshCriteria,
  ): boolean {
    checkUsable(current);
    // A refresh (or reconnect) stored since the caller looked: that is the result it waits for.
    if (!sameTokens(current, observed)) return true;
    return !criteria.force && !refreshDue(current, now(), criteria.minValidityMs);
  }

  function stillValid(link: LinkRecord): boolean {
    return link.accessTokenExpiresAtMs === null || link.accessTokenExpiresAtMs > now();
  }

  return {
    ensureFresh,
    refreshAhead,
    inFlight: () => inflight.size,
    pendingRotations: () => rotations.count(),
  };
}

function withoutKey(record: Readonly<Record<string, string>>, key: string): Record<string, string> {
  if (!(key in record)) return { ...record };
  const { [key]: _dropped, ...rest } = record;
  return rest;
}
