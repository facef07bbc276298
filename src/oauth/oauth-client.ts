import type { Secret } from '../secret.js';

/**
 * The OAuthClient port: everything linkvault asks of an authorization server. The one adapter
 * (openid-oauth-client.ts) is the only file that imports openid-client; provider quirks live
 * beside it in oauth/. The domain never sees a library error: every method rejects with a
 * LinkvaultError whose code says what happened, classified by the RFC 6749 error code, never
 * by message text:
 *   - reauth_required        the provider answered `invalid_grant` (refresh token dead: user must reconnect)
 *   - provider_misconfigured `invalid_client` / `unauthorized_client`: our client configuration, not the user's
 *   - provider_unavailable   timeout, network failure, 5xx, 429 (retryAfterSeconds set from Retry-After).
 *                            `extra.maybe_delivered === true` when the request may have reached the
 *                            provider before the answer was lost (it may already have rotated the refresh token)
 *   - provider_error         any other error answer (4xx with another RFC 6749 code)
 *   - invalid_token_response a 2xx answer that is not an acceptable token response
 */

/** A token set in memory. Secrets stay wrapped until the edge that sends them. */
export interface TokenSet {
  readonly accessToken: Secret;
  readonly refreshToken: Secret | null;
  readonly idToken: Secret | null;
  /** Lower-cased token type; 'bearer' after validation. */
  readonly tokenType: string;
  /** Absolute expiry of the access token, or null when the provider gave none (does not expire / unknown). */
  readonly expiresAtMs: number | null;
  /** Scopes the provider reported as granted, or null when it did not say. */
  readonly scopes: readonly string[] | null;
  /** Non-secret members of the token response (instance_url, api_domain, hub_id, ...) for metadata capture. */
  readonly extra: Readonly<Record<string, unknown>>;
}
