import type { Logger } from 'pino';
import { mayActFor, type TenantScoped } from '../../auth/tenant-scope.js';
import { isLinkvaultError, LinkvaultError } from '../../errors.js';
import type { Vault } from '../../keys/vault.js';
import type { Metrics } from '../../metrics.js';
import type { TokenSet } from '../../oauth/oauth-client.js';
import type { Secret } from '../../secret.js';
import type { AuditEvent, ReleaseCommit, ReleaseRead, Store } from '../../store/store.js';
import type { GrantRecord } from './grants.js';
import type { LinkRecord } from '../link.js';
import { publicMetadata } from '../link.js';
import type { Audit } from '../audit/audit.js';
import { chooseGrant, matchingGrants } from './grants.js';
import { refreshDue, type FreshTokens, type RefreshCoordinator } from './refresh-coordinator.js';
import { createOpenedTokenCache } from '../sealing/token-vault.js';

/**
 * Token release: the only way an access token leaves linkvault. Reads top to bottom:
 * readForRelease (the link and the grants that could match it, from the store's grant index: one
 * store step, constant in the number of grants) → findMatchingGrant → checkLinkStatus →
 * openLinkTokens (decrypted once per link version, see OpenedTokenCache) → refreshIfDue → commitRelease (one atomic store step: the audit record is stored
 * only if, at that instant, the link is still active with tokens and the grant still exists; no
 * record, no token) → touchLastUsed (best effort) → the token.
 */

export interface ReleaseRequest {
  /** The caller; a tenant-scoped one sees a link outside its tenants as missing (link_not_found). */
  readonly service: { readonly id: string } & TenantScoped;
  readonly linkId: string;
  /** Scopes the caller needs; each must be allowed by its grant. */
  readonly scopes?: readonly string[] | null;
  /** The token must stay valid at least this long (default DEFAULT_MIN_VALIDITY_SECONDS). */
  readonly minValiditySeconds?: number;
  /** Refresh even if the token looks fresh (the caller saw it rejected). */
  readonly forceRefresh?: boolean;
  readonly requestId: string;
  /**
   * Who uses the token. Absent: it leaves to the caller (the token route), which grants with
   * `token_release: false` do not allow. The proxy passes its own use: the token stays inside.
   */
  readonly use?: TokenUse;
}

/** A use of the token inside linkvault (the proxy): which grants allow it, and how it is audited. */
export interface TokenUse {
  /** Whether `grant` (live, matching the link) allows this use. */
  allows(grant: GrantRecord): boolean;
  /** Runs once a grant is chosen and before anything is audited or refreshed; throws to refuse. */
  check(link: LinkRecord, grant: GrantRecord): void;
  /** The audit event stored (fail closed) before the token is used, and its fields besides the release's. */
  readonly auditType: string;
  auditFields(grant: GrantRecord): Readonly<Record<string, unknown>>;
}

export interface ReleasedToken {
  readonly accessToken: Secret;
  /** As the provider said it, lower-cased ('bearer'). */
  readonly tokenType: string;
  readonly expiresAtMs: number | null;
  /** The scopes the released token carries. */
  readonly scopes: readonly string[];
  /** Provider metadata callers need for API calls (instance_url, api_domain, hub_id, ...). */
  readonly metadata: Readonly<Record<string, string>>;
}

export interface TokenReleaseDeps {
  readonly store: Pick<Store, 'readForRelease' | 'commitRelease' | 'touchLink'>;
  readonly vault: Vault;
  readonly coordinator: Pick<RefreshCoordinator, 'ensureFresh'>;
  readonly audit: Pick<Audit, 'prepare'>;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly now: () => number;
  /** last_used_at is written at most this often per link (default 60 s): a release must not cost a write each time. */
  readonly touchIntervalMs?: number;
  /**
   * How long an opened token set is kept for the next release of the same link version (default
   * 30 s; 0: every release decrypts). Never longer than the vault keeps the data key that opens it.
   */
  readonly openedTokenTtlMs?: number;
  /** Whether a release may decide on the read held from the previous one (default true; false: every release reads, as bench/release-cpu.ts measures). */
  readonly holdReads?: boolean;
}

export interface TokenRelease {
  release(request: ReleaseRequest): Promise<ReleasedToken>;
}

