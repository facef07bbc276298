/**
 * Key naming of the Redis adapter (`P` = keyPrefix, every variable part URI-encoded so `:`, `{` and
 * `}` cannot collide):
 *   {P:t:<tenant>}:l:<id>          hash j=<link JSON> v=<version> u=<lastUsedAtMs>
 *   {P:t:<tenant>}:ix:all|u:<user>|p:<provider>|s:<status>|a:<providerAccountId>
 *                                   sorted sets of link ids scored by createdAtMs
 *   {P:t:<tenant>}:ix:exp           the expiry index: link ids scored by expiryIndexScore (active
 *                                   links with an expiring token, or a refresh to retry)
 *   P:ix:exp:built                  set once every link stored before the expiry index existed is in it
 *   P:ref:<id>                      the link's tenant (immutable; cached in process)
 *   P:tenants                       set of tenants that have links (for listings without a tenant)
 *   P:f:<key>  P:s:<id>  P:lk:<name>  P:rv:<linkId>  P:js:<id>   single-key records
 *   {P:t:<tenant>}:g:rec            hash grant id -> JSON: every grant filed under the tenant (a
 *                                   grant's tenant, or for a grant naming only a link, the link's)
 *   {P:t:<tenant>}:g:svc:<service>  hash id -> JSON: the service's grants filed under the tenant (listing)
 *   {P:t:<tenant>}:g:l:<service>:<link>  hash id -> JSON: grants naming the link (release lookup)
 *   {P:t:<tenant>}:g:t:<service>    hash id -> JSON: grants naming no link (release lookup)
 *   P:gref:<grant id>               the tenant a grant is filed under
 *   P:gsvc:<service>  P:gtenants    sets of tenants holding grants (of a service / of any): listings
 *   {P:t:<tenant>}:audit            the tenant's audit shard (a stream, beside its links)
 *   {P:audit}:log                   the `global` audit shard: events naming no tenant
 *   P:audit:shards                  set of tenant shards (`t:<tenant>`) appendAudit wrote to (added before
 *                                   a shard's first event); with P:tenants, every tenant shard
 *   {P:g}:all  {P:g}:svc:<service>  grants before the index (read once by migrateLegacyGrants, then deleted)
 *   {P:q}:due (zset) :kind :payload :attempts :runat :lease (hashes by job id)
 * Every key a multi-key script touches shares one hash tag, so each script runs on one slot.
 */
import type { LinkFilter, LinkRecord } from '../../links/link.js';

const enc = encodeURIComponent;

/** The hash tag shared by every key of one tenant's links and indexes. */
export function redisTenantTag(keyPrefix: string, tenantId: string): string {
  return `{${keyPrefix}:t:${enc(tenantId)}}`;
}

/** The single-key JSON documents: revocation records (`rv`) and job status (`js`). */
export type RedisDocumentSlot = 'rv' | 'js';

/** Every key name of one deployment (`keyPrefix`). */
export class RedisKeys {
  readonly #p: string;

  constructor(keyPrefix: string) {
    this.#p = keyPrefix;
  }

  link(tenantId: string, id: string): string {
    return `${redisTenantTag(this.#p, tenantId)}:l:${enc(id)}`;
  }

