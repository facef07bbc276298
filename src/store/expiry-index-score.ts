import type { LinkRecord } from '../links/link.js';

/**
 * Metadata key marking a refresh whose answer was lost after the provider may have rotated the
 * refresh token (set and cleared by links/refresh-coordinator.ts, which re-exports it). Defined
 * here because the expiry index files such a link as due at once.
 */
export const REFRESH_UNCERTAIN_KEY = 'linkvault.refresh_uncertain_since';

/**
 * Where the expiry index (Store.listLinksExpiringBefore) files a link, or null when it is not in
 * the index: an active link is filed under its access token's expiry, and under 0 (due at once)
 * while a lost refresh answer is to be retried — providers with a reuse grace period accept the old
 * refresh token again only for a short while. Links that are not active, or active with a token
 * that does not expire and no retry pending, are not filed. Both adapters derive the index from
 * this one function, inside the same atomic write as the link.
 */
export function expiryIndexScore(
  link: Pick<LinkRecord, 'status' | 'accessTokenExpiresAtMs' | 'metadata'>,
): number | null {
  if (link.status !== 'active') return null;
  if (Object.hasOwn(link.metadata, REFRESH_UNCERTAIN_KEY)) return 0;
  return link.accessTokenExpiresAtMs;
}
