import { timingSafeEqual } from 'node:crypto';
import type * as client from 'openid-client';
import { LinkvaultError } from '../errors.js';
import type { ProviderEntry } from '../providers/catalogue.js';
import { Secret } from '../secret.js';
import type { TokenSet } from './oauth-client.js';

/** Members of a token response that are never copied into TokenSet.extra (credential-looking, or already modelled). */
const MODELLED_MEMBERS = new Set([
  'access_token',
  'refresh_token',
  'id_token',
  'token_type',
  'expires_in',
  'scope',
  'ok',
]);
const SECRET_LOOKING = /token|secret|password|code|verifier|signature|webhook/i;

function isJsonObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function nonSecretMembers(value: Record<string, unknown>, top: boolean): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    if ((top && MODELLED_MEMBERS.has(key)) || SECRET_LOOKING.test(key)) continue;
    if (isJsonObject(v)) out[key] = nonSecretMembers(v, false);
    else if (Array.isArray(v)) out[key] = v.filter((x) => !isJsonObject(x) && !Array.isArray(x));
    else out[key] = v;
  }
  return out;
}

/** Reads `exp` from a JWT access token (monday OAuth 2.1), for refresh scheduling only: never trusted for security. */
function jwtExpiryMs(token: string): number | null {
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    const payload: unknown = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8'));
    const exp = isJsonObject(payload) ? payload.exp : undefined;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : null;
  } catch {
    return null;
  }
}

/**
 * The port's TokenSet from a token endpoint answer the quirks already normalised. Only Bearer
 * tokens are accepted (any case); anything else (dpop, mac, ...) is invalid_token_response.
 */
export function readTokenSet(
  entry: ProviderEntry,
  response: client.TokenEndpointResponse,
): TokenSet {
  const tokenType = String(response.token_type ?? '').toLowerCase();
  if (tokenType !== 'bearer') {
    throw new LinkvaultError('invalid_token_response', {
      detail: `${entry.name} issued a token type other than Bearer`,
    });
  }
  if (typeof response.access_token !== 'string' || response.access_token.length === 0) {
    throw new LinkvaultError('invalid_token_response', {
      detail: `${entry.name} returned no access token`,
    });
  }
  let expiresAtMs: number | null = null;
  if (
    typeof response.expires_in === 'number' &&
    Number.isFinite(response.expires_in) &&
    response.expires_in > 0
  ) {
    expiresAtMs = Date.now() + response.expires_in * 1000;
  } else if (entry.tokenResponse === 'jwt_expiry') {
    expiresAtMs = jwtExpiryMs(response.access_token);
  }
  const scopes =
    typeof response.scope === 'string' ? response.scope.split(/[\s,]+/).filter(Boolean) : null;
  return Object.freeze({
    accessToken: new Secret(response.access_token),
    refreshToken:
      typeof response.refresh_token === 'string' && response.refresh_token.length > 0
        ? new Secret(response.refresh_token)
        : null,
    idToken:
      entry.issuer !== null && typeof response.id_token === 'string'
        ? new Secret(response.id_token)
        : null,
    tokenType,
    expiresAtMs,
    scopes: scopes ? Object.freeze(scopes) : null,
    extra: Object.freeze(nonSecretMembers({ ...response } as Record<string, unknown>, true)),
  });
}

/** The port's contract: refreshToken is null when the provider did not rotate (some echo the old one back). */
export function dropEchoedRefreshToken(tokens: TokenSet, sent: Secret): TokenSet {
  if (tokens.refreshToken === null) return tokens;
  const x = Buffer.from(tokens.refreshToken.reveal());
  const y = Buffer.from(sent.reveal());
  return x.length === y.length && timingSafeEqual(x, y)
    ? Object.freeze({ ...tokens, refreshToken: null })
    : tokens;
}