  /** The listing indexes a link with these fields belongs to; `ix:all` first. */
  linkIndexes(
    link: Pick<LinkRecord, 'tenantId' | 'userId' | 'providerId' | 'status' | 'providerAccountId'>,
  ): string[] {
    const tag = redisTenantTag(this.#p, link.tenantId);
    const keys = [
      `${tag}:ix:all`,
      `${tag}:ix:u:${enc(link.userId)}`,
      `${tag}:ix:p:${enc(link.providerId)}`,
      `${tag}:ix:s:${link.status}`,
    ];
    if (link.providerAccountId !== null) keys.push(`${tag}:ix:a:${enc(link.providerAccountId)}`);
    return keys;
  }

  /** The most selective listing index for `filter` within one tenant. */
  listingIndex(tenantId: string, filter: LinkFilter): string {
    const tag = redisTenantTag(this.#p, tenantId);
    if (filter.providerAccountId !== undefined)
      return `${tag}:ix:a:${enc(filter.providerAccountId)}`;
    if (filter.userId !== undefined) return `${tag}:ix:u:${enc(filter.userId)}`;
    if (filter.providerId !== undefined) return `${tag}:ix:p:${enc(filter.providerId)}`;
    if (filter.status !== undefined) return `${tag}:ix:s:${filter.status}`;
    return this.allLinks(tenantId);
  }

  allLinks(tenantId: string): string {
    return `${redisTenantTag(this.#p, tenantId)}:ix:all`;
  }

  expiry(tenantId: string): string {
    return `${redisTenantTag(this.#p, tenantId)}:ix:exp`;
  }

  get expiryBuilt(): string {
    return `${this.#p}:ix:exp:built`;
  }

  ref(id: string): string {
    return `${this.#p}:ref:${enc(id)}`;
  }

  get tenants(): string {
    return `${this.#p}:tenants`;
  }

  flowState(key: string): string {
    return `${this.#p}:f:${enc(key)}`;
  }

  session(id: string): string {
    return `${this.#p}:s:${enc(id)}`;
  }

  lock(name: string): string {
    return `${this.#p}:lk:${enc(name)}`;
  }

  document(slot: RedisDocumentSlot, id: string): string {
    return `${this.#p}:${slot}:${enc(id)}`;
  }

  /** Where grants lived before the index (legacyGrants migration only). */
  legacyGrants(serviceId: string): { all: string; svc: string } {
    return { all: `{${this.#p}:g}:all`, svc: `{${this.#p}:g}:svc:${enc(serviceId)}` };
  }

  /** Every grant filed under `tenantId`. */
  grantRecords(tenantId: string): string {
    return `${redisTenantTag(this.#p, tenantId)}:g:rec`;
  }

  /** The grants of `serviceId` filed under `tenantId` (listing). */
  grantsOfService(tenantId: string, serviceId: string): string {
    return `${redisTenantTag(this.#p, tenantId)}:g:svc:${enc(serviceId)}`;
  }

  /** The release-lookup bucket a grant is filed in: by its link, else by its tenant. */
  grantBucket(tenantId: string, grant: { serviceId: string; linkId: string | null }): string {
    const tag = redisTenantTag(this.#p, tenantId);
    return grant.linkId !== null
      ? `${tag}:g:l:${enc(grant.serviceId)}:${enc(grant.linkId)}`
      : `${tag}:g:t:${enc(grant.serviceId)}`;
  }

  grantRef(grantId: string): string {
    return `${this.#p}:gref:${enc(grantId)}`;
  }

  grantServiceTenants(serviceId: string): string {
    return `${this.#p}:gsvc:${enc(serviceId)}`;
  }

  get grantTenants(): string {
    return `${this.#p}:gtenants`;
  }

  /** The `global` audit shard (the stream every event went to before sharding). */
  get audit(): string {
    return `{${this.#p}:audit}:log`;
  }

  /** The audit shard of one tenant: in the tenant's slot, so a release's record and its link check are one script. */
  tenantAudit(tenantId: string): string {
    return `${redisTenantTag(this.#p, tenantId)}:audit`;
  }

  get auditShards(): string {
    return `${this.#p}:audit:shards`;
  }

  /**
   * Bucket `bucket` of the changed-shard hints (the audit shards appended to since the exporter last
   * took them): a set of shard names. Each bucket has its own hash tag, so the buckets spread over
   * the cluster's slots instead of one slot taking every replica's hints.
   */
  auditChanged(bucket: number): string {
    return `{${this.#p}:audit:changed:${bucket}}`;
  }

  /** The queue's keys in the order every queue script declares them: due, kind, payload, attempts, runat, lease. */
  queue(): string[] {
    const tag = `{${this.#p}:q}`;
    return [
      `${tag}:due`,
      `${tag}:kind`,
      `${tag}:payload`,
      `${tag}:attempts`,
      `${tag}:runat`,
      `${tag}:lease`,
    ];
  }
}
