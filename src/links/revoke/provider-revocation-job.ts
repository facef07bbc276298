import type { Logger } from 'pino';
import { isLinkvaultError, LinkvaultError } from '../../errors.js';
import { backoffMs, retryAfterMs, type BackoffOptions } from '../../jobs/backoff.js';
import type { ClaimedJob, JobHandler } from '../../jobs/job-worker.js';
import type { Throttle } from '../../jobs/throttle.js';
import type { SealedRecord } from '../../keys/sealed-record.js';
import type { Vault } from '../../keys/vault.js';
import type { Metrics } from '../../metrics.js';
import type { OAuthTokenClient } from '../../oauth/oauth-client.js';
import type { Catalogue } from '../../providers/catalogue.js';
import type { Secret } from '../../secret.js';
import type { Store } from '../../store/store.js';
import type { Audit } from '../audit/audit.js';
import type { LinkRecord } from '../link.js';
import { openTokenSet } from '../sealing/token-vault.js';
import { auditQuietly } from './audit-quietly.js';
import {
  parseRecord,
  REVOCATION_AUDIT,
  type ProviderRevocationPayload,
  type ProviderRevocationStatus,
  type Revocation,
  type RevocationActor,
} from './revocation.js';

export interface ProviderRevocationJobOptions extends BackoffOptions {
  /** Provider attempts before a revocation is marked failed. */
  readonly maxAttempts: number;
  /** How long a job waits for the request that queued it to write the tombstone before finishing it itself. */
  readonly takeoverGraceMs: number;
  /** A job waits in-process for the throttle at most this long, else it is rescheduled. */
  readonly maxThrottleWaitMs: number;
}

export interface ProviderRevocationJobDeps {
  readonly store: Pick<Store, 'getLink' | 'getRevocation' | 'putRevocation'>;
  readonly vault: Vault;
  readonly oauth: Pick<OAuthTokenClient, 'revoke'>;
  readonly catalogue: Pick<Catalogue, 'get'>;
  readonly revocation: Pick<Revocation, 'revokeLink'>;
  readonly audit: Pick<Audit, 'record'>;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly now: () => number;
  /** Shared by every provider call of this process, keyed by provider id. */
  readonly throttle: Throttle;
  readonly options: ProviderRevocationJobOptions;
}

type TokenHint = 'refresh_token' | 'access_token';
type Role = 'primary' | 'orphan' | 'wait' | 'takeover' | 'superseded';

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function isSealedRecord(v: unknown): v is SealedRecord {
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof (v as SealedRecord).edk === 'string' &&
    typeof (v as SealedRecord).ct === 'string'
  );
}

function parseProviderPayload(
  raw: Readonly<Record<string, unknown>>,
): ProviderRevocationPayload | null {
  const p = raw as Partial<ProviderRevocationPayload>;
  if (
    typeof p.link_id !== 'string' ||
    typeof p.tenant_id !== 'string' ||
    typeof p.provider_id !== 'string'
  )
    return null;
  if (
    typeof p.link_version !== 'number' ||
    (p.role !== 'link' && p.role !== 'orphan') ||
    !isSealedRecord(p.sealed)
  )
    return null;
  if (typeof p.requested_at_ms !== 'number') return null;
  return p as ProviderRevocationPayload;
}

function actorOf(p: ProviderRevocationPayload): RevocationActor {
  return {
    revokedBy: p.revoked_by,
    serviceId: p.service_id,
    reason: p.reason,
    requestId: p.request_id,
    bulkJobId: p.bulk_job_id,
  };
}

/** What a provider-revocation job is, given the link as it is now. */
function classify(
  link: LinkRecord | null,
  p: ProviderRevocationPayload,
  nowMs: number,
  graceMs: number,
): Role {
  if (!link) return 'orphan';
  if (link.status === 'revoked')
    return p.role === 'link' && link.version === p.link_version + 1 ? 'primary' : 'orphan';
  // The link is live. Never revoke a live link's grant from a stale copy of its tokens.
  if (p.role === 'orphan' || link.version !== p.link_version) return 'superseded';
  // Same version, not tombstoned: the request that queued this is between its two writes, or died there.
  return nowMs < p.requested_at_ms + graceMs ? 'wait' : 'takeover';
}

/** Token types to revoke, primary first (RFC 7009: the refresh token ends the grant at most providers). */
function stepsFor(style: string, hint: TokenHint, hasRefresh: boolean): TokenHint[] {
  if (style === 'rfc7009') return hasRefresh ? ['refresh_token', 'access_token'] : ['access_token'];
  // Custom styles take the one token the catalogue names (GitHub's grant deletion, Slack's
  // auth.revoke, Intercom's uninstall take the access token).
  return [hint === 'refresh_token' && !hasRefresh ? 'access_token' : hint];
}

