import { timingSafeEqual } from 'node:crypto';
import type * as client from 'openid-client';
import { LinkvaultError } from '../errors.js';
import type { ProviderEntry } from '../providers/catalogue.js';
import type { AuthorizationChecks, EndpointVariables } from './oauth-client.js';

/*
 * Checks on the authorization request's redirect URI and on the authorization response, run
 * before the code is exchanged.
 *
 * Issuer (RFC 9207): for OIDC entries the expected issuer is the discovered one; an `iss` in the
 * authorization response must equal it, and is required when the metadata advertises
 * authorization_response_iss_parameter_supported. Plain OAuth 2.0 entries have no issuer
 * identifier: an `iss` they send cannot be checked and is ignored; the mix-up defence for them is
 * the per-provider redirect URI (RFC 9700 §4.4.2.2) that the connect routes use.
 */

/** RFC 6749 §4.1.2.1 and OIDC Core §3.1.2.6 authorization error codes; anything else is reported as 'unknown'. */
const AUTHORIZATION_ERROR_CODES = new Set([
  'invalid_request',
  'unauthorized_client',
  'access_denied',
  'unsupported_response_type',
  'invalid_scope',
  'server_error',
  'temporarily_unavailable',
  'interaction_required',
  'login_required',
  'account_selection_required',
  'consent_required',
  'invalid_request_uri',
  'invalid_request_object',
  'request_not_supported',
  'request_uri_not_supported',
  'registration_not_supported',
]);

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** The redirect URI must be an absolute http(s) URL without query or fragment; anything else is our own bug. */
export function checkRedirectUri(redirectUri: string): void {
  let parsed: URL;
  try {
    parsed = new URL(redirectUri);
  } catch {
    throw new LinkvaultError('internal_error', { detail: 'redirect URI is not an absolute URL' });
  }
  if (
    (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') ||
    parsed.hash ||
    parsed.search
  ) {
    throw new LinkvaultError('internal_error', {
      detail: 'redirect URI must be an http(s) URL without query or fragment',
    });
  }
}

/** RFC 9700 §4.7: exactly one `state`, equal (in constant time) to the flow's; else invalid_state. */
export function checkState(params: URLSearchParams, checks: AuthorizationChecks): void {
  const state = params.get('state');
  if (
    state === null ||
    params.getAll('state').length !== 1 ||
    !safeEqual(state, checks.state.reveal())
  ) {
    throw new LinkvaultError('invalid_state', {
      detail: 'The authorization response state does not match this flow',
    });
  }
}

/** Callback-supplied variables (Zoho accounts-server) must be the ones the caller merged in. */
export function checkCallbackVariables(
  entry: ProviderEntry,
  params: URLSearchParams,
  variables: EndpointVariables,
): void {
  for (const v of entry.templateVariables) {
    if (v.callbackParameter === null || !params.has(v.callbackParameter)) continue;
    const given = params
      .get(v.callbackParameter)!
      .trim()
      .toLowerCase()
      .replace(/^https:\/\//, '')
      .replace(/\/$/, '');
    if (variables[v.name]?.toLowerCase() !== given) {
      throw new LinkvaultError('invalid_request', {
        detail: `${v.callbackParameter} from the callback was not applied (resolve it with the catalogue and merge it into the endpoint variables)`,
        extra: { parameter: v.callbackParameter },
      });
    }
  }
}

/** RFC 9207 §2.4: compare `iss` before using anything else in the response, errors included. */
export function checkIssuer(
  entry: ProviderEntry,
  metadata: client.ServerMetadata,
  params: URLSearchParams,
  checks: AuthorizationChecks,
): void {
  if (checks.expectedIssuer === null) return;
  const iss = params.getAll('iss');
  if (iss.length > 1)
    throw new LinkvaultError('issuer_mismatch', {
      detail: 'The authorization response carries more than one iss',
    });
  const given = iss[0];
  if (given === undefined) {
    if (metadata.authorization_response_iss_parameter_supported === true) {
      throw new LinkvaultError('issuer_mismatch', {
        detail: `${entry.name} advertises iss in authorization responses, but this one has none`,
      });
    }
    return;
  }
  if (given !== checks.expectedIssuer || given !== metadata.issuer) {
    throw new LinkvaultError('issuer_mismatch', {
      detail: `The authorization response was not issued by ${entry.name}`,
    });
  }
}

/** An `error` in the authorization response becomes provider_denied with a registered code, else 'unknown'. */
export function checkProviderError(entry: ProviderEntry, params: URLSearchParams): void {
  const error = params.get('error');
  if (error === null) return;
  // Never echo the provider's text: only a registered code, else 'unknown'.
  const code = AUTHORIZATION_ERROR_CODES.has(error) ? error : 'unknown';
  throw new LinkvaultError('provider_denied', {
    detail: `${entry.name} answered the authorization request with an error`,
    extra: { provider_error: code },
  });
}
