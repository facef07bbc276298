import { randomBytes } from 'node:crypto';
import { LinkvaultError, invalidRequest } from '../../errors.js';
import type { Store } from '../../store/store.js';
import type { LinkRecord } from '../link.js';
import type { Audit } from '../audit/audit.js';
import { checkGrantProxyMembers, type ProxyRules } from '../proxy/proxy-rules.js';

export interface GrantRecord {
  readonly id: string;
  readonly serviceId: string;
  readonly tenantId: string | null;
  readonly providerId: string | null;
  readonly linkId: string | null;
  /** Allowed scopes; null means every scope the link was granted. */
  readonly scopes: readonly string[] | null;
  readonly purpose: string;
  readonly createdAtMs: number;
  readonly expiresAtMs: number | null;
  /** False: a proxy-only grant, the token never leaves (absent in records older than the proxy: true). */
  readonly tokenRelease?: boolean;
  /** The API calls the proxy may make under this grant (links/proxy/proxy-rules.ts); absent/null: none. */
  readonly proxy?: ProxyRules | null;
}

/**
 * Grants: which service may obtain tokens for which links, for which scopes, for what purpose.
 * Deny by default: a release needs a live grant of the calling service that matches the link.
 *
 * A grant matches a link when every field it sets matches: a tenant, a provider, a single link
 * (combinable). A grant must set a tenant or a link, so no grant can ever match every link of
 * every tenant. A grant's scopes are never wider than the link's granted scopes: checked at
 * creation when it names a link, at release time otherwise.
 */

export interface GrantInput {
  readonly serviceId: string;
  readonly tenantId?: string | null;
  readonly providerId?: string | null;
  readonly linkId?: string | null;
  /** Omitted/null: every scope the link was granted. */
  readonly scopes?: readonly string[] | null;
  readonly purpose: string;
  readonly expiresAtMs?: number | null;
  /** Default true; false makes a proxy-only grant. */
  readonly tokenRelease?: boolean;
  readonly proxy?: ProxyRules | null;
}

export interface GrantsDeps {
  readonly store: Pick<Store, 'putGrant' | 'getGrant' | 'listGrants' | 'deleteGrant' | 'getLink'>;
  readonly audit: Pick<Audit, 'record'>;
  /** Whether `id` is a registered service. */
  readonly isService: (id: string) => boolean;
  readonly now: () => number;
}

export interface Grants {
  /** Validates and stores a grant; the creation is audited first-class (no audit → no grant). */
  create(input: GrantInput, actor: { serviceId: string; requestId: string }): Promise<GrantRecord>;
  /** Grants of one service, or all grants; oldest first. Expired grants are listed (they never match). */
  list(serviceId?: string): Promise<GrantRecord[]>;
  /** Removes a grant; grant_not_found when absent. */
  remove(id: string, actor: { serviceId: string; requestId: string }): Promise<void>;
}

export const MAX_PURPOSE_CHARS = 200;

export function createGrants(deps: GrantsDeps): Grants {
  const { store, audit, now } = deps;

  async function create(
    input: GrantInput,
    actor: { serviceId: string; requestId: string },
  ): Promise<GrantRecord> {
    checkGrantShape(input, deps.isService, now());
    const tenantId = input.tenantId ?? null;
    const providerId = input.providerId ?? null;
    const linkId = input.linkId ?? null;
    const scopes = input.scopes ? Object.freeze([...new Set(input.scopes)]) : null;
    if (linkId !== null) await checkAgainstLink(linkId, tenantId, providerId, scopes);

    const grant: GrantRecord = {
      id: `grt_${randomBytes(16).toString('base64url')}`,
      serviceId: input.serviceId,
      tenantId,
      providerId,
      linkId,
      scopes,
      purpose: input.purpose.trim(),
      createdAtMs: now(),
      expiresAtMs: input.expiresAtMs ?? null,
      tokenRelease: input.tokenRelease ?? true,
      proxy: input.proxy ?? null,
    };
    await store.putGrant(grant);
    try {
      await audit.record(
        'grant.created',
        grantAuditFields(grant, actor.serviceId),
        actor.requestId,
      );
    } catch (err) {
      // Fail closed: a grant nobody can trace must not exist. Best-effort removal, then 503.
      await store.deleteGrant(grant.id).catch(() => undefined);
      throw err;
    }
    return grant;
  }

  async function checkAgainstLink(
    linkId: string,
    tenantId: string | null,
    providerId: string | null,
    scopes: readonly string[] | null,
  ): Promise<void> {
    const link = await store.getLink(linkId);
    if (!link) throw new LinkvaultError('link_not_found', { detail: 'link_id names no link' });
    // A grant whose fields contradict its own link could never match: refuse it rather than store a dead rule.
    if (tenantId !== null && tenantId !== link.tenantId)
      throw invalidRequest('tenant_id', 'link_id belongs to another tenant');
    if (providerId !== null && providerId !== link.providerId)
      throw invalidRequest('provider_id', 'link_id belongs to another provider');
    if (scopes) {
      const missing = scopes.filter((s) => !link.grantedScopes.includes(s));
      if (missing.length > 0)
        throw new LinkvaultError('scope_exceeds_link', {
          detail: `The link was not granted: ${missing.join(' ')}`,
        });
    }
  }

  async function remove(
    id: string,
    actor: { serviceId: string; requestId: string },
  ): Promise<void> {
    const grant = await store.getGrant(id);
    if (!grant) throw new LinkvaultError('grant_not_found');
    // Audit first: removing access is always allowed, but it must leave a trace; no audit → 503, grant stays.
    await audit.record('grant.deleted', grantAuditFields(grant, actor.serviceId), actor.requestId);
    if (!(await store.deleteGrant(id))) throw new LinkvaultError('grant_not_found');
  }

  return { create, list: (serviceId) => store.listGrants(serviceId), remove };
}

