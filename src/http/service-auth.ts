import type { KeyObject } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import jwt from 'jsonwebtoken';
import type { JwtAlg, ServiceDefinition, ServiceRole } from '../auth/services-file.js';
import type { TenantScoped } from '../auth/tenant-scope.js';
import { LinkvaultError } from '../errors.js';
import { clientAddressOf, createRateLimit } from './rate-limit.js';

/**
 * Service authentication: a backend service proves itself with a short-lived JWT signed by one of
 * its registered keys (docs/api.md, "Services file"). Every failure is the same 401 `unauthorized` with a
 * generic detail: which check failed goes nowhere near the caller (no oracle), and the token is
 * never echoed or logged.
 *
 * Failures are also counted per client address (rate-limit.ts, the same address rules as the
 * connect limiter): once an address has spent its share, every request from it answers 429
 * rate_limited with Retry-After before any token is verified, so a caller guessing keys (or
 * flooding the verifier with signatures to check) is slowed, while valid callers elsewhere are not.
 */

/** What `authenticate` leaves in `res.locals.service`. */
export interface AuthenticatedService extends TenantScoped {
  readonly id: string;
  readonly roles: ReadonlySet<ServiceRole>;
}

export interface ServiceAuthOptions {
  readonly services: readonly ServiceDefinition[];
  /** Required `aud`. */
  readonly audience: string;
  /** Clock in ms since epoch (tests move it). */
  readonly now?: () => number;
  /** Upper bound on the whole bearer value, checked before any parsing. */
  readonly maxTokenBytes?: number;
  /** Verified tokens remembered until they expire (default 10 000; 0 turns the cache off). */
  readonly verifiedCacheSize?: number;
  /**
   * Service-auth failures one client address may make per minute (also the burst) before its
   * requests answer 429 (default DEFAULT_AUTH_FAILURES_PER_MINUTE). Per replica.
   */
  readonly failuresPerMinute?: number;
  /** Proxies of ours in front whose X-Forwarded-For entry names the client (rate-limit.ts; default 0). */
  readonly trustedProxyHops?: number;
}

export interface ServiceAuth {
  /** Verifies the bearer JWT; sets `res.locals.service` or fails with 401 `unauthorized`. */
  readonly authenticate: RequestHandler;
  /** The same check without Express: the service an Authorization header value proves, or null. Never throws. */
  verify(authorization: string | undefined): AuthenticatedService | null;
  /** As verify, but says why a token was refused (for the log only: see unauthorized()). Never throws. */
  check(authorization: string | undefined): AuthenticatedService | ServiceAuthRejection;
  /**
   * check() for a whole request, with the failure limit of its client address: throws 429
   * rate_limited (LinkvaultError, with Retry-After) when the address has spent its failures,
   * and counts a refusal against it. What `authenticate` and the token fast path call.
   */
  checkRequest(
    req: Pick<IncomingMessage, 'headers' | 'socket'>,
  ): AuthenticatedService | ServiceAuthRejection;
  /** After `authenticate`: passes when the service holds `role`, else 403 `forbidden`. */
  requireRole(role: ServiceRole): RequestHandler;
}

/** Why a service token was refused: logged at debug with the request id, never sent (no oracle). */
export type ServiceAuthFailure =
  | 'missing_authorization'
  | 'not_bearer'
  | 'token_too_large'
  | 'malformed'
  | 'crit_header'
  | 'typ_not_accepted'
  | 'missing_kid_or_alg'
  | 'unknown_kid'
  | 'alg_mismatch'
  | 'bad_signature'
  | 'missing_claim'
  | 'lifetime_too_long'
  | 'expired'
  | 'issued_in_future'
  | 'not_yet_valid'
  | 'wrong_issuer'
  | 'wrong_audience'
  /** Not a 401: the client address spent its share of failures; the answer is 429 rate_limited. */
  | 'too_many_failures';

/**
 * The cause of a 401 unauthorized: problem.ts logs a 4xx's cause at debug with the request id
 * and never sends it, so the body stays the same whatever failed. It names the reason, and the
 * kid and service when the token named a registered key; never any part of the token. No stack:
 * it is a verdict, not a fault.
 */
