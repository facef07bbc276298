import { isLinkvaultError, LinkvaultError } from '../errors.js';
import type { TokenRelease } from '../links/release/token-release.js';
import {
  jsonObject,
  onlyMembers,
  optionalBoolean,
  optionalInteger,
  optionalStringList,
} from './request-shape.js';
import type { AuthenticatedService } from './service-auth.js';

/**
 * POST /v1/links/:id/token, once the caller is authenticated and holds `tokens`: the one core
 * that the Express route (token-routes.ts) and the node:http fast path (token-fast-path.ts) both
 * call, so the two cannot answer differently. Lean on purpose, it is the hot path: the body is
 * checked by hand (no schema compiled per request) and the reply is serialised once.
 */

/** The route template, as metrics and logs label it. */
export const TOKEN_ROUTE = '/v1/links/:id/token';

export const MAX_MIN_VALIDITY_SECONDS = 86_400;
const MAX_SCOPES = 100;
const MAX_SCOPE_CHARS = 256;
const MAX_ID_CHARS = 256;
/** RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ). */
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;
const BODY_MEMBERS: ReadonlySet<string> = new Set([
  'scopes',
  'min_validity_seconds',
  'force_refresh',
]);

export interface TokenRequestBody {
  readonly scopes: readonly string[] | null;
  readonly minValiditySeconds: number | undefined;
  readonly forceRefresh: boolean;
}

function isScopeToken(s: string): boolean {
  return s.length <= MAX_SCOPE_CHARS && SCOPE_TOKEN.test(s);
}

/** Strict: an absent body is `{}`; unknown members, wrong types and out-of-range values are 400 invalid_request. */
export function parseTokenRequestBody(body: unknown): TokenRequestBody {
  if (body === undefined)
    return { scopes: null, minValiditySeconds: undefined, forceRefresh: false };
  const b = jsonObject(body, 'body');
  onlyMembers(b, BODY_MEMBERS);
  const scopes = optionalStringList(
    b,
    'scopes',
    MAX_SCOPES,
    isScopeToken,
    `scopes must be an array of 1-${MAX_SCOPES} scope strings`,
    'each scope must be a non-empty scope token (RFC 6749 §3.3)',
  );
  return {
    scopes: scopes === undefined ? null : [...new Set(scopes)],
    minValiditySeconds: optionalInteger(b, 'min_validity_seconds', 0, MAX_MIN_VALIDITY_SECONDS),
    forceRefresh: optionalBoolean(b, 'force_refresh') ?? false,
  };
}

let isoOfMs = NaN;
let isoOfText = '';

/** The ISO form of an expiry, kept for the last one: a link's token answers many releases. */
function isoOf(ms: number): string {
  if (ms !== isoOfMs) {
    isoOfText = new Date(ms).toISOString();
    isoOfMs = ms;
  }
  return isoOfText;
}

/** RFC 6750 names the scheme "Bearer"; other types pass through as the provider said them. */
function displayTokenType(tokenType: string): string {
  return tokenType === 'bearer' ? 'Bearer' : tokenType;
}

/** Every 503 tells the caller when to come back. */
function withRetryAfter(err: unknown): unknown {
  if (isLinkvaultError(err) && err.status === 503 && err.retryAfterSeconds === undefined) {
    return new LinkvaultError(err.code, {
      detail: err.detail,
      cause: err.cause ?? err,
      retryAfterSeconds: 1,
      extra: err.extra,
    });
  }
  return err;
}

/**
 * Checks the id and the body, releases, and serialises the answer. Rejects LinkvaultError (503s
 * carry Retry-After).
 */
export async function answerTokenRequest(
  release: TokenRelease,
  service: AuthenticatedService,
  linkId: string | undefined,
  body: unknown,
  requestId: string,
): Promise<string> {
  try {
    if (typeof linkId !== 'string' || linkId.length === 0 || linkId.length > MAX_ID_CHARS)
      throw new LinkvaultError('link_not_found');
    const parsed = parseTokenRequestBody(body);
    const released = await release.release({
      service,
      linkId,
      scopes: parsed.scopes,
      ...(parsed.minValiditySeconds === undefined
        ? {}
        : { minValiditySeconds: parsed.minValiditySeconds }),
      forceRefresh: parsed.forceRefresh,
      requestId,
    });
    // The one place an access token is revealed: into this response body.
    return JSON.stringify({
      access_token: released.accessToken.reveal(),
      token_type: displayTokenType(released.tokenType),
      expires_at: released.expiresAtMs === null ? null : isoOf(released.expiresAtMs),
      scopes: released.scopes,
      metadata: released.metadata,
    });
  } catch (err) {
    throw withRetryAfter(err);
  }
}