/** A read held for the next release of the same (service, link), and the audit data it last made. */
interface HeldRead {
  readonly read: ReleaseRead;
  readonly atMs: number;
  audit: {
    readonly grant: GrantRecord;
    readonly link: LinkRecord;
    readonly tokens: TokenSet;
    readonly serviceId: string;
    readonly data: Readonly<Record<string, unknown>>;
  } | null;
}

const RELEASED = 'token.released';

/** A release of the token to its caller with nothing asked beyond it: its audit data depends only on the link, grant and tokens. */
function isPlain(request: ReleaseRequest): boolean {
  return request.use === undefined && request.scopes == null && request.forceRefresh !== true;
}

function isPrimitive(value: unknown): boolean {
  return value === null || (typeof value !== 'object' && typeof value !== 'function');
}

/** A token about to expire is of no use to a caller: by default it must live 60 s more. */
export const DEFAULT_MIN_VALIDITY_SECONDS = 60;
const MAX_TOUCH_ENTRIES = 50_000;
const DEFAULT_OPENED_TOKEN_TTL_MS = 30_000;
/** Reads held for the next release (see `held`), and how often a release decides again on a changed link. */
const MAX_HELD_READS = 10_000;
/** A held read is read again after this long, so a grant added since is seen by the choice of grant. */
const HELD_READ_MS = 10_000;
const MAX_RELEASE_ATTEMPTS = 3;
const MAX_OPENED_TOKEN_ENTRIES = 10_000;