export class ServiceAuthRejection extends Error {
  readonly reason: ServiceAuthFailure;
  readonly kid: string | undefined;
  readonly service_id: string | undefined;
  constructor(reason: ServiceAuthFailure, kid?: string, serviceId?: string) {
    super(`service token refused: ${reason}`);
    this.name = 'ServiceAuthRejection';
    this.reason = reason;
    // An unknown kid is the caller's text: logged only when it looks like a kid.
    this.kid = kid !== undefined && SAFE_KID.test(kid) ? kid : undefined;
    this.service_id = serviceId;
    this.stack = `${this.name}: ${this.message}`;
  }

  /** What the log may carry (log.ts serializeError): the verdict, never the token. */
  logFields(): Record<string, string | undefined> {
    return { reason: this.reason, kid: this.kid, service_id: this.service_id };
  }
}

const SAFE_KID = /^[A-Za-z0-9._:-]{1,64}$/;

function rejected(reason: ServiceAuthFailure, kid?: string, serviceId?: string) {
  return new ServiceAuthRejection(reason, kid, serviceId);
}

/** The cause of every failure-limit 429: one verdict, nothing of the request in it. */
const TOO_MANY_FAILURES = rejected('too_many_failures');

/** The one 401 for service auth: the same body whatever failed; `rejection` goes to the log only. */
export function unauthorized(rejection: ServiceAuthRejection): LinkvaultError {
  return new LinkvaultError('unauthorized', { detail: UNAUTHORIZED_DETAIL, cause: rejection });
}

function isFiniteNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}

/** `typ` values accepted in the JOSE header, lower-cased (RFC 7515 §4.1.9: compared case-insensitively). */
const ACCEPTED_TYP: ReadonlySet<string> = new Set(['jwt', 'application/jwt']);

/** RFC 8725 §3.10: a JWT that has to be accepted for 5 minutes at most keeps replay short. */
export const MAX_SERVICE_JWT_LIFETIME_SECONDS = 300;
const CLOCK_TOLERANCE_SECONDS = 30;
const DEFAULT_MAX_TOKEN_BYTES = 8 * 1024;
/** The JOSE header is a handful of members; anything bigger is not ours. */
const MAX_HEADER_SEGMENT_CHARS = 1024;
const BASE64URL = /^[A-Za-z0-9_-]+$/;
/** The 401 detail: the same whatever failed (no oracle). */
export const UNAUTHORIZED_DETAIL = 'A valid service token is required';
/** RFC 6750 §3: a 401 for bearer auth names the scheme. */
export const WWW_AUTHENTICATE = 'Bearer error="invalid_token"';
const DEFAULT_VERIFIED_CACHE_SIZE = 10_000;
/** LINKVAULT_RATE_LIMIT_PER_MINUTE's default: the same share as connect starts. */
export const DEFAULT_AUTH_FAILURES_PER_MINUTE = 600;

interface KeyEntry {
  readonly service: AuthenticatedService;
  readonly alg: JwtAlg;
  readonly key: KeyObject;
}

/** Reads the `res.locals.service` that `authenticate` set; throws (500) when a route forgot `authenticate`. */
export function authenticatedService(res: Response): AuthenticatedService {
  const service = res.locals.service as AuthenticatedService | undefined;
  if (!service)
    throw new LinkvaultError('internal_error', {
      cause: new Error('route is missing authenticate'),
    });
  return service;
}

