import { LinkvaultError } from '../errors.js';
import type { SealIdentity } from './key-provider.js';

/**
 * The canonical form of a SealIdentity: JSON with the four members in sorted key order and
 * nothing else, so the same identity always yields the same bytes. It is the AES-GCM AAD of
 * both the sealed record and the local provider's wrapped data key; a record presented under
 * any other identity fails authentication (the same binding Vault's barrier gets from using
 * the storage path as AAD).
 */
export function canonicalIdentity(identity: SealIdentity): string {
  for (const name of ['field', 'link', 'provider', 'tenant'] as const) {
    const value: unknown = identity[name];
    if (typeof value !== 'string' || value === '') {
      // A programming error, not bad input from outside: an empty member would let two
      // different records share an identity.
      throw new LinkvaultError('internal_error', {
        detail: `seal identity member "${name}" must be a non-empty string`,
      });
    }
  }
  return JSON.stringify({
    field: identity.field,
    link: identity.link,
    provider: identity.provider,
    tenant: identity.tenant,
  });
}

/** The identity as a plain string map, e.g. for a KMS EncryptionContext. */
export function identityContext(identity: SealIdentity): Record<string, string> {
  canonicalIdentity(identity);
  return {
    field: identity.field,
    link: identity.link,
    provider: identity.provider,
    tenant: identity.tenant,
  };
}