function providerErrorOf(err: unknown): string | undefined {
  if (!isLinkvaultError(err)) return undefined;
  const value = err.extra?.provider_error;
  return typeof value === 'string' ? value : undefined;
}

/**
 * The provider step of a revocation: revokes the sealed tokens at the provider in the catalogue's
 * style, retrying with exponential backoff that honours Retry-After (RFC 7009 §2.2.1: a 503 means
 * the token may still be alive, so it is never treated as done), marks the record confirmed /
 * unsupported / failed, then deletes the job: the job held the last sealed copy of the tokens.
 */
export function createProviderRevocationJob(deps: ProviderRevocationJobDeps): JobHandler {
  const { store, vault, oauth, catalogue, revocation, metrics, log, now, throttle, options } = deps;

  async function updateRecord(
    linkId: string,
    status: ProviderRevocationStatus,
    attempts: number,
  ): Promise<void> {
    const row = await store.getRevocation(linkId);
    if (!row) return;
    const record = parseRecord(row.record);
    await store.putRevocation({
      linkId,
      record: { ...record, provider_revocation: { status, attempts } },
    });
  }

  /**
   * Ends a provider job: the record (primary only) gets the final status, the job is deleted
   * (its sealed tokens with it: the last copy), the data key leaves the cache, all audited.
   */
  async function finish(
    job: ClaimedJob,
    p: ProviderRevocationPayload,
    role: Role,
    status: ProviderRevocationStatus | null,
    attempts: number,
    outcome: string,
    errorCode?: string,
    revokedTokens: readonly TokenHint[] = [],
  ): Promise<void> {
    const ref = {
      link_id: p.link_id,
      tenant_id: p.tenant_id,
      user_id: p.user_id,
      provider_id: p.provider_id,
    };
    if (role === 'primary' && status) await updateRecord(p.link_id, status, attempts);
    const removed = await job.complete();
    vault.forget(p.sealed);
    if (!removed) {
      // Our lease ran out and another worker holds the job now; it will finish it.
      log.warn(
        { ...ref, job_id: job.id },
        'revocation worker: lease lost before completing the job',
      );
      return;
    }
    metrics.revocations.inc({ provider: p.provider_id, outcome });
    const type =
      role === 'primary' ? REVOCATION_AUDIT.providerOutcome : REVOCATION_AUDIT.orphanTokens;
    await auditQuietly(
      deps,
      type,
      {
        ...ref,
        outcome,
        final: true,
        attempts,
        tokens_revoked: revokedTokens,
        ...(errorCode ? { error_code: errorCode } : {}),
        job_role: role,
      },
      p.request_id,
    );
    await auditQuietly(
      deps,
      REVOCATION_AUDIT.shredded,
      { ...ref, where: 'revocation_job' },
      p.request_id,
    );
    log.info({ ...ref, outcome, attempts, job_role: role }, 'revocation at the provider ended');
  }

  async function run(job: ClaimedJob): Promise<void> {
    const p = parseProviderPayload(job.payload);
    if (!p) {
      log.error({ job_id: job.id }, 'revocation worker: malformed job payload; dropping it');
      await job.complete();
      return;
    }
    const ref = {
      link_id: p.link_id,
      tenant_id: p.tenant_id,
      user_id: p.user_id,
      provider_id: p.provider_id,
    };

    let link = await store.getLink(p.link_id);
    let role = classify(link, p, now(), options.takeoverGraceMs);
    if (role === 'wait') {
      await job.reschedule(p.requested_at_ms + options.takeoverGraceMs, job.attempts, job.payload);
      return;
    }
    if (role === 'takeover') {
      // The revocation was requested and queued, but the tombstone never landed (the process
      // died between the writes): the queued job is the durable intent, finish it.
      log.warn(
        { ...ref, job_id: job.id },
        'revocation worker: finishing a revocation whose tombstone was not written',
      );
      await revocation.revokeLink(p.link_id, actorOf(p));
      link = await store.getLink(p.link_id);
      role = classify(link, p, now(), options.takeoverGraceMs);
      if (role === 'takeover' || role === 'wait')
        throw new LinkvaultError('conflict', { detail: 'the tombstone did not land' });
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

    const tokens = await openTokenSet(
      vault,
      { id: p.link_id, tenantId: p.tenant_id, providerId: p.provider_id },
      p.sealed,
    );
    let steps: TokenHint[] = p.steps
      ? [...p.steps]
      : stepsFor(
          entry.revocation.style,
          entry.revocation.tokenTypeHint,
          tokens.refreshToken !== null,
        );
    let primaryDone = p.primary_done === true;
    // An attempt is one run of this job that reached for the provider (however many tokens it sent).
    let attempts = job.attempts;
    let attempted = false;
    const revokedTokens: TokenHint[] = [...(p.revoked_tokens ?? [])];
    const progress = (): Partial<ProviderRevocationPayload> => ({
      steps,
      primary_done: primaryDone,
      revoked_tokens: revokedTokens,
    });

    while (steps.length > 0) {
      const hint = steps[0]!;
      const isPrimary = !primaryDone;
      const token: Secret | null =
        hint === 'refresh_token' ? tokens.refreshToken : tokens.accessToken;
      if (!token) {
        steps = steps.slice(1);
        continue;
      }

      const waitMs = throttle.delayMs(p.provider_id);
      if (waitMs > options.maxThrottleWaitMs) {
        // Throttled (or paused by a Retry-After): come back when the provider has room; no attempt spent.
        await job.reschedule(now() + waitMs, attempts, { ...p, ...progress() });
        return;
      }
      const booked = throttle.take(p.provider_id);
      if (booked > 0) await sleep(booked);

      if (!attempted) {
        attempted = true;
        attempts += 1;
      }
      try {
        const outcome = await oauth.revoke({
          providerId: p.provider_id,
          endpointVariables: p.endpoint_variables,
          token,
          tokenTypeHint: hint,
        });
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
          throttle.slowDown(
            p.provider_id,
            retryAfterSeconds !== undefined
              ? retryAfterMs(retryAfterSeconds)
              : Math.min(options.backoffBaseMs, 5_000),
          );
        }
        if (
          code === 'reauth_required' ||
          (code === 'provider_error' && providerErrorOf(err) === 'invalid_token')
        ) {
          // The provider says the token is no longer valid: nothing left alive to revoke.
          await auditQuietly(
            deps,
            REVOCATION_AUDIT.providerOutcome,
            { ...ref, outcome: 'already_invalid', token_type_hint: hint, attempts },
            p.request_id,
          );
          if (isPrimary) primaryDone = true;
          steps = steps.slice(1);
          continue;
        }
        const retryable =
          code === 'provider_unavailable' ||
          code === 'provider_misconfigured' ||
          code === 'store_unavailable' ||
          code === 'key_service_unavailable' ||
          code === 'internal_error';
        if (!retryable) {
          if (isPrimary) {
            await finish(job, p, role, 'failed', attempts, 'failed', code, revokedTokens);
            return;
          }
          // The secondary token (the access token after its refresh token) is best effort:
          // many providers ended it with the grant, or do not revoke access tokens at all.
          await auditQuietly(
            deps,
            REVOCATION_AUDIT.providerOutcome,
            { ...ref, outcome: 'skipped', token_type_hint: hint, attempts, error_code: code },
            p.request_id,
          );
          steps = steps.slice(1);
          continue;
        }
        if (attempts >= options.maxAttempts) {
          await finish(
            job,
            p,
            role,
            primaryDone ? 'confirmed' : 'failed',
            attempts,
            primaryDone ? 'confirmed' : 'failed',
            code,
            revokedTokens,
          );
          return;
        }
        const delay = backoffMs(attempts, options, retryAfterSeconds);
        log.warn(
          { ...ref, job_id: job.id, attempts, error_code: code, retry_in_ms: delay },
          'revocation at the provider failed; will retry',
        );
        await auditQuietly(
          deps,
          REVOCATION_AUDIT.providerOutcome,
          { ...ref, outcome: 'retry', token_type_hint: hint, attempts, error_code: code },
          p.request_id,
        );
        if (role === 'primary')
          await updateRecord(p.link_id, primaryDone ? 'confirmed' : 'pending', attempts);
        await job.reschedule(now() + delay, attempts, { ...p, ...progress() });
        return;
      }
    }
    await finish(
      job,
      p,
      role,
      primaryDone ? 'confirmed' : 'failed',
      attempts,
      primaryDone ? 'confirmed' : 'failed',
      undefined,
      revokedTokens,
    );
  }

  async function onError(job: ClaimedJob, err: unknown): Promise<void> {
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
    const delay = backoffMs(
      Math.min(attempts, options.maxAttempts),
      options,
      isLinkvaultError(err) ? err.retryAfterSeconds : undefined,
    );
    log.warn(
      {
        job_id: job.id,
        link_id: p?.link_id,
        error_code: code,
        err: isLinkvaultError(err) ? undefined : err,
        retry_in_ms: delay,
      },
      'revocation job failed; will retry',
    );
    await job.reschedule(now() + delay, attempts, job.payload);
  }

  return { run, onError };
}
