import { LinkvaultError } from '../errors.js';
import type { LinkFilter, LinkRecord } from '../links/link.js';
import type { Store } from '../store/store.js';

/**
 * Tenant scoping of services (docs/service-auth.md, "Roles and tenants"). A service entry with
 * `tenants` acts only within those tenants on every route and store query; without it, it acts
 * for every tenant. What lies outside answers exactly as if it did not exist (404 link_not_found,
 * grant_not_found, job_not_found, an empty list): a scoped service learns nothing of other
 * tenants, not even that a link id is taken. Only where the caller itself names a tenant as a
 * parameter (a session, a grant, a bulk revocation) is it refused outright, 403 forbidden: that
 * answer depends on the services file alone, never on what is stored.
 */

/** Who acts: a service's tenant scope (null: every tenant). */
export interface TenantScoped {
  /** The tenants the caller may act for; null when the services file gives it no `tenants`. */
  readonly tenants: ReadonlySet<string> | null;
}

/** True when `principal` may act for `tenantId` (every tenant when it is not scoped). */
export function mayActFor(principal: TenantScoped, tenantId: string): boolean {
  return principal.tenants === null || principal.tenants.has(tenantId);
}

/** True when the principal acts only within named tenants. */
export function isTenantScoped(principal: TenantScoped): boolean {
  return principal.tenants !== null;
}

/**
 * 403 forbidden for a tenant the caller named as a parameter and may not act for. The same answer
 * whether or not the tenant has anything stored: it reads the services file, not the store.
 */
export function tenantOutsideScope(parameter = 'tenant_id'): LinkvaultError {
  return new LinkvaultError('forbidden', {
    detail: `${parameter} is outside the tenants this service may act for`,
    extra: { parameter },
  });
}

/**
 * 400 when a scoped caller leaves out the tenant of something that would otherwise reach every
 * tenant (a grant, a bulk revocation by provider).
 */
export function tenantRequired(what: string): LinkvaultError {
  return new LinkvaultError('invalid_request', {
    detail: `tenant_id is required: this service acts only within its tenants (${what})`,
    extra: { parameter: 'tenant_id' },
  });
}

/** Newest first, ties by id (descending), as both store adapters order a listing. */
function compareNewestFirst(a: LinkRecord, b: LinkRecord): number {
  if (a.createdAtMs !== b.createdAtMs) return b.createdAtMs - a.createdAtMs;
  return a.id < b.id ? 1 : a.id > b.id ? -1 : 0;
}

/**
 * store.listLinks as `principal` sees it. A filter naming a tenant outside its scope matches
 * nothing; without a tenant, a scoped principal gets one indexed per-tenant query per tenant of
 * its scope, merged newest first and cut at `limit`: the store never reads another tenant's links
 * for it (each adapter serves a tenant's listing from that tenant's own index).
 */
export async function listLinksWithin(
  store: Pick<Store, 'listLinks'>,
  principal: TenantScoped,
  filter: LinkFilter,
  limit = 1000,
): Promise<LinkRecord[]> {
  const tenants = principal.tenants;
  if (tenants === null) return store.listLinks(filter, limit);
  if (filter.tenantId !== undefined)
    return tenants.has(filter.tenantId) ? store.listLinks(filter, limit) : [];
  const parts = await Promise.all(
    [...tenants].map((tenantId) => store.listLinks({ ...filter, tenantId }, limit)),
  );
  return parts.flat().sort(compareNewestFirst).slice(0, limit);
}
