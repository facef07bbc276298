import type { Logger } from 'pino';
import type { Config } from '../../config.js';
import { isLinkvaultError, LinkvaultError } from '../../errors.js';
import type { Vault } from '../../keys/vault.js';
import type { Metrics } from '../../metrics.js';
import type { OAuthTokenClient } from '../../oauth/oauth-client.js';
import type { Secret } from '../../secret.js';
import type { QueueJob, Store } from '../../store/store.js';
import type { LinkRecord } from '../link.js';
import type { SealedRecord } from '../../keys/sealed-record.js';
import type { Audit } from '../audit/audit.js';
import type { Catalogue } from '../../providers/catalogue.js';
import {
  BULK_REVOCATION_JOB_KIND,
  bulkStatusRow,
  isTransient,
  parseRecord,
  PROVIDER_REVOCATION_JOB_KIND,
  REVOCATION_AUDIT,
  toLinkFilter,
  type BulkRevocationPayload,
  type ProviderRevocationPayload,
  type ProviderRevocationStatus,
  type Revocation,
  type RevocationActor,
} from './revocation.js';
import { openTokenSet } from '../sealing/token-vault.js';

/**
 * The background half of revocation, run on every replica:
 *
 * - the provider step: claims `revocation.provider` jobs with a lease (a crashed worker's job
 *   comes back when the lease ends), revokes at the provider in the catalogue's style, retries
 *   with exponential backoff honouring Retry-After (RFC 7009 §2.2.1: a 503 means the token may
 *   still be alive, so it is never treated as done), marks the record confirmed / unsupported /
 *   failed, then deletes the job: the job held the last sealed copy of the tokens (shredding);
 * - bulk jobs (`revocation.bulk`): tombstone a slice of matching links per claim, publish
 *   progress, finish when every provider step has ended; one replica at a time per job (the lease);
 * - the dormant-link sweep (RFC 9700 §4.14.2: credentials unused for long should not stay valid),
 *   one replica at a time through a store lock.
 *
 * Provider calls are throttled per provider (a GCRA token bucket per provider id and process):
 * a bulk revocation of thousands of links must not trip the provider's rate limit. A 429 (or a
 * 503 with Retry-After) pauses that provider for Retry-After and halves its rate, which then
 * recovers slowly.
 */

export interface RevocationWorkerOptions {
  /** Idle poll of the queue. */
  readonly pollIntervalMs: number;
  /** Jobs claimed per poll. */
  readonly batchSize: number;
  /** Jobs handled at once. */
  readonly concurrency: number;
  /** Lease of a claimed job; must exceed a job's longest run (two provider calls plus throttle waits). */
  readonly leaseMs: number;
  /** Provider attempts before a revocation is marked failed. */
  readonly maxAttempts: number;
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
  /** How long a job waits for the request that queued it to write the tombstone before finishing it itself. */
  readonly takeoverGraceMs: number;
  /** Provider calls per second per provider (and per replica). */
  readonly ratePerSecond: number;
  /** Calls allowed in a burst. */
  readonly burst: number;
  /** A job waits in-process for the throttle at most this long, else it is rescheduled. */
  readonly maxThrottleWaitMs: number;
  /** Links tombstoned per bulk-job claim. */
  readonly bulkSliceSize: number;
  /** How often a bulk job whose tombstones are done re-checks its provider steps. */
  readonly bulkPollMs: number;
  /** Revoke links unused for this many days; null = no sweep. */
  readonly dormantLinkDays: number | null;
  readonly dormantSweepIntervalMs: number;
}

export const DEFAULT_REVOCATION_WORKER_OPTIONS: RevocationWorkerOptions = {
  pollIntervalMs: 1000,
  batchSize: 32,
  concurrency: 8,
  leaseMs: 60_000,
  maxAttempts: 10,
  backoffBaseMs: 5_000,
  backoffMaxMs: 3_600_000,
  takeoverGraceMs: 10_000,
  ratePerSecond: 10,
  burst: 10,
  maxThrottleWaitMs: 2_000,
  bulkSliceSize: 200,
  bulkPollMs: 1_000,
  dormantLinkDays: null,
  dormantSweepIntervalMs: 3_600_000,
};

