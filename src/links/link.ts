import type { SealedRecord } from '../keys/sealed-record.js';

/**
 * `pending_confirmation`: a connect made under a session with require_confirmation, held until the
 * host's backend confirms it (links/connect/confirmation.ts). It never releases a token and is not
 * in the refresh index; unconfirmed after 10 minutes it is revoked like any other link.
 */
export type LinkStatus = 'active' | 'needs_reauth' | 'revoked' | 'pending_confirmation';

export interface LinkRecord {
  readonly id: string;
  readonly tenantId: string;
  readonly userId: string;
  readonly providerId: string;
  readonly status: LinkStatus;
  /** Monotonic version; every successful write stores `expectedVersion + 1`. Fencing for refresh and revoke. */
  readonly version: number;
  /** The provider's stable account id (OIDC `sub`, HubSpot hub id, ...), used to recognise a reconnect. */
  readonly providerAccountId: string | null;
  readonly grantedScopes: readonly string[];
  /** Non-secret per-link metadata returned with tokens (instance_url, api_domain, hub_id, ...). */
  readonly metadata: Readonly<Record<string, string>>;
  /** Per-link endpoint template variables (Salesforce login host, Zoho accounts server, MS tenant). */
  readonly endpointVariables: Readonly<Record<string, string>>;
  /** The sealed token set; null once shredded (revoked) or never obtained. */
  readonly tokens: SealedRecord | null;
  /** When the current access token expires (ms since epoch); null when it does not expire or is unknown. */
  readonly accessTokenExpiresAtMs: number | null;
  readonly createdAtMs: number;
  readonly updatedAtMs: number;
  readonly lastRefreshedAtMs: number | null;
  readonly lastUsedAtMs: number | null;
}

export interface LinkFilter {
  readonly tenantId?: string;
  readonly userId?: string;
  readonly providerId?: string;
  readonly status?: LinkStatus;
  readonly providerAccountId?: string;
}

/**
 * The public shape of a link (docs/api.md, `Link`): snake_case, RFC 3339 UTC times. Built by
 * allowlist from the record, so the sealed token set, the provider account id and the
 * endpoint variables (a Salesforce My Domain host, a Zoho data center) never reach a caller.
 */
export interface LinkJson {
  readonly id: string;
  readonly tenant_id: string;
  readonly user_id: string;
  readonly provider_id: string;
  readonly status: LinkStatus;
  readonly granted_scopes: readonly string[];
  readonly metadata: Readonly<Record<string, string>>;
  readonly created_at: string;
  readonly updated_at: string;
  readonly last_refreshed_at: string | null;
  readonly last_used_at: string | null;
}

/** RFC 3339 in UTC (`2026-01-02T03:04:05.678Z`). */
export function toRfc3339(ms: number): string {
  return new Date(ms).toISOString();
}

function optionalTime(ms: number | null): string | null {
  return ms === null ? null : toRfc3339(ms);
}

/** Metadata keys linkvault keeps for itself (refresh bookkeeping); never shown to callers. */
export const INTERNAL_METADATA_PREFIX = 'linkvault.';

/** The link's metadata without linkvault's own bookkeeping keys. */
export function publicMetadata(
  metadata: Readonly<Record<string, string>>,
): Readonly<Record<string, string>> {
  let internal = false;
  for (const key in metadata) if (key.startsWith(INTERNAL_METADATA_PREFIX)) internal = true;
  if (!internal) return metadata;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(metadata))
    if (!k.startsWith(INTERNAL_METADATA_PREFIX)) out[k] = v;
  return out;
}

/** The API view of a link. Never tokens, never endpoint variables. */
export function toLinkJson(link: LinkRecord): LinkJson {
  return {
    id: link.id,
    tenant_id: link.tenantId,
    user_id: link.userId,
    provider_id: link.providerId,
    status: link.status,
    granted_scopes: [...link.grantedScopes],
    metadata: { ...publicMetadata(link.metadata) },
    created_at: toRfc3339(link.createdAtMs),
    updated_at: toRfc3339(link.updatedAtMs),
    last_refreshed_at: optionalTime(link.lastRefreshedAtMs),
    last_used_at: optionalTime(link.lastUsedAtMs),
  };
}