/** The domain rules of a grant (shapes are the route's job): scope, purpose, expiry, service. */
function checkGrantShape(
  input: GrantInput,
  isService: (id: string) => boolean,
  nowMs: number,
): void {
  if (!isService(input.serviceId))
    throw invalidRequest('service_id', 'service_id is not a registered service');
  if (!input.tenantId && !input.linkId)
    throw invalidRequest('tenant_id', 'A grant must name a tenant_id or a link_id');
  const purpose = input.purpose.trim();
  if (purpose.length < 1 || purpose.length > MAX_PURPOSE_CHARS)
    throw invalidRequest('purpose', `purpose must be 1-${MAX_PURPOSE_CHARS} characters`);
  if (input.scopes && input.scopes.length === 0)
    throw invalidRequest(
      'scopes',
      'scopes must not be empty; omit it to allow every scope of the link',
    );
  if (input.expiresAtMs !== undefined && input.expiresAtMs !== null && input.expiresAtMs <= nowMs)
    throw invalidRequest('expires_at', 'expires_at must be in the future');
  checkGrantProxyMembers(input);
}

function grantAuditFields(grant: GrantRecord, actor: string): Record<string, unknown> {
  return {
    actor_service_id: actor,
    grant_id: grant.id,
    service_id: grant.serviceId,
    tenant_id: grant.tenantId,
    provider_id: grant.providerId,
    link_id: grant.linkId,
    scopes: grant.scopes,
    purpose: grant.purpose,
    expires_at_ms: grant.expiresAtMs,
    token_release: grant.tokenRelease !== false,
    proxy: grant.proxy ?? null,
  };
}

/** True when `grant` is live at `nowMs` and every field it sets matches `link`. */
function grantMatchesLink(
  grant: GrantRecord,
  link: Pick<LinkRecord, 'id' | 'tenantId' | 'providerId'>,
  nowMs: number,
): boolean {
  // Deny by default even for a record that slipped past creation rules: it must pin a tenant or a link.
  if (grant.tenantId === null && grant.linkId === null) return false;
  if (grant.expiresAtMs !== null && grant.expiresAtMs <= nowMs) return false;
  if (grant.tenantId !== null && grant.tenantId !== link.tenantId) return false;
  if (grant.providerId !== null && grant.providerId !== link.providerId) return false;
  if (grant.linkId !== null && grant.linkId !== link.id) return false;
  return true;
}

/** Most specific first: a link grant, then tenant+provider, then tenant. */
function specificity(grant: GrantRecord): number {
  return (
    (grant.linkId !== null ? 4 : 0) +
    (grant.providerId !== null ? 2 : 0) +
    (grant.tenantId !== null ? 1 : 0)
  );
}

/** Live grants of `serviceId` that match `link` by tenant / provider / link, most specific first. */
export function matchingGrants(
  grants: readonly GrantRecord[],
  serviceId: string,
  link: Pick<LinkRecord, 'id' | 'tenantId' | 'providerId'>,
  nowMs: number,
): GrantRecord[] {
  return grants
    .filter((g) => g.serviceId === serviceId && grantMatchesLink(g, link, nowMs))
    .sort((a, b) => specificity(b) - specificity(a));
}

/**
 * Among matching grants, the first whose scopes fit: a grant wider than the link does not apply
 * to it (no_grant; checked here for tenant/provider grants), and the requested scopes must be
 * within the grant's (scope_not_granted when some grant matched but none covers them).
 */
export function chooseGrant(
  candidates: readonly GrantRecord[],
  link: Pick<LinkRecord, 'grantedScopes'>,
  requestedScopes: readonly string[] | null,
): GrantRecord {
  let scopeShort = false;
  for (const grant of candidates) {
    if (grant.scopes && !isSubset(grant.scopes, link.grantedScopes)) continue;
    const allowed = grant.scopes ?? link.grantedScopes;
    if (requestedScopes && !isSubset(requestedScopes, allowed)) {
      scopeShort = true;
      continue;
    }
    return grant;
  }
  if (scopeShort) throw new LinkvaultError('scope_not_granted');
  throw new LinkvaultError('no_grant');
}

/** The grant that allows `serviceId` to obtain `link`'s token for `requestedScopes`, or no_grant / scope_not_granted. */
export function findMatchingGrant(
  grants: readonly GrantRecord[],
  serviceId: string,
  link: Pick<LinkRecord, 'id' | 'tenantId' | 'providerId' | 'grantedScopes'>,
  requestedScopes: readonly string[] | null,
  nowMs: number,
): GrantRecord {
  return chooseGrant(matchingGrants(grants, serviceId, link, nowMs), link, requestedScopes);
}

function isSubset(inner: readonly string[], outer: readonly string[]): boolean {
  return inner.every((s) => outer.includes(s));
}