/** Worker options from the configuration (main.ts): the lease covers two provider calls and a throttle wait. */
export function revocationWorkerOptionsFrom(config: Pick<Config, 'dormantLinkDays' | 'providerTimeoutMs'>): Partial<RevocationWorkerOptions> {
  return {
    dormantLinkDays: config.dormantLinkDays,
    leaseMs: 2 * config.providerTimeoutMs + DEFAULT_REVOCATION_WORKER_OPTIONS.maxThrottleWaitMs + 10_000,
  };
}

export type RevocationWorkerStore = Pick<
  Store,
  | 'claimJobs'
  | 'completeJob'
  | 'rescheduleJob'
  | 'getLink'
  | 'listLinks'
  | 'getRevocation'
  | 'putRevocation'
  | 'putJobStatus'
  | 'acquireLock'
  | 'extendLock'
  | 'releaseLock'
  | 'scanLinkIds'
>;

export interface RevocationWorkerDeps {
  readonly store: RevocationWorkerStore;
  readonly vault: Vault;
  readonly oauth: Pick<OAuthTokenClient, 'revoke'>;
  readonly catalogue: Pick<Catalogue, 'get'>;
  readonly revocation: Revocation;
  readonly audit: Pick<Audit, 'record'>;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly now?: () => number;
  readonly options?: Partial<RevocationWorkerOptions>;
}

export interface RevocationWorker {
  readonly name: string;
  /** Starts polling the queue (and the dormant sweep when configured). Idempotent. */
  start(): void;
  /** Stops scheduling work and resolves when work in progress has finished. */
  stop(): Promise<void>;
  /** Polls now instead of at the next tick (called when a job is queued). */
  wake(): void;
  /** One claim-and-handle round; resolves with the number of jobs handled (tests, and the loop). */
  runOnce(): Promise<number>;
  /** One dormant sweep (under the store lock); resolves with the number of links revoked. */
  sweepDormant(): Promise<number>;
}

const DORMANT_LOCK = 'revocation:dormant-sweep';
const DORMANT_LOCK_TTL_MS = 5 * 60_000;
const MAX_RETRY_AFTER_MS = 24 * 3_600_000;
const BULK_PENDING_CHECKS_PER_SLICE = 1_000;
/** stop() waits this long for work in progress. */
const STOP_WAIT_MS = 5_000;

type TokenHint = 'refresh_token' | 'access_token';
type Role = 'primary' | 'orphan' | 'wait' | 'takeover' | 'superseded';

/**
 * Per-provider GCRA throttle (a token bucket kept as one timestamp per provider). `delayMs` says
 * how long a call must wait; `take` books the next slot. `slowDown` (a 429 or 503) pauses the
 * provider and halves its rate; the rate then climbs back linearly, by a tenth of the configured
 * rate per second without another slow-down (additive increase, multiplicative decrease).
 */
export class ProviderThrottle {
  readonly #states = new Map<string, { tatMs: number; pausedUntilMs: number; floorRate: number; slowedAtMs: number }>();

  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
    private readonly now: () => number,
  ) {}

  #state(providerId: string) {
    let s = this.#states.get(providerId);
    if (!s) {
      s = { tatMs: 0, pausedUntilMs: 0, floorRate: this.ratePerSecond, slowedAtMs: 0 };
      this.#states.set(providerId, s);
    }
    return s;
  }

  /** The rate in force now (calls per second). */
  rate(providerId: string): number {
    const s = this.#state(providerId);
    const recovered = s.floorRate + (this.ratePerSecond / 10) * (Math.max(0, this.now() - Math.max(s.slowedAtMs, s.pausedUntilMs)) / 1000);
    return Math.min(this.ratePerSecond, recovered);
  }

  /** Earliest time (ms) a call may go. */
  #earliest(providerId: string): number {
    const s = this.#state(providerId);
    const intervalMs = 1000 / this.rate(providerId);
    const toleranceMs = intervalMs * Math.max(0, this.burst - 1);
    return Math.max(this.now(), s.tatMs - toleranceMs, s.pausedUntilMs);
  }

  delayMs(providerId: string): number {
    return Math.max(0, this.#earliest(providerId) - this.now());
  }

  /** Books a slot; returns the delay (ms) until it. */
  take(providerId: string): number {
    const s = this.#state(providerId);
    const at = this.#earliest(providerId);
    s.tatMs = Math.max(s.tatMs, at) + 1000 / this.rate(providerId);
    return Math.max(0, at - this.now());
  }

  slowDown(providerId: string, pauseMs: number): void {
    const s = this.#state(providerId);
    const nowMs = this.now();
    // Several calls in flight may each come back 429: halve once per pause, not once per answer.
    if (nowMs >= s.pausedUntilMs) s.floorRate = Math.max(this.ratePerSecond / 16, this.rate(providerId) / 2);
    s.slowedAtMs = nowMs;
    s.pausedUntilMs = Math.max(s.pausedUntilMs, nowMs + pauseMs);
    s.tatMs = Math.max(s.tatMs, s.pausedUntilMs);
  }
}

