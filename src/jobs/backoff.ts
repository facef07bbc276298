/** Longest Retry-After honoured: a provider asking for days is treated as asking for one. */
export const MAX_RETRY_AFTER_MS = 24 * 3_600_000;

export interface BackoffOptions {
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
}

/** A Retry-After in seconds (RFC 9110 §10.2.3) as milliseconds, never negative, capped. */
export function retryAfterMs(retryAfterSeconds: number): number {
  return Math.min(MAX_RETRY_AFTER_MS, Math.max(0, retryAfterSeconds) * 1000);
}

/** Exponential backoff with ±20% jitter, at least Retry-After, capped. */
export function backoffMs(
  attempts: number,
  options: BackoffOptions,
  retryAfterSeconds?: number,
): number {
  const exp = Math.min(
    options.backoffMaxMs,
    options.backoffBaseMs * 2 ** Math.max(0, attempts - 1),
  );
  const jittered = exp * (0.8 + Math.random() * 0.4);
  const floorMs = retryAfterSeconds === undefined ? 0 : retryAfterMs(retryAfterSeconds);
  return Math.round(Math.max(jittered, floorMs));
}
