import type { KeyObject } from 'node:crypto';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import jwt from 'jsonwebtoken';
import type { JwtAlg, ServiceDefinition, ServiceRole } from '../auth/services-file.js';
import { LinkvaultError } from '../errors.js';

/**
 * Service authentication: a backend service proves itself with a short-lived JWT signed by one of
 * its registered keys (docs/api.md, "Services file"). Every failure is the same 401 `unauthorized` with a
 * generic detail: which check failed goes nowhere near the caller (no oracle), and the token is
 * never echoed or logged.
 */

/** What `authenticate` leaves in `res.locals.service`. */
export interface AuthenticatedService {
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
}

export interface ServiceAuth {
  /** Verifies the bearer JWT; sets `res.locals.service` or fails with 401 `unauthorized`. */
  readonly authenticate: RequestHandler;
  /** The same check without Express: the service an Authorization header value proves, or null. Never throws. */
  verify(authorization: string | undefined): AuthenticatedService | null;
  /** After `authenticate`: passes when the service holds `role`, else 403 `forbidden`. */
  requireRole(role: ServiceRole): RequestHandler;
}

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
    const service: AuthenticatedService = Object.freeze({ id: def.id, roles: def.roles });
    for (const key of def.keys.values())
      byKid.set(key.kid, { service, alg: key.alg, key: key.key });
  }

  function reject(next: NextFunction, res: Response): void {
    res.setHeader('WWW-Authenticate', WWW_AUTHENTICATE);
    next(new LinkvaultError('unauthorized', { detail: UNAUTHORIZED_DETAIL }));
  }

  /** The service the bearer proves, or null. Never throws. */
  function verify(authorization: string | undefined): AuthenticatedService | null {
    if (typeof authorization !== 'string') return null;
    // Size first: nothing below runs on an attacker's megabyte.
    if (authorization.length > maxTokenBytes + 7) return null;
    if (authorization.length < 8 || authorization.slice(0, 7).toLowerCase() !== 'bearer ')
      return null;
    const token = authorization.slice(7).trim();
    if (Buffer.byteLength(token) > maxTokenBytes) return null;
    const remembered = verified.get(token);
    if (remembered) {
      if (now() < remembered.untilMs) return remembered.service;
      verified.delete(token);
    }

    const firstDot = token.indexOf('.');
    if (firstDot <= 0 || firstDot > MAX_HEADER_SEGMENT_CHARS) return null;
    const headerSegment = token.slice(0, firstDot);
    if (!BASE64URL.test(headerSegment)) return null;

    const header = decodeHeader(headerSegment);
    if (!header) return null;
    // RFC 7515 §4.1.11: we implement no header extensions, so a `crit` header must be rejected.
    if ('crit' in header) return null;
    // jku / jwk / x5u / x5c are deliberately never read: the key comes only from our own kid
    // (RFC 8725 §3.10 — never let the token choose its verification key).
    const { kid, alg } = header;
    if (typeof kid !== 'string' || typeof alg !== 'string') return null;
    const entry = byKid.get(kid);
    // RFC 8725 §3.1: the algorithm is pinned to the key; `none` and HS256-with-a-public-key can never match.
    if (!entry || alg !== entry.alg) return null;

    const nowSeconds = Math.floor(now() / 1000);
    let payload: unknown;
    try {
      payload = jwt.verify(token, entry.key, {
        algorithms: [entry.alg],
        audience,
        issuer: entry.service.id,
        clockTolerance: CLOCK_TOLERANCE_SECONDS,
        clockTimestamp: nowSeconds,
      });
    } catch {
      return null;
    }
    if (typeof payload !== 'object' || payload === null) return null;
    const { exp, iat } = payload as { exp?: unknown; iat?: unknown };
    // exp and iat are required (docs/api.md); the lifetime is bounded so a leaked token dies quickly.
    if (
      typeof exp !== 'number' ||
      typeof iat !== 'number' ||
      !Number.isFinite(exp) ||
      !Number.isFinite(iat)
    )
      return null;
    if (exp - iat > MAX_SERVICE_JWT_LIFETIME_SECONDS || exp <= iat) return null;
    if (iat > nowSeconds + CLOCK_TOLERANCE_SECONDS) return null;
    if (cacheSize > 0) {
      if (verified.size >= cacheSize) verified.delete(verified.keys().next().value as string);
      verified.set(token, {
        service: entry.service,
        untilMs: (exp + CLOCK_TOLERANCE_SECONDS) * 1000,
      });
    }
    return entry.service;
  }

  const authenticate: RequestHandler = (req: Request, res: Response, next: NextFunction) => {
    const service = verify(req.headers.authorization);
    if (!service) return reject(next, res);
    res.locals.service = service;
    next();
  };

  function requireRole(role: ServiceRole): RequestHandler {
    return (_req: Request, res: Response, next: NextFunction) => {
      const service = res.locals.service as AuthenticatedService | undefined;
      if (!service) return reject(next, res);
      if (!service.roles.has(role)) return next(forbidden(role));
      next();
    };
  }

  return { authenticate, requireRole, verify };
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