/** Exponential backoff with ±20% jitter, at least Retry-After, capped. */
function backoffMs(attempts: number, options: Pick<RevocationWorkerOptions, 'backoffBaseMs' | 'backoffMaxMs'>, retryAfterSeconds?: number): number {
  const exp = Math.min(options.backoffMaxMs, options.backoffBaseMs * 2 ** Math.max(0, attempts - 1));
  const jittered = exp * (0.8 + Math.random() * 0.4);
  const retryAfterMs = retryAfterSeconds === undefined ? 0 : Math.min(MAX_RETRY_AFTER_MS, Math.max(0, retryAfterSeconds) * 1000);
  return Math.round(Math.max(jittered, retryAfterMs));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function isSealedRecord(v: unknown): v is SealedRecord {
  return typeof v === 'object' && v !== null && typeof (v as SealedRecord).edk === 'string' && typeof (v as SealedRecord).ct === 'string';
}

function parseProviderPayload(raw: Readonly<Record<string, unknown>>): ProviderRevocationPayload | null {
  const p = raw as Partial<ProviderRevocationPayload>;
  if (typeof p.link_id !== 'string' || typeof p.tenant_id !== 'string' || typeof p.provider_id !== 'string') return null;
  if (typeof p.link_version !== 'number' || (p.role !== 'link' && p.role !== 'orphan') || !isSealedRecord(p.sealed)) return null;
  if (typeof p.requested_at_ms !== 'number') return null;
  return p as ProviderRevocationPayload;
}

function actorOf(p: ProviderRevocationPayload): RevocationActor {
  return { revokedBy: p.revoked_by, serviceId: p.service_id, reason: p.reason, requestId: p.request_id, bulkJobId: p.bulk_job_id };
}

/** What a provider-revocation job is, given the link as it is now. */
function classify(link: LinkRecord | null, p: ProviderRevocationPayload, nowMs: number, graceMs: number): Role {
  if (!link) return 'orphan';
  if (link.status === 'revoked') return p.role === 'link' && link.version === p.link_version + 1 ? 'primary' : 'orphan';
  // The link is live. Never revoke a live link's grant from a stale copy of its tokens.
  if (p.role === 'orphan' || link.version !== p.link_version) return 'superseded';
  // Same version, not tombstoned: the request that queued this is between its two writes, or died there.
  return nowMs < p.requested_at_ms + graceMs ? 'wait' : 'takeover';
}

export function createRevocationWorker(deps: RevocationWorkerDeps): RevocationWorker {
  const { store, vault, oauth, catalogue, revocation, metrics, log } = deps;
  const now = deps.now ?? Date.now;
  const options: RevocationWorkerOptions = { ...DEFAULT_REVOCATION_WORKER_OPTIONS, ...(deps.options ?? {}) };
  const throttle = new ProviderThrottle(options.ratePerSecond, options.burst, now);

  let started = false;
  let stopping = false;
  let timer: NodeJS.Timeout | undefined;
  let dormantTimer: NodeJS.Timeout | undefined;
  let current: Promise<unknown> | undefined;
  let sweeping: Promise<unknown> | undefined;
  let wakeRequested = false;
  let unsubscribe: (() => void) | undefined;

  async function auditQuietly(type: string, data: Record<string, unknown>, requestId: string | null): Promise<void> {
    try {
      await deps.audit.record(type, data, requestId);
    } catch (err) {
      log.error({ err, audit_type: type, link_id: data.link_id }, 'revocation worker: audit append failed');
    }
  }

  // ---------------------------------------------------------------------------------------
  // provider step

  async function updateRecord(linkId: string, status: ProviderRevocationStatus, attempts: number): Promise<void> {
    const row = await store.getRevocation(linkId);
    if (!row) return;
    const record = parseRecord(row.record);
    await store.putRevocation({ linkId, record: { ...record, provider_revocation: { status, attempts } } });
  }

  /** Token types to revoke, primary first (RFC 7009: the refresh token ends the grant at most providers). */
  function stepsFor(style: string, hint: TokenHint, hasRefresh: boolean): TokenHint[] {
    if (style === 'rfc7009') return hasRefresh ? ['refresh_token', 'access_token'] : ['access_token'];
    // Custom styles take the one token the catalogue names (GitHub's grant deletion, Slack's
    // auth.revoke, Intercom's uninstall take the access token).
    return [hint === 'refresh_token' && !hasRefresh ? 'access_token' : hint];
  }

  async function handleProviderJob(job: QueueJob & { leaseToken: string }): Promise<void> {
    const p = parseProviderPayload(job.payload);
    if (!p) {
      log.error({ job_id: job.id }, 'revocation worker: malformed job payload; dropping it');
      await store.completeJob(job.id, job.leaseToken);
      return;
    }
    const ref = { link_id: p.link_id, tenant_id: p.tenant_id, user_id: p.user_id, provider_id: p.provider_id };

    let link = await store.getLink(p.link_id);
    let role = classify(link, p, now(), options.takeoverGraceMs);
    if (role === 'wait') {
      await store.rescheduleJob(job.id, job.leaseToken, p.requested_at_ms + options.takeoverGraceMs, job.attempts, job.payload);
      return;
    }
    if (role === 'takeover') {
      // The revocation was requested and queued, but the tombstone never landed (the process
      // died between the writes): the queued job is the durable intent, finish it.
      log.warn({ ...ref, job_id: job.id }, 'revocation worker: finishing a revocation whose tombstone was not written');
      await revocation.revokeLink(p.link_id, actorOf(p));
      link = await store.getLink(p.link_id);
      role = classify(link, p, now(), options.takeoverGraceMs);
      if (role === 'takeover' || role === 'wait') throw new LinkvaultError('conflict', { detail: 'the tombstone did not land' });
    }
    if (role === 'superseded') {
      // The link moved on before any tombstone: these tokens are an older copy of a live link's.
      await finish(job, p, role, null, 0, 'skipped');
      return;
    }

    const entry = catalogue.get(p.provider_id);
    if (!entry) {
      await finish(job, p, role, 'failed', job.attempts, 'failed', 'provider_not_found');
      return;
    }
    if (entry.revocation.style === 'none') {
      await finish(job, p, role, 'unsupported', job.attempts, 'unsupported');
      return;
    }

    const tokens = await openTokenSet(vault, { id: p.link_id, tenantId: p.tenant_id, providerId: p.provider_id }, p.sealed);
    let steps: TokenHint[] = p.steps ? [...p.steps] : stepsFor(entry.revocation.style, entry.revocation.tokenTypeHint, tokens.refreshToken !== null);
    let primaryDone = p.primary_done === true;
    // An attempt is one run of this job that reached for the provider (however many tokens it sent).
    let attempts = job.attempts;
    let attempted = false;
    const revokedTokens: TokenHint[] = [...(p.revoked_tokens ?? [])];
    const progress = (): Partial<ProviderRevocationPayload> => ({ steps, primary_done: primaryDone, revoked_tokens: revokedTokens });

    while (steps.length > 0) {
      const hint = steps[0]!;
      const isPrimary = !primaryDone;
      const token: Secret | null = hint === 'refresh_token' ? tokens.refreshToken : tokens.accessToken;
      if (!token) {
        steps = steps.slice(1);
        continue;
      }

      const waitMs = throttle.delayMs(p.provider_id);
      if (waitMs > options.maxThrottleWaitMs) {
        // Throttled (or paused by a Retry-After): come back when the provider has room; no attempt spent.
        await store.rescheduleJob(job.id, job.leaseToken, now() + waitMs, attempts, { ...p, ...progress() });
        return;
      }
      const booked = throttle.take(p.provider_id);
      if (booked > 0) await sleep(booked);

      if (!attempted) {
        attempted = true;
        attempts += 1;
      }
      try {
        const outcome = await oauth.revoke({ providerId: p.provider_id, endpointVariables: p.endpoint_variables, token, tokenTypeHint: hint });
        if (outcome === 'unsupported') {
          await finish(job, p, role, 'unsupported', attempts, 'unsupported');
          return;
        }
        revokedTokens.push(hint);
        if (isPrimary) primaryDone = true;
        steps = steps.slice(1);
      } catch (err) {
        const code = isLinkvaultError(err) ? err.code : 'internal_error';
        const retryAfterSeconds = isLinkvaultError(err) ? err.retryAfterSeconds : undefined;
        if (code === 'provider_unavailable') {
          // 429, 5xx or no answer: the provider needs every caller to back off, not only this job.
          // Retry-After (RFC 9110 §10.2.3) says for how long; without it, one backoff step.
          throttle.slowDown(p.provider_id, retryAfterSeconds !== undefined ? Math.min(MAX_RETRY_AFTER_MS, retryAfterSeconds * 1000) : Math.min(options.backoffBaseMs, 5_000));
        }
        if (code === 'reauth_required' || (code === 'provider_error' && providerErrorOf(err) === 'invalid_token')) {
          // The provider says the token is no longer valid: nothing left alive to revoke.
          await auditQuietly(REVOCATION_AUDIT.providerOutcome, { ...ref, outcome: 'already_invalid', token_type_hint: hint, attempts }, p.request_id);
          if (isPrimary) primaryDone = true;
          steps = steps.slice(1);
          continue;
        }
        const retryable = code === 'provider_unavailable' || code === 'provider_misconfigured' || code === 'store_unavailable' || code === 'key_service_unavailable' || code === 'internal_error';
        if (!retryable) {
          if (isPrimary) {
            await finish(job, p, role, 'failed', attempts, 'failed', code, revokedTokens);
            return;
          }
          // The secondary token (the access token after its refresh token) is best effort:
          // many providers ended it with the grant, or do not revoke access tokens at all.
          await auditQuietly(REVOCATION_AUDIT.providerOutcome, { ...ref, outcome: 'skipped', token_type_hint: hint, attempts, error_code: code }, p.request_id);
          steps = steps.slice(1);
          continue;
        }
        if (attempts >= options.maxAttempts) {
          await finish(job, p, role, primaryDone ? 'confirmed' : 'failed', attempts, primaryDone ? 'confirmed' : 'failed', code, revokedTokens);
          return;
        }
        const delay = backoffMs(attempts, options, retryAfterSeconds);
        log.warn({ ...ref, job_id: job.id, attempts, error_code: code, retry_in_ms: delay }, 'revocation at the provider failed; will retry');
        await auditQuietly(REVOCATION_AUDIT.providerOutcome, { ...ref, outcome: 'retry', token_type_hint: hint, attempts, error_code: code }, p.request_id);
        if (role === 'primary') await updateRecord(p.link_id, primaryDone ? 'confirmed' : 'pending', attempts);
        await store.rescheduleJob(job.id, job.leaseToken, now() + delay, attempts, { ...p, ...progress() });
        return;
      }
    }
    await finish(job, p, role, primaryDone ? 'confirmed' : 'failed', attempts, primaryDone ? 'confirmed' : 'failed', undefined, revokedTokens);
  }

  function providerErrorOf(err: unknown): string | undefined {
    if (!isLinkvaultError(err)) return undefined;
    const value = err.extra?.provider_error;
    return typeof value === 'string' ? value : undefined;
  }

  /**
   * Ends a provider job: the record (primary only) gets the final status, the job is deleted
   * (its sealed tokens with it: the last copy), the data key leaves the cache, all audited.
   */
  async function finish(
    job: QueueJob & { leaseToken: string },
    p: ProviderRevocationPayload,
    role: Role,
    status: ProviderRevocationStatus | null,
    attempts: number,
    outcome: string,
    errorCode?: string,
    revokedTokens: readonly TokenHint[] = [],
  ): Promise<void> {
    const ref = { link_id: p.link_id, tenant_id: p.tenant_id, user_id: p.user_id, provider_id: p.provider_id };
    if (role === 'primary' && status) await updateRecord(p.link_id, status, attempts);
    const removed = await store.completeJob(job.id, job.leaseToken);
    vault.forget(p.sealed);
    if (!removed) {
      // Our lease ran out and another worker holds the job now; it will finish it.
      log.warn({ ...ref, job_id: job.id }, 'revocation worker: lease lost before completing the job');
      return;
    }
    metrics.revocations.inc({ provider: p.provider_id, outcome });
    const type = role === 'primary' ? REVOCATION_AUDIT.providerOutcome : REVOCATION_AUDIT.orphanTokens;
    await auditQuietly(type, { ...ref, outcome, final: true, attempts, tokens_revoked: revokedTokens, ...(errorCode ? { error_code: errorCode } : {}), job_role: role }, p.request_id);
    await auditQuietly(REVOCATION_AUDIT.shredded, { ...ref, where: 'revocation_job' }, p.request_id);
    log.info({ ...ref, outcome, attempts, job_role: role }, 'revocation at the provider ended');
  }

  async function onProviderJobError(job: QueueJob & { leaseToken: string }, err: unknown): Promise<void> {
    const p = parseProviderPayload(job.payload);
    const attempts = job.attempts + 1;
    const code = isLinkvaultError(err) ? err.code : 'internal_error';
    const link = p ? await store.getLink(p.link_id) : null;
    const role = p ? classify(link, p, now(), options.takeoverGraceMs) : 'orphan';
    // A revocation whose tombstone has not landed is never given up: the job is the only record of the request.
    const mayGiveUp = role !== 'wait' && role !== 'takeover';
    if (p && mayGiveUp && code === 'sealed_record_invalid') {
      // The sealed copy does not open (tampered, or its key destroyed): it can never be revoked by us.
      await finish(job, p, role, 'failed', attempts, 'failed', code);
      return;
    }
    if (p && mayGiveUp && attempts >= options.maxAttempts) {
      await finish(job, p, role, 'failed', attempts, 'failed', code);
      return;
    }
    const delay = backoffMs(Math.min(attempts, options.maxAttempts), options, isLinkvaultError(err) ? err.retryAfterSeconds : undefined);
    log.warn({ job_id: job.id, link_id: p?.link_id, error_code: code, err: isLinkvaultError(err) ? undefined : err, retry_in_ms: delay }, 'revocation job failed; will retry');
    await store.rescheduleJob(job.id, job.leaseToken, now() + delay, attempts, job.payload);
  }

  // ---------------------------------------------------------------------------------------
  // bulk

  async function handleBulkJob(job: QueueJob & { leaseToken: string }): Promise<void> {
    let p = job.payload as unknown as BulkRevocationPayload;
    if (typeof p.job_id !== 'string' || typeof p.filter !== 'object' || !Array.isArray(p.pending)) {
      log.error({ job_id: job.id }, 'revocation worker: malformed bulk job; dropping it');
      await store.completeJob(job.id, job.leaseToken);
      return;
    }
    const actor: RevocationActor = { revokedBy: 'admin', serviceId: p.service_id, reason: p.reason, requestId: p.request_id, bulkJobId: p.job_id };
    const pending = [...p.pending];
    const skipped = new Set(p.skipped);
    const counts = { revoked: p.revoked, provider_confirmed: p.provider_confirmed, provider_failed: p.provider_failed, provider_unsupported: p.provider_unsupported };
    let exhausted = p.exhausted;
    let transientError: unknown;

    const count = (status: ProviderRevocationStatus): boolean => {
      if (status === 'confirmed') counts.provider_confirmed++;
      else if (status === 'failed') counts.provider_failed++;
      else if (status === 'unsupported') counts.provider_unsupported++;
      else return false;
      return true;
    };

    if (!exhausted) {
      const filter = toLinkFilter({ tenantId: p.filter.tenant_id, userId: p.filter.user_id, providerId: p.filter.provider_id });
      const want = Math.min(10_000, options.bulkSliceSize + skipped.size);
      let candidates = (await store.listLinks({ ...filter, status: 'active' }, want)).filter((l) => !skipped.has(l.id));
      if (candidates.length < options.bulkSliceSize) {
        const reauth = (await store.listLinks({ ...filter, status: 'needs_reauth' }, want)).filter((l) => !skipped.has(l.id));
        candidates = candidates.concat(reauth);
      }
      candidates = candidates.slice(0, options.bulkSliceSize);
      if (candidates.length === 0) exhausted = true;
      let next = 0;
      const runOne = async (): Promise<void> => {
        while (next < candidates.length && transientError === undefined) {
          const link = candidates[next++]!;
          try {
            const result = await revocation.revokeLink(link.id, actor);
            if (result.alreadyRevoked) continue; // someone else revoked it meanwhile: not this job's
            counts.revoked++;
            if (!count(result.record.provider_revocation.status)) pending.push(link.id);
          } catch (err) {
            if (isLinkvaultError(err, 'link_not_found')) continue;
            // The link kept changing under us: it is still live, so the next slice lists it again.
            if (isLinkvaultError(err, 'conflict')) continue;
            if (isTransient(err)) {
              transientError = err;
              return;
            }
            log.error({ err, link_id: link.id, job_id: p.job_id }, 'bulk revocation: a link could not be revoked; skipping it');
            skipped.add(link.id);
          }
        }
      };
      await Promise.all(Array.from({ length: Math.min(options.concurrency, candidates.length) }, runOne));
    }

    // Follow the provider steps of the links this job tombstoned.
    const stillPending: string[] = [];
    for (const [i, linkId] of pending.entries()) {
      if (i >= BULK_PENDING_CHECKS_PER_SLICE || transientError !== undefined) {
        stillPending.push(linkId);
        continue;
      }
      try {
        const row = await store.getRevocation(linkId);
        const status = row ? parseRecord(row.record).provider_revocation.status : 'pending';
        if (!count(status)) stillPending.push(linkId);
      } catch (err) {
        transientError = err;
        stillPending.push(linkId);
      }
    }

    p = { ...p, ...counts, pending: stillPending, skipped: [...skipped], exhausted };
    const done = exhausted && stillPending.length === 0;
    await store.putJobStatus({ id: p.job_id, status: bulkStatusRow(p, done, now()) });
    if (done) {
      await store.completeJob(job.id, job.leaseToken);
      await auditQuietly(REVOCATION_AUDIT.bulkDone, { job_id: p.job_id, ...counts, total: Math.max(p.total, p.revoked) }, p.request_id);
      log.info({ job_id: p.job_id, ...counts }, 'bulk revocation done');
      return;
    }
    const delay = transientError !== undefined ? backoffMs(1, options) : exhausted ? options.bulkPollMs : 0;
    await store.rescheduleJob(job.id, job.leaseToken, now() + delay, job.attempts, { ...p });
  }

  // ---------------------------------------------------------------------------------------
  // the loop

  async function handle(job: QueueJob & { leaseToken: string }): Promise<void> {
    if (job.kind === PROVIDER_REVOCATION_JOB_KIND) {
      try {
        await handleProviderJob(job);
      } catch (err) {
        await onProviderJobError(job, err);
      }
      return;
    }
    if (job.kind === BULK_REVOCATION_JOB_KIND) {
      try {
        await handleBulkJob(job);
      } catch (err) {
        log.warn({ err, job_id: job.id }, 'bulk revocation slice failed; will retry');
        await store.rescheduleJob(job.id, job.leaseToken, now() + backoffMs(1, options), job.attempts, job.payload);
      }
      return;
    }
    // Not ours (the queue is shared): hand it straight back, unchanged and due as before.
    await store.rescheduleJob(job.id, job.leaseToken, job.runAtMs, job.attempts, job.payload);
  }

  async function runOnce(): Promise<number> {
    const jobs = await store.claimJobs(now(), options.batchSize, options.leaseMs);
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < jobs.length) {
        const job = jobs[next++]!;
        if (!job.leaseToken) continue;
        try {
          await handle(job as QueueJob & { leaseToken: string });
        } catch (err) {
          // Rescheduling itself failed (store down): the lease brings the job back.
          log.warn({ err, job_id: job.id }, 'revocation worker: job left to its lease');
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(options.concurrency, jobs.length) }, lane));
    return jobs.filter((j) => j.kind === PROVIDER_REVOCATION_JOB_KIND || j.kind === BULK_REVOCATION_JOB_KIND).length;
  }

  function schedule(delayMs: number): void {
    if (!started || stopping) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(tick, delayMs);
    timer.unref();
  }

  function tick(): void {
    timer = undefined;
    if (stopping || current) return;
    wakeRequested = false;
    let handled = 0;
    current = runOnce()
      .then((n) => {
        handled = n;
      })
      .catch((err: unknown) => log.warn({ err }, 'revocation worker: poll failed'))
      .finally(() => {
        current = undefined;
        // A full batch or a wake-up during the round: go again at once.
        schedule(handled >= options.batchSize || wakeRequested ? 0 : options.pollIntervalMs);
      });
  }

  // ---------------------------------------------------------------------------------------
  // dormant links

  async function sweepDormant(): Promise<number> {
    const days = options.dormantLinkDays;
    if (days === null) return 0;
    const owner = await store.acquireLock(DORMANT_LOCK, DORMANT_LOCK_TTL_MS);
    if (!owner) return 0;
    let revoked = 0;
    try {
      const cutoffMs = now() - days * 86_400_000;
      let seen = 0;
      for await (const id of store.scanLinkIds()) {
        if (stopping) break;
        if (++seen % 200 === 0 && !(await store.extendLock(DORMANT_LOCK, owner, DORMANT_LOCK_TTL_MS))) break;
        const link = await store.getLink(id);
        if (!link || link.status === 'revoked') continue;
        // "Unused": no token released since, and not (re)connected since. Refreshes do not count:
        // a background refresh is not use (RFC 9700 §4.14.2 is about credentials nobody uses).
        const lastUseMs = Math.max(link.createdAtMs, link.lastUsedAtMs ?? 0);
        if (lastUseMs >= cutoffMs) continue;
        try {
          const result = await revocation.revokeLink(id, { revokedBy: 'admin', serviceId: null, reason: 'dormant', requestId: null });
          if (!result.alreadyRevoked) revoked++;
        } catch (err) {
          log.warn({ err, link_id: id }, 'dormant sweep: could not revoke a link; next sweep retries');
        }
      }
    } finally {
      await store.releaseLock(DORMANT_LOCK, owner).catch(() => undefined);
    }
    if (revoked > 0) log.info({ revoked, dormant_link_days: days }, 'dormant links revoked');
    return revoked;
  }

  function scheduleSweep(delayMs: number): void {
    if (!started || stopping || options.dormantLinkDays === null) return;
    dormantTimer = setTimeout(() => {
      sweeping = sweepDormant()
        .catch((err: unknown) => log.warn({ err }, 'dormant sweep failed'))
        .finally(() => {
          sweeping = undefined;
          scheduleSweep(options.dormantSweepIntervalMs);
        });
    }, delayMs);
    dormantTimer.unref();
  }

  function wake(): void {
    if (!started || stopping) return;
    if (current) {
      wakeRequested = true;
      return;
    }
    schedule(0);
  }

  return {
    name: 'revocation-worker',
    start() {
      if (started) return;
      started = true;
      stopping = false;
      unsubscribe = revocation.onJobQueued(wake);
      schedule(0);
      scheduleSweep(Math.min(options.dormantSweepIntervalMs, 30_000));
    },
    async stop() {
      stopping = true;
      unsubscribe?.();
      if (timer) clearTimeout(timer);
      if (dormantTimer) clearTimeout(dormantTimer);
      // Work in progress may wait on a provider; past the bound its lease hands it to the next start.
      let bound: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([current, sweeping]),
        new Promise<void>((resolve) => {
          bound = setTimeout(resolve, STOP_WAIT_MS);
          bound.unref();
        }),
      ]);
      clearTimeout(bound);
      started = false;
    },
    wake,
    runOnce,
    sweepDormant,
  };
}