export function createTokenRelease(deps: TokenReleaseDeps): TokenRelease {
  const { store, vault, coordinator, audit, metrics, log, now } = deps;
  const touchIntervalMs = deps.touchIntervalMs ?? 60_000;
  /** linkId → when this process last wrote last_used_at. */
  const touched = new Map<string, number>();
  const opened = createOpenedTokenCache({
    ttlMs: deps.openedTokenTtlMs ?? DEFAULT_OPENED_TOKEN_TTL_MS,
    maxEntries: MAX_OPENED_TOKEN_ENTRIES,
    now,
  });

  /**
   * The last read each (service, link) was released from on this process. A release decides on it
   * and lets the atomic step confirm that the link version and the grant are still exactly those
   * (ReleaseExpectation): one store step instead of two. Anything else — a refusal, a changed link
   * or grant, a token due for refresh — reads again and decides again, so what a held read may miss
   * (a grant added since) costs one more step, never a wrong answer.
   */
  const held = new Map<string, HeldRead>();
  const holdReads = deps.holdReads ?? true;

  async function release(request: ReleaseRequest): Promise<ReleasedToken> {
    let provider = 'unknown';
    try {
      const key = `${request.service.id}\u0000${request.linkId}`;
      const kept = held.get(key);
      if (kept !== undefined && holdReads && now() - kept.atMs < HELD_READ_MS) {
        provider = kept.read.link.providerId;
        const done = await releaseFromHeld(kept, request);
        if (done !== null) return released(done, provider, request);
        // It no longer holds: the fresh read below replaces it.
        if (held.get(key) === kept) held.delete(key);
      }
      for (let attempt = 1; ; attempt++) {
        const read = await store.readForRelease(request.service.id, request.linkId);
        // A tenant-scoped caller sees a link outside its tenants as missing.
        if (!read || !mayActFor(request.service, read.link.tenantId))
          throw new LinkvaultError('link_not_found');
        const link = read.link;
        provider = link.providerId;
        const grant = findMatchingGrant(read.grants, request, link);
        const tokens = await openLinkTokens(link);
        const fresh = await refreshIfDue(link, tokens, request);
        const outcome = await commitRelease(fresh, grant, request);
        if (outcome === 'changed') {
          // The link or the grant changed between the read and the atomic step: decide again.
          if (attempt < MAX_RELEASE_ATTEMPTS) continue;
          throw new LinkvaultError('conflict', {
            detail: 'The link or its grant kept changing during the release; retry',
          });
        }
        remember(key, { link: fresh.link, grants: read.grants });
        return released(fresh, provider, request);
      }
    } catch (err) {
      metrics.tokenReleases.inc({
        provider,
        outcome: isLinkvaultError(err) ? err.code : 'internal_error',
      });
      throw err;
    }
  }

  /**
   * The release decided on a held read: null when it cannot be used (the decision refuses, the
   * token is due for refresh, or the atomic step finds the link or grant changed or refuses).
   * Failures to open the tokens or to store the record are the caller's answer, as on a fresh read.
   */
  async function releaseFromHeld(
    kept: HeldRead,
    request: ReleaseRequest,
  ): Promise<FreshTokens | null> {
    const read = kept.read;
    const link = read.link;
    const minValidityMs = (request.minValiditySeconds ?? DEFAULT_MIN_VALIDITY_SECONDS) * 1000;
    if (request.forceRefresh === true || refreshDue(link, now(), minValidityMs)) return null;
    if (!mayActFor(request.service, link.tenantId)) return null;
    let grant: GrantRecord;
    try {
      grant = findMatchingGrant(read.grants, request, link);
    } catch {
      return null;
    }
    if (!link.tokens) return null;
    const fresh: FreshTokens = { link, tokens: await openLinkTokens(link) };
    const outcome = await commitRelease(fresh, grant, request, kept);
    return outcome === 'released' ? fresh : null;
  }

  function remember(key: string, read: ReleaseRead): void {
    if (held.size >= MAX_HELD_READS) {
      const oldest = held.keys().next().value;
      if (oldest !== undefined) held.delete(oldest);
    }
    held.set(key, { read, atMs: now(), audit: null });
  }

  function released(fresh: FreshTokens, provider: string, request: ReleaseRequest): ReleasedToken {
    touchLastUsed(fresh.link);
    metrics.tokenReleases.inc({ provider, outcome: request.use ? 'used_by_proxy' : 'released' });
    return shapeRelease(fresh);
  }

  /**
   * Deny by default. The link's state is told only to a service that holds a grant for it, so a
   * service without one learns no more than that it may not have the token.
   */
  function findMatchingGrant(
    grants: readonly GrantRecord[],
    request: ReleaseRequest,
    link: LinkRecord,
  ): GrantRecord {
    const use = request.use;
    // A proxy-only grant (token_release false) never lets the token leave.
    const candidates = matchingGrants(grants, request.service.id, link, now()).filter((g) =>
      use ? use.allows(g) : g.tokenRelease !== false,
    );
    if (candidates.length === 0) throw new LinkvaultError('no_grant');
    checkLinkStatus(link);
    const grant = chooseGrant(candidates, link, request.scopes ?? null);
    use?.check(link, grant);
    return grant;
  }

  function checkLinkStatus(link: LinkRecord): void {
    // A revoked link never releases a token again.
    if (link.status === 'revoked') throw new LinkvaultError('link_revoked');
    if (link.status === 'needs_reauth') throw new LinkvaultError('reauth_required');
    // Fail closed: only an active link releases (a pending_confirmation link never does).
    if (link.status !== 'active') throw new LinkvaultError('link_not_found');
  }

  async function openLinkTokens(link: LinkRecord): Promise<TokenSet> {
    if (!link.tokens)
      throw new LinkvaultError('reauth_required', { detail: 'The link holds no tokens' });
    return opened.open(vault, link, link.tokens);
  }

  function refreshIfDue(
    link: LinkRecord,
    tokens: TokenSet,
    request: ReleaseRequest,
  ): Promise<FreshTokens> {
    const minValiditySeconds = request.minValiditySeconds ?? DEFAULT_MIN_VALIDITY_SECONDS;
    return coordinator.ensureFresh(link, tokens, {
      minValidityMs: minValiditySeconds * 1000,
      force: request.forceRefresh === true,
      requestId: request.requestId,
    });
  }

  /**
   * The linearisation point, awaited and fail-closed: the release record is stored atomically with
   * the check that the link is still active with its tokens and the grant still exists (a
   * revocation or grant deletion that landed since the read refuses the release, and leaves no
   * release record). When the record cannot be stored, the release fails (audit_unavailable).
   */
  async function commitRelease(
    fresh: FreshTokens,
    grant: GrantRecord,
    request: ReleaseRequest,
    kept: HeldRead | null = null,
  ): Promise<'released' | 'changed'> {
    const fromHeld = kept !== null;
    const event =
      auditEventFor(fresh, grant, request, kept) ??
      (await prepareEvent(fresh, grant, request, kept));
    let outcome: ReleaseCommit;
    try {
      outcome = await store.commitRelease(fresh.link.id, grant.id, event, {
        linkVersion: fresh.link.version,
        grant,
      });
    } catch (cause) {
      throw new LinkvaultError('audit_unavailable', { cause, retryAfterSeconds: 1 });
    }
    if (outcome.released) return 'released';
    // A held read that no longer holds is read again; so is a fresh one that changed meanwhile.
    if (fromHeld || outcome.reason === 'changed') return 'changed';
    throw refusalFor(outcome);
  }

  /**
   * A plain token release (no scopes asked, not forced, not the proxy's use) repeats its
   * predecessor's audit data exactly while the grant, the link version and the opened token set
   * are the same objects: the data made for the first is kept on the held read (frozen) and only
   * the time and the request id are new. Null when that does not apply.
   */
  function auditEventFor(
    fresh: FreshTokens,
    grant: GrantRecord,
    request: ReleaseRequest,
    kept: HeldRead | null,
  ): AuditEvent | null {
    const memo = kept?.audit;
    if (
      memo == null ||
      !isPlain(request) ||
      memo.grant !== grant ||
      memo.link !== fresh.link ||
      memo.tokens !== fresh.tokens ||
      memo.serviceId !== request.service.id
    )
      return null;
    return { atMs: now(), type: RELEASED, requestId: request.requestId, data: memo.data };
  }

  async function prepareEvent(
    fresh: FreshTokens,
    grant: GrantRecord,
    request: ReleaseRequest,
    kept: HeldRead | null,
  ): Promise<AuditEvent> {
    const { link, tokens } = fresh;
    const event = await audit.prepare(
      request.use?.auditType ?? RELEASED,
      {
        ...request.use?.auditFields(grant),
        service_id: request.service.id,
        grant_id: grant.id,
        // The grant's purpose, as the user sees it in the link's activity (it outlives the grant).
        purpose: grant.purpose,
        link_id: link.id,
        tenant_id: link.tenantId,
        user_id: link.userId,
        provider_id: link.providerId,
        requested_scopes: request.scopes ?? null,
        forced: request.forceRefresh === true,
        access_token: tokens.accessToken,
        expires_at_ms: tokens.expiresAtMs,
      },
      request.requestId,
    );
    if (kept !== null && isPlain(request) && Object.values(event.data).every(isPrimitive)) {
      const data = Object.freeze(event.data);
      kept.audit = { grant, link, tokens, serviceId: request.service.id, data };
    }
    return event;
  }

  function touchLastUsed(link: LinkRecord): void {
    const at = now();
    const last = Math.max(touched.get(link.id) ?? 0, link.lastUsedAtMs ?? 0);
    if (at - last < touchIntervalMs) return;
    if (touched.size >= MAX_TOUCH_ENTRIES) touched.clear();
    touched.set(link.id, at);
    store
      .touchLink(link.id, at)
      .catch((err: unknown) => log.warn({ link_id: link.id, err }, 'last_used_at update failed'));
  }

  return { release };
}

