import type { Store } from '../../store/store.js';
import type { LinkRecord } from '../link.js';

/**
 * When linkvault may ask a provider to refresh again after it failed, remembered in the store so
 * that every replica honours it (docs/operations.md, "Provider back-off"):
 *
 *   provider pause   the provider said "not now" with a Retry-After (429, or 503 + Retry-After): no
 *                    link of that provider is refreshed until then. One document per provider in
 *                    the store's document store, `{ until_ms }`; a pause is never shortened.
 *   link back-off    any other unavailable answer (5xx, timeout, unreachable, an answer we could not
 *                    accept): this link waits LINK_BACKOFF_BASE_MS × 2^(failures − 1), at most
 *                    LINK_BACKOFF_MAX_MS (or the provider's Retry-After when longer), kept in the
 *                    link's own metadata (written with the same CAS as the link) and cleared by the
 *                    next stored refresh.
 *
 * During either, callers get 503 provider_unavailable with the remaining time as Retry-After
 * (an access token that is still valid is served as before, unless the refresh is forced).
 */

/** Consecutive refresh failures of the link (decimal string). */
export const REFRESH_FAILURES_KEY = 'linkvault.refresh_failures';
/** Epoch milliseconds (decimal string) before which the link is not refreshed again. */
export const REFRESH_RETRY_AT_KEY = 'linkvault.refresh_retry_at_ms';

export const LINK_BACKOFF_BASE_MS = 2_000;
export const LINK_BACKOFF_MAX_MS = 300_000;
/** A provider's Retry-After is honoured up to this long; a larger (or absurd) value is capped. */
export const PROVIDER_PAUSE_MAX_SECONDS = 3_600;

/** The document-store row holding `providerId`'s pause. */
export function providerPauseRowId(providerId: string): string {
  return `linkvault:provider-refresh-pause:${providerId}`;
}

/** Milliseconds until the link's own back-off ends (0 when none). */
export function linkBackoffRemainingMs(link: Pick<LinkRecord, 'metadata'>, nowMs: number): number {
  const retryAtMs = Number(link.metadata[REFRESH_RETRY_AT_KEY]);
  return Number.isFinite(retryAtMs) && retryAtMs > nowMs ? retryAtMs - nowMs : 0;
}

/**
 * The metadata entries recording one more failure of `link` at `nowMs`, and how long the link now
 * waits. `retryAfterSeconds` (the provider's, when it gave one) lengthens the wait, never shortens it.
 */
export function linkBackoffAfterFailure(
  link: Pick<LinkRecord, 'metadata'>,
  nowMs: number,
  retryAfterSeconds: number | undefined,
): { entries: Record<string, string>; waitMs: number } {
  const previous = Number(link.metadata[REFRESH_FAILURES_KEY]);
  const failures = (Number.isSafeInteger(previous) && previous > 0 ? previous : 0) + 1;
  const exponentialMs = Math.min(LINK_BACKOFF_BASE_MS * 2 ** (failures - 1), LINK_BACKOFF_MAX_MS);
  const providerMs = Math.min(retryAfterSeconds ?? 0, PROVIDER_PAUSE_MAX_SECONDS) * 1000;
  const waitMs = Math.max(exponentialMs, providerMs);
  return {
    entries: {
      [REFRESH_FAILURES_KEY]: String(failures),
      [REFRESH_RETRY_AT_KEY]: String(nowMs + waitMs),
    },
    waitMs,
  };
}

/** `metadata` without the link back-off entries. */
export function withoutLinkBackoff(
  metadata: Readonly<Record<string, string>>,
): Record<string, string> {
  const { [REFRESH_FAILURES_KEY]: _failures, [REFRESH_RETRY_AT_KEY]: _retryAt, ...rest } = metadata;
  return rest;
}

/** Retry-After seconds for `remainingMs` (at least 1). */
export function retryAfterSecondsFor(remainingMs: number): number {
  return Math.max(1, Math.ceil(remainingMs / 1000));
}

export interface ProviderPauses {
  /** Milliseconds until `providerId`'s pause ends (0 when none). Rejects store_unavailable. */
  remainingMs(providerId: string): Promise<number>;
  /**
   * Pauses refreshes of every link of `providerId` for `retryAfterSeconds` (capped at
   * PROVIDER_PAUSE_MAX_SECONDS) unless a longer pause is stored. Rejects store_unavailable.
   */
  pause(providerId: string, retryAfterSeconds: number): Promise<void>;
}

/**
 * Provider pauses in the store's document store, with the latest known pause per provider kept in
 * memory too, so that callers during a pause cost this replica no store read.
 */
export function createProviderPauses(deps: {
  readonly store: Pick<Store, 'getJobStatus' | 'putJobStatus'>;
  readonly now: () => number;
}): ProviderPauses {
  const { store, now } = deps;
  const known = new Map<string, number>();

  async function readUntilMs(providerId: string): Promise<number> {
    const row = await store.getJobStatus(providerPauseRowId(providerId));
    const untilMs = row?.status.provider_id === providerId ? Number(row.status.until_ms) : 0;
    return Number.isFinite(untilMs) ? untilMs : 0;
  }

  async function remainingMs(providerId: string): Promise<number> {
    const at = now();
    const cached = known.get(providerId) ?? 0;
    if (cached > at) return cached - at;
    const untilMs = await readUntilMs(providerId);
    if (untilMs > at) known.set(providerId, untilMs);
    else known.delete(providerId);
    return Math.max(0, untilMs - at);
  }

  async function pause(providerId: string, retryAfterSeconds: number): Promise<void> {
    const seconds = Math.min(Math.max(retryAfterSeconds, 0), PROVIDER_PAUSE_MAX_SECONDS);
    const untilMs = now() + seconds * 1000;
    if ((await readUntilMs(providerId)) >= untilMs) return;
    await store.putJobStatus({
      id: providerPauseRowId(providerId),
      status: { provider_id: providerId, until_ms: untilMs },
    });
    known.set(providerId, Math.max(untilMs, known.get(providerId) ?? 0));
  }

  return { remainingMs, pause };
}
