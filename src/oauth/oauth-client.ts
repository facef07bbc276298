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

/** Per-link endpoint template variables (Salesforce login host, Zoho accounts server, Microsoft tenant). */
export type EndpointVariables = Readonly<Record<string, string>>;

export type RevocationOutcome = 'confirmed' | 'unsupported';

/**
 * The token-endpoint half of the port, used after a link exists (token release, revocation).
 * The authorization half (building the authorization URL, the code exchange) is added by the
 * connect flow in this same file.
 */
export interface OAuthTokenClient {
  /**
   * One refresh_token grant at the provider's token endpoint, endpoint variables applied, bounded by
   * the provider timeout and never retried (a retry could replay a rotated refresh token).
   * Resolves with the new token set; when the provider does not rotate, `refreshToken` is null and
   * the caller keeps the old one. Rejects as classified at the top of this file.
   */
  refresh(request: {
    readonly providerId: string;
    readonly endpointVariables: EndpointVariables;
    readonly refreshToken: Secret;
    readonly scopes?: readonly string[];
  }): Promise<TokenSet>;

  /**
   * Revokes one token at the provider in the catalogue's style (RFC 7009 with token_type_hint, or a
   * named custom style). Resolves 'confirmed' when the provider acknowledged it and 'unsupported'
   * when the catalogue says the provider offers no revocation. Rejects as classified above
   * (provider_unavailable for 503/timeouts: RFC 7009 §2.2.1, the token may still be alive).
   */
  revoke(request: {
    readonly providerId: string;
    readonly endpointVariables: EndpointVariables;
    readonly token: Secret;
    readonly tokenTypeHint: 'refresh_token' | 'access_token';
  }): Promise<RevocationOutcome>;
}

/** What the connect flow must remember between the redirect and the callback (kept server-side, sealed). */
export interface AuthorizationChecks {
  /** ≥128 random bits, single use. */
  readonly state: Secret;
  /** PKCE S256 verifier (RFC 7636), null only when the provider cannot do PKCE. */
  readonly codeVerifier: Secret | null;
  /** OIDC nonce, null for plain OAuth 2.0 providers. */
  readonly nonce: Secret | null;
  /** Issuer the response must come from (RFC 9207), null when the provider has no issuer identifier. */
  readonly expectedIssuer: string | null;
  /** The exact redirect URI sent, built from the configured public URL (never the Host header). */
  readonly redirectUri: string;
}

export interface AuthorizationStart {
  /** Where to send the browser. Carries state, challenge and nonce (protocol values), never a token. */
  readonly url: URL;
  readonly checks: AuthorizationChecks;
}

export interface CompletedAuthorization {
  readonly tokens: TokenSet;
  /** Validated ID token claims (signature, iss, aud, exp, nonce) for OIDC providers; null otherwise. */
  readonly idTokenClaims: Readonly<Record<string, unknown>> | null;
}

/** The whole port: the authorization half (connect) plus the token half (release, revoke). */
export interface OAuthClient extends OAuthTokenClient {
  /** Builds the authorization request: fresh state, PKCE S256 when the provider supports it, nonce for OIDC. */
  startAuthorization(request: {
    readonly providerId: string;
    readonly endpointVariables: EndpointVariables;
    readonly redirectUri: string;
    readonly scopes?: readonly string[];
  }): Promise<AuthorizationStart>;

  /**
   * Validates the authorization response (state, `iss` per RFC 9207 — required when the provider's
   * metadata advertises authorization_response_iss_parameter_supported — and provider `error=`
   * answers, which reject provider_denied with the escaped code in extra.provider_error) and exchanges the code
   * exactly once, with a timeout, never retried; validates the token response (access token, bearer
   * type, size cap, ID token + nonce for OIDC).
   */
  completeAuthorization(request: {
    readonly providerId: string;
    readonly endpointVariables: EndpointVariables;
    readonly callbackUrl: URL;
    readonly checks: AuthorizationChecks;
  }): Promise<CompletedAuthorization>;
}
