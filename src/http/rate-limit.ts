import type { IncomingMessage } from 'node:http';
import type { RequestHandler } from 'express';
import { LinkvaultError } from '../errors.js';

/**
 * A per-replica token bucket per client address, for what an unauthenticated caller can make
 * linkvault do (start a flow, run a callback). The address is the TCP peer
 * (`req.socket.remoteAddress`): X-Forwarded-For is the caller's own text and would let one client
 * pose as many. Only when `trustedProxyHops` says that many proxies of ours stand in front is the
 * address read from X-Forwarded-For, and then counted from the right: each trusted proxy appends
 * the peer it saw, so the entry `trustedProxyHops` from the end is the one the caller cannot forge.
 *
 * The table of buckets is bounded: past `maxClients` the least recently seen address is forgotten
 * (it starts again with a full bucket), so the limiter itself cannot grow without bound.
 */

export interface RateLimitOptions {
  /** Requests per minute one address may make; also the burst. */
  readonly perMinute: number;
  /** Proxies of ours in front of linkvault whose X-Forwarded-For entries are believed (default 0: none). */
  readonly trustedProxyHops?: number;
  /** Addresses remembered at once (default 10,000). */
  readonly maxClients?: number;
  readonly now?: () => number;
}

export interface RateLimit {
  /** Takes one token for `clientKey`; throws 429 rate_limited with Retry-After when none is left. */
  take(clientKey: string): void;
  /**
   * For limits that count only some outcomes (service-auth failures): throws 429 rate_limited with
   * Retry-After when `clientKey` has no token left, and takes none. `cause` goes to the log with it.
   */
  refuseWhenEmpty(clientKey: string, cause?: unknown): void;
  /** Takes one token when `clientKey` has one; never throws (refuseWhenEmpty answers for it next time). */
  spend(clientKey: string): void;
  /** Express middleware: take() for the request's TCP peer; the error goes to the problem+json handler. */
  readonly middleware: RequestHandler;
}

interface Bucket {
  tokens: number;
  updatedAtMs: number;
}

const DEFAULT_MAX_CLIENTS = 10_000;

/** The client address of `req`: the TCP peer, or the X-Forwarded-For entry our `trustedProxyHops` proxies vouch for. */
export function clientAddressOf(
  req: Pick<IncomingMessage, 'headers' | 'socket'>,
  trustedProxyHops: number,
): string {
  const peer = req.socket.remoteAddress ?? 'unknown';
  if (trustedProxyHops === 0) return peer;
  const header = req.headers['x-forwarded-for'];
  const forwarded = (Array.isArray(header) ? header.join(',') : (header ?? ''))
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '');
  const chain = [...forwarded, peer];
  // A chain shorter than the proxies we trust did not come through all of them: take its first.
  return chain[Math.max(0, chain.length - 1 - trustedProxyHops)]!;
}

export function createRateLimit(options: RateLimitOptions): RateLimit {
  const capacity = options.perMinute;
  const tokensPerMs = options.perMinute / 60_000;
  const maxClients = options.maxClients ?? DEFAULT_MAX_CLIENTS;
  const now = options.now ?? Date.now;
  const trustedProxyHops = options.trustedProxyHops ?? 0;
  // Map keeps insertion order: re-inserting on every take makes the first key the least recently seen.
  const buckets = new Map<string, Bucket>();

  /** The bucket of `clientKey`, refilled up to now and marked most recently seen. */
  function refill(clientKey: string): Bucket {
    const nowMs = now();
    const bucket = buckets.get(clientKey) ?? { tokens: capacity, updatedAtMs: nowMs };
    buckets.delete(clientKey);
    bucket.tokens = Math.min(
      capacity,
      bucket.tokens + Math.max(0, nowMs - bucket.updatedAtMs) * tokensPerMs,
    );
    bucket.updatedAtMs = nowMs;
    buckets.set(clientKey, bucket);
    if (buckets.size > maxClients) buckets.delete(buckets.keys().next().value!);
    return bucket;
  }

  function limited(bucket: Bucket, cause?: unknown): LinkvaultError {
    return new LinkvaultError('rate_limited', {
      detail: 'Too many requests from this client; retry later',
      retryAfterSeconds: Math.max(1, Math.ceil((1 - bucket.tokens) / tokensPerMs / 1000)),
      ...(cause === undefined ? {} : { cause }),
    });
  }

  function take(clientKey: string): void {
    const bucket = refill(clientKey);
    if (bucket.tokens < 1) throw limited(bucket);
    bucket.tokens -= 1;
  }

  function refuseWhenEmpty(clientKey: string, cause?: unknown): void {
    // A key never seen has a full bucket: no need to remember it.
    if (!buckets.has(clientKey)) return;
    const bucket = refill(clientKey);
    if (bucket.tokens < 1) throw limited(bucket, cause);
  }

  function spend(clientKey: string): void {
    const bucket = refill(clientKey);
    if (bucket.tokens >= 1) bucket.tokens -= 1;
  }

  const middleware: RequestHandler = (req, _res, next) => {
    try {
      take(clientAddressOf(req, trustedProxyHops));
      next();
    } catch (err) {
      next(err);
    }
  };

  return { take, refuseWhenEmpty, spend, middleware };
}
