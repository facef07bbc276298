import { Router, type NextFunction, type Request, type Response } from 'express';
import { isLinkvaultError, LinkvaultError, invalidRequest } from '../errors.js';
import type { TokenRelease } from '../links/release/token-release.js';
import { authenticatedService, type AuthenticatedService, type ServiceAuth } from './service-auth.js';

/**
 * POST /v1/links/:id/token — the hot path. Lean on purpose: the service keys were parsed at
 * start (service-auth.ts), the body is checked by hand (no schema compiled per request), and the
 * reply is one small object serialised once.
 */

export interface TokenRouterDeps {
  readonly auth: ServiceAuth;
  readonly release: TokenRelease;
}

export const MAX_MIN_VALIDITY_SECONDS = 86_400;
const MAX_SCOPES = 100;
const MAX_SCOPE_CHARS = 256;
const MAX_ID_CHARS = 256;
/** RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ). */
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;
const BODY_MEMBERS = new Set(['scopes', 'min_validity_seconds', 'force_refresh']);

export interface TokenRequestBody {
  readonly scopes: readonly string[] | null;
  readonly minValiditySeconds: number | undefined;
  readonly forceRefresh: boolean;
}

/** A caller-chosen member name, made safe to echo (short, no markup or control characters). */
export function safeName(key: string): string {
  return key.slice(0, 64).replace(/[^A-Za-z0-9_.-]/g, '?');
}

/** Strict: an absent body is `{}`; unknown members, wrong types and out-of-range values are 400 invalid_request. */
function parseTokenRequestBody(body: unknown): TokenRequestBody {
  if (body === undefined) return { scopes: null, minValiditySeconds: undefined, forceRefresh: false };
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw invalidRequest('body', 'The body must be a JSON object');
  const b = body as Record<string, unknown>;
  for (const key of Object.keys(b)) if (!BODY_MEMBERS.has(key)) throw invalidRequest(safeName(key), 'Unknown member in the request body');

  let scopes: string[] | null = null;
  if (b.scopes !== undefined) {
    if (!Array.isArray(b.scopes) || b.scopes.length === 0 || b.scopes.length > MAX_SCOPES) throw invalidRequest('scopes', `scopes must be an array of 1-${MAX_SCOPES} scope strings`);
    for (const s of b.scopes) {
      if (typeof s !== 'string' || s.length > MAX_SCOPE_CHARS || !SCOPE_TOKEN.test(s)) throw invalidRequest('scopes', 'each scope must be a non-empty scope token (RFC 6749 §3.3)');
    }
    scopes = [...new Set(b.scopes as string[])];
  }

  let minValiditySeconds: number | undefined;
  if (b.min_validity_seconds !== undefined) {
    const v = b.min_validity_seconds;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > MAX_MIN_VALIDITY_SECONDS) throw invalidRequest('min_validity_seconds', `min_validity_seconds must be an integer from 0 to ${MAX_MIN_VALIDITY_SECONDS}`);
    minValiditySeconds = v;
  }

  let forceRefresh = false;
  if (b.force_refresh !== undefined) {
    if (typeof b.force_refresh !== 'boolean') throw invalidRequest('force_refresh', 'force_refresh must be a boolean');
    forceRefresh = b.force_refresh;
  }
  return { scopes, minValiditySeconds, forceRefresh };
}

/** RFC 6750 names the scheme "Bearer"; other types pass through as the provider said them. */
function displayTokenType(tokenType: string): string {
  return tokenType === 'bearer' ? 'Bearer' : tokenType;
}

/** Every 503 tells the caller when to come back. */
function withRetryAfter(err: unknown): unknown {
  if (isLinkvaultError(err) && err.status === 503 && err.retryAfterSeconds === undefined) {
    return new LinkvaultError(err.code, { detail: err.detail, cause: err.cause ?? err, retryAfterSeconds: 1, extra: err.extra });
  }
  return err;
}

/** The route template, as metrics and logs label it. */
export const TOKEN_ROUTE = '/v1/links/:id/token';

/**
 * The route's work once the caller is authenticated and holds `tokens`: checks the id and the
 * body, releases, and serialises the answer. Shared by the Express route and the fast path
 * (token-fast-path.ts) so that both answer identically. Rejects LinkvaultError (503s carry Retry-After).
 */
export async function answerTokenRequest(release: TokenRelease, service: AuthenticatedService, linkId: string | undefined, body: unknown, requestId: string): Promise<string> {
  try {
    if (typeof linkId !== 'string' || linkId.length === 0 || linkId.length > MAX_ID_CHARS) throw new LinkvaultError('link_not_found');
    const parsed = parseTokenRequestBody(body);
    const released = await release.release({
      service,
      linkId,
      scopes: parsed.scopes,
      ...(parsed.minValiditySeconds === undefined ? {} : { minValiditySeconds: parsed.minValiditySeconds }),
      forceRefresh: parsed.forceRefresh,
      requestId,
    });
    // The one place an access token is revealed: into this response body.
    return JSON.stringify({
      access_token: released.accessToken.reveal(),
      token_type: displayTokenType(released.tokenType),
      expires_at: released.expiresAtMs === null ? null : new Date(released.expiresAtMs).toISOString(),
      scopes: released.scopes,
      metadata: released.metadata,
    });
  } catch (err) {
    throw withRetryAfter(err);
  }
}

export function createTokenRouter(deps: TokenRouterDeps): Router {
  const router = Router();
  const { auth, release } = deps;

  router.post(TOKEN_ROUTE, auth.authenticate, auth.requireRole('tokens'), async (req: Request, res: Response, next: NextFunction) => {
    // Token-bearing: never stored by a cache, whatever the outcome (RFC 6749 §5.1).
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('Pragma', 'no-cache');
    try {
      const id = req.params.id;
      const json = await answerTokenRequest(release, authenticatedService(res), typeof id === 'string' ? id : undefined, req.body, req.requestId);
      res.status(200).type('application/json').send(json);
    } catch (err) {
      next(err);
    }
  });

  return router;
}