export function createServiceAuth(options: ServiceAuthOptions): ServiceAuth {
  const now = options.now ?? Date.now;
  const maxTokenBytes = options.maxTokenBytes ?? DEFAULT_MAX_TOKEN_BYTES;
  const audience = options.audience;
  const cacheSize = options.verifiedCacheSize ?? DEFAULT_VERIFIED_CACHE_SIZE;
  /**
   * Backends reuse one JWT for its (≤ 300 s) lifetime; re-verifying the same bytes on every call
   * is most of this middleware's cost. A token is remembered only after it fully verified, keyed
   * by its exact text, and only until the instant verification itself would start failing
   * (exp + clock tolerance). Keys are fixed for the life of the process, so nothing else can
   * change the verdict. Insertion order evicts the oldest entry when full.
   */
  const verified = new Map<string, { service: AuthenticatedService; untilMs: number }>();

  // kid → key, built once. kids are unique across services (services-file.ts enforces it), so a
  // kid names exactly one key of exactly one service: the only key and alg we will ever try.
  const byKid = new Map<string, KeyEntry>();
  for (const def of options.services) {
    const service: AuthenticatedService = Object.freeze({
      id: def.id,
      roles: def.roles,
      tenants: def.tenants,
    });
    for (const key of def.keys.values())
      byKid.set(key.kid, { service, alg: key.alg, key: key.key });
  }

  function reject(next: NextFunction, res: Response, rejection: ServiceAuthRejection): void {
    res.setHeader('WWW-Authenticate', WWW_AUTHENTICATE);
    next(unauthorized(rejection));
  }

  /** The service the bearer proves, or why not. Never throws. */
  function check(authorization: string | undefined): AuthenticatedService | ServiceAuthRejection {
    if (typeof authorization !== 'string') return rejected('missing_authorization');
    // Size first: nothing below runs on an attacker's megabyte.
    if (authorization.length > maxTokenBytes + 7) return rejected('token_too_large');
    if (authorization.length < 8 || authorization.slice(0, 7).toLowerCase() !== 'bearer ')
      return rejected('not_bearer');
    const token = authorization.slice(7).trim();
    if (Buffer.byteLength(token) > maxTokenBytes) return rejected('token_too_large');
    const remembered = verified.get(token);
    if (remembered) {
      if (now() < remembered.untilMs) return remembered.service;
      verified.delete(token);
    }

    const firstDot = token.indexOf('.');
    if (firstDot <= 0 || firstDot > MAX_HEADER_SEGMENT_CHARS) return rejected('malformed');
    const headerSegment = token.slice(0, firstDot);
    if (!BASE64URL.test(headerSegment)) return rejected('malformed');

    const header = decodeHeader(headerSegment);
    if (!header) return rejected('malformed');
    // RFC 7515 §4.1.11: we implement no header extensions, so a `crit` header must be rejected.
    if ('crit' in header) return rejected('crit_header');
    // RFC 8725 §3.11 (explicit typing): a JWT minted for another purpose (an OAuth access token,
    // "at+jwt"; a logout or DPoP proof) is not a service assertion, even when the service's key
    // signed it. Absent or "JWT" (RFC 7519 §5.1, compared case-insensitively) only.
    if (header.typ !== undefined && !ACCEPTED_TYP.has(String(header.typ).toLowerCase()))
      return rejected('typ_not_accepted');
    // jku / jwk / x5u / x5c are deliberately never read: the key comes only from our own kid
    // (RFC 8725 §3.10 — never let the token choose its verification key).
    const { kid, alg } = header;
    if (typeof kid !== 'string' || typeof alg !== 'string') return rejected('missing_kid_or_alg');
    const entry = byKid.get(kid);
    if (!entry) return rejected('unknown_kid', kid);
    // RFC 8725 §3.1: the algorithm is pinned to the key; `none` and HS256-with-a-public-key can never match.
    if (alg !== entry.alg) return rejected('alg_mismatch', kid, entry.service.id);

    let payload: unknown;
    try {
      // Signature only: every claim is checked below, by us, so that each failure has its own
      // reason without reading the library's message text.
      payload = jwt.verify(token, entry.key, {
        algorithms: [entry.alg],
        ignoreExpiration: true,
        ignoreNotBefore: true,
      });
    } catch {
      return rejected('bad_signature', kid, entry.service.id);
    }
    const reason = checkClaims(payload, entry.service.id, Math.floor(now() / 1000));
    if (reason !== null) return rejected(reason, kid, entry.service.id);
    const { exp } = payload as { exp: number };
    if (cacheSize > 0) {
      if (verified.size >= cacheSize) verified.delete(verified.keys().next().value as string);
      verified.set(token, {
        service: entry.service,
        untilMs: (exp + CLOCK_TOLERANCE_SECONDS) * 1000,
      });
    }
    return entry.service;
  }

  /** The registered claims (docs/service-auth.md); null when they all hold. */
  function checkClaims(
    payload: unknown,
    serviceId: string,
    nowSeconds: number,
  ): ServiceAuthFailure | null {
    if (typeof payload !== 'object' || payload === null) return 'malformed';
    const { exp, iat, nbf, iss, aud } = payload as Record<string, unknown>;
    // exp and iat are required; the lifetime is bounded so a leaked token dies quickly.
    if (!isFiniteNumber(exp) || !isFiniteNumber(iat)) return 'missing_claim';
    if (exp <= iat || exp - iat > MAX_SERVICE_JWT_LIFETIME_SECONDS) return 'lifetime_too_long';
    if (exp + CLOCK_TOLERANCE_SECONDS <= nowSeconds) return 'expired';
    if (iat > nowSeconds + CLOCK_TOLERANCE_SECONDS) return 'issued_in_future';
    if (nbf !== undefined && (!isFiniteNumber(nbf) || nbf > nowSeconds + CLOCK_TOLERANCE_SECONDS))
      return 'not_yet_valid';
    if (iss !== serviceId) return 'wrong_issuer';
    // RFC 7519 §4.1.3 lets aud be a list; a token addressed to linkvault *and* other audiences
    // is one any of them could replay here, so only linkvault's audience, alone, is accepted.
    const audiences = Array.isArray(aud) ? aud : [aud];
    if (audiences.length !== 1 || audiences[0] !== audience) return 'wrong_audience';
    return null;
  }

  const failures = createRateLimit({
    perMinute: options.failuresPerMinute ?? DEFAULT_AUTH_FAILURES_PER_MINUTE,
    ...(options.now === undefined ? {} : { now: options.now }),
  });
  const trustedProxyHops = options.trustedProxyHops ?? 0;

  function checkRequest(
    req: Pick<IncomingMessage, 'headers' | 'socket'>,
  ): AuthenticatedService | ServiceAuthRejection {
    const client = clientAddressOf(req, trustedProxyHops);
    // Before any verification: an address that has spent its failures gets no more guesses
    // (429; the reason goes to the debug log with the request id).
    failures.refuseWhenEmpty(client, TOO_MANY_FAILURES);
    const outcome = check(req.headers.authorization);
    if (outcome instanceof ServiceAuthRejection) failures.spend(client);
    return outcome;
  }

  function verify(authorization: string | undefined): AuthenticatedService | null {
    const outcome = check(authorization);
    return outcome instanceof ServiceAuthRejection ? null : outcome;
  }

  const authenticate: RequestHandler = (req: Request, res: Response, next: NextFunction) => {
    let outcome: AuthenticatedService | ServiceAuthRejection;
    try {
      outcome = checkRequest(req);
    } catch (err) {
      return next(err);
    }
    if (outcome instanceof ServiceAuthRejection) return reject(next, res, outcome);
    res.locals.service = outcome;
    next();
  };

  function requireRole(role: ServiceRole): RequestHandler {
    return (_req: Request, res: Response, next: NextFunction) => {
      const service = res.locals.service as AuthenticatedService | undefined;
      if (!service) return reject(next, res, rejected('missing_authorization'));
      if (!service.roles.has(role)) return next(forbidden(role));
      next();
    };
  }

  return { authenticate, requireRole, verify, check, checkRequest };
}

/** 403 for a service without `role`. */
export function forbidden(role: ServiceRole): LinkvaultError {
  return new LinkvaultError('forbidden', { detail: `This route requires the "${role}" role` });
}

function decodeHeader(segment: string): Record<string, unknown> | null {
  try {
    const parsed: unknown = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return null;
    return parsed as Record<string, unknown>;
  } catch {
    return null;
  }
}
