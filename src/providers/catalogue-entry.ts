/*
 * The parts of a validated catalogue entry (ProviderEntry, in catalogue.ts). The JSON is snake_case
 * like the public API; these types are its camelCase mirror, converted once by parseProviderEntry
 * so that no other file reads the raw JSON.
 */

/**
 * How a token is revoked at the provider.
 * - rfc7009             RFC 7009 POST to revocation.url with token + token_type_hint, client authenticated
 * - none                the provider offers no revocation (revoke() resolves 'unsupported')
 * - github_grant        DELETE revocation.url ({client_id} substituted) with Basic client auth and JSON {access_token}
 * - slack_auth_revoke   POST revocation.url (auth.revoke) with the token as a Bearer; 200 ok:true
 * - intercom_uninstall  POST revocation.url with the access token as a Bearer (uninstalls the app from the workspace)
 */
export type RevocationStyle =
  'rfc7009' | 'none' | 'github_grant' | 'slack_auth_revoke' | 'intercom_uninstall';
export const REVOCATION_STYLES: readonly RevocationStyle[] = [
  'rfc7009',
  'none',
  'github_grant',
  'slack_auth_revoke',
  'intercom_uninstall',
];

/**
 * Token-endpoint answer quirks handled by the OAuth adapter.
 * - standard    RFC 6749 §5 JSON
 * - slack       HTTP 200 with `ok:false` on errors; token_type `bot`/`user`
 * - github      form-encoded answers unless `Accept: application/json`; errors may come as 200 with `error`
 * - jwt_expiry  standard, but no `expires_in`: the expiry is read from the access token's JWT `exp` (monday OAuth 2.1)
 */
export type TokenResponseStyle = 'standard' | 'slack' | 'github' | 'jwt_expiry';
export const TOKEN_RESPONSE_STYLES: readonly TokenResponseStyle[] = [
  'standard',
  'slack',
  'github',
  'jwt_expiry',
];

export type TokenEndpointAuthMethod = 'client_secret_basic' | 'client_secret_post';

/** Where the provider's stable account id comes from (used to recognise a reconnect of the same account). */
export type AccountIdSource =
  | { readonly from: 'id_token_claim'; readonly path: string }
  | { readonly from: 'token_response'; readonly path: string }
  | { readonly from: 'none' };

export interface TemplateVariable {
  readonly name: string;
  readonly description: string;
  /** Anchored, case-insensitive pattern (source text, as written in the catalogue); null when `values` is used. */
  readonly pattern: string | null;
  /** Closed set: accepted value → text substituted into URLs; null when `pattern` is used. */
  readonly values: Readonly<Record<string, string>> | null;
  /** Used when the connect request gives no value; null = the variable is required. */
  readonly default: string | null;
  /** 'host': lower-cased, and an `https://host[/]` form is accepted and reduced to the host. */
  readonly format: 'host' | 'text';
  /** Name of the connect-request parameter carrying the value, or null. */
  readonly sessionParameter: string | null;
  /** Name of the provider callback query parameter carrying the value (Zoho `accounts-server`), or null. */
  readonly callbackParameter: string | null;
}

export interface ProviderPrivacy {
  /** Where the end user removes the app's access; may contain template variables; null when no stable URL is known. */
  readonly settingsUrl: string | null;
  readonly instructions: string;
  readonly policyUrl: string;
}