/** Why the atomic release step refused: the link is gone, revoked, needs reauth, pending, or holds no tokens, or the grant is gone. */
function refusalFor(
  outcome: Exclude<ReleaseCommit, { released: true } | { reason: 'changed' }>,
): LinkvaultError {
  if (outcome.reason === 'link_not_found') return new LinkvaultError('link_not_found');
  if (outcome.reason === 'grant_gone') return new LinkvaultError('no_grant');
  if (outcome.reason === 'not_active' && outcome.status === 'revoked')
    return new LinkvaultError('link_revoked');
  if (outcome.reason === 'not_active' && outcome.status === 'needs_reauth')
    return new LinkvaultError('reauth_required');
  // A link waiting for its host's confirmation (or any status that is not yet a link) does not exist for a service.
  if (outcome.reason === 'not_active') return new LinkvaultError('link_not_found');
  return new LinkvaultError('reauth_required', { detail: 'The link holds no tokens' });
}

function shapeRelease({ link, tokens }: FreshTokens): ReleasedToken {
  return {
    accessToken: tokens.accessToken,
    tokenType: tokens.tokenType,
    expiresAtMs: tokens.expiresAtMs,
    scopes: tokens.scopes ?? link.grantedScopes,
    metadata: publicMetadata(link.metadata),
  };
}
