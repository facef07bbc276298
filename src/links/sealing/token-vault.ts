import { LinkvaultError } from '../../errors.js';
import type { SealIdentity } from '../../keys/key-provider.js';
import type { Vault } from '../../keys/vault.js';
import type { TokenSet } from '../../oauth/oauth-client.js';
import { Secret } from '../../secret.js';
import type { LinkRecord } from '../link.js';
import type { SealedRecord } from '../../keys/sealed-record.js';

/**
 * The domain's view of sealing: a link's token set is one sealed record bound to the link's
 * identity (field 'token_set'). Secrets are revealed only into the buffer being sealed, and
 * come back wrapped in Secret. The non-secret `extra` members of a token response are not
 * sealed here: what is worth keeping of them goes to the link's metadata.
 */

export type TokenSetLink = Pick<LinkRecord, 'id' | 'tenantId' | 'providerId'>;

const TOKEN_SET_FIELD = 'token_set';
const FORMAT_VERSION = 1;

/** The identity a link's token set is sealed under. */
export function tokenSetIdentity(link: TokenSetLink): SealIdentity {
  return {
    tenant: link.tenantId,
    link: link.id,
    provider: link.providerId,
    field: TOKEN_SET_FIELD,
  };
}

/**
 * Seals a token set for `link`. `previous` is the link's current record (its data key is reused),
 * or null for a new link. Rejects key_service_unavailable when no key can be had: nothing is sealed.
 */
export async function sealTokenSet(
  vault: Vault,
  link: TokenSetLink,
  tokens: TokenSet,
  previous: SealedRecord | null,
): Promise<SealedRecord> {
  const plaintext = Buffer.from(
    JSON.stringify({
      v: FORMAT_VERSION,
      access_token: tokens.accessToken.reveal(),
      refresh_token: tokens.refreshToken?.reveal() ?? null,
      id_token: tokens.idToken?.reveal() ?? null,
      token_type: tokens.tokenType,
      expires_at_ms: tokens.expiresAtMs,
      scopes: tokens.scopes,
    }),
    'utf8',
  );
  try {
    return await vault.seal(tokenSetIdentity(link), plaintext, previous);
  } finally {
    plaintext.fill(0);
  }
}

/** Opens `link`'s token set. Rejects sealed_record_invalid when the record does not open or decode under this link. */
export async function openTokenSet(
  vault: Vault,
  link: TokenSetLink,
  record: SealedRecord,
): Promise<TokenSet> {
  const plaintext = await vault.open(tokenSetIdentity(link), record);
  let parsed: unknown;
  try {
    parsed = JSON.parse(plaintext.toString('utf8'));
  } catch {
    throw malformed();
  } finally {
    plaintext.fill(0);
  }
  return decodeTokenSet(parsed);
}

function malformed(): LinkvaultError {
  return new LinkvaultError('sealed_record_invalid', {
    detail: 'the sealed token set has an unexpected shape',
  });
}

function optionalString(value: unknown): string | null {
  if (value === null) return null;
  if (typeof value === 'string' && value !== '') return value;
  throw malformed();
}

function decodeTokenSet(value: unknown): TokenSet {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw malformed();
  const v = value as Record<string, unknown>;
  if (v.v !== FORMAT_VERSION) throw malformed();
  if (typeof v.access_token !== 'string' || v.access_token === '') throw malformed();
  const refreshToken = optionalString(v.refresh_token);
  const idToken = optionalString(v.id_token);
  if (typeof v.token_type !== 'string' || v.token_type === '') throw malformed();
  if (
    v.expires_at_ms !== null &&
    (typeof v.expires_at_ms !== 'number' || !Number.isFinite(v.expires_at_ms))
  )
    throw malformed();
  if (
    v.scopes !== null &&
    (!Array.isArray(v.scopes) || v.scopes.some((s) => typeof s !== 'string'))
  )
    throw malformed();
  return {
    accessToken: new Secret(v.access_token),
    refreshToken: refreshToken === null ? null : new Secret(refreshToken),
    idToken: idToken === null ? null : new Secret(idToken),
    tokenType: v.token_type,
    expiresAtMs: v.expires_at_ms as number | null,
    scopes: v.scopes === null ? null : Object.freeze([...(v.scopes as string[])]),
    extra: {},
  };
}

/**
 * Opened token sets of the release path, so that a link released many times a second is decrypted
 * once, not on every release. An entry is found by the link id and serves only the very sealed record
 * object it was opened from (the store hands out one parsed record per link version, so a refresh, a
 * rotation or a revocation — a new version — never meets an old entry), under the same identity. It is
 * dropped `ttlMs` after it was opened, whether used or not (swept as entries are added), so plaintext
 * lives in memory no longer than the vault's unwrapped data keys do, which open it anyway.
 */
export interface OpenedTokenCache {
  open(vault: Vault, link: TokenSetLink, record: SealedRecord): Promise<TokenSet>;
}

interface OpenedEntry {
  readonly record: SealedRecord;
  readonly tenantId: string;
  readonly providerId: string;
  readonly tokens: Promise<TokenSet>;
  readonly untilMs: number;
}

export function createOpenedTokenCache(options: {
  readonly ttlMs: number;
  readonly maxEntries: number;
  readonly now: () => number;
}): OpenedTokenCache {
  const { ttlMs, maxEntries, now } = options;
  const entries = new Map<string, OpenedEntry>();
  let sweptAtMs = 0;

  function sweep(at: number): void {
    if (at - sweptAtMs < ttlMs) return;
    sweptAtMs = at;
    for (const [id, entry] of entries) if (entry.untilMs <= at) entries.delete(id);
  }

  return {
    open(vault, link, record) {
      const at = now();
      const hit = entries.get(link.id);
      if (
        hit !== undefined &&
        hit.record === record &&
        hit.untilMs > at &&
        hit.tenantId === link.tenantId &&
        hit.providerId === link.providerId
      )
        return hit.tokens;
      if (ttlMs <= 0 || maxEntries <= 0) return openTokenSet(vault, link, record);
      sweep(at);
      if (entries.size >= maxEntries && !entries.has(link.id)) {
        const oldest = entries.keys().next().value;
        if (oldest !== undefined) entries.delete(oldest);
      }
      const tokens = openTokenSet(vault, link, record).then((t) => Object.freeze(t));
      const entry: OpenedEntry = {
        record,
        tenantId: link.tenantId,
        providerId: link.providerId,
        tokens,
        untilMs: at + ttlMs,
      };
      entries.delete(link.id);
      entries.set(link.id, entry);
      // A failure is not kept: the next release tries again (and sees the key service's answer).
      tokens.catch(() => {
        if (entries.get(link.id) === entry) entries.delete(link.id);
      });
      return tokens;
    },
  };
}
