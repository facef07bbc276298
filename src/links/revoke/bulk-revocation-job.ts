import type { Logger } from 'pino';
import { isLinkvaultError } from '../../errors.js';
import { backoffMs, type BackoffOptions } from '../../jobs/backoff.js';
import type { ClaimedJob, JobHandler } from '../../jobs/job-worker.js';
import type { Store } from '../../store/store.js';
import type { Audit } from '../audit/audit.js';
import { auditQuietly } from './audit-quietly.js';
import {
  bulkStatusRow,
  isTransient,
  parseRecord,
  REVOCATION_AUDIT,
  toLinkFilter,
  type BulkRevocationPayload,
  type ProviderRevocationStatus,
  type Revocation,
  type RevocationActor,
} from './revocation.js';

export interface BulkRevocationJobOptions extends BackoffOptions {
  /** Links tombstoned at once within a slice. */
  readonly concurrency: number;
  /** Links tombstoned per bulk-job claim. */
  readonly bulkSliceSize: number;
  /** How often a bulk job whose tombstones are done re-checks its provider steps. */
  readonly bulkPollMs: number;
}

export interface BulkRevocationJobDeps {
  readonly store: Pick<Store, 'listLinks' | 'getRevocation' | 'putJobStatus'>;
  readonly revocation: Pick<Revocation, 'revokeLink'>;
  readonly audit: Pick<Audit, 'record'>;
  readonly log: Logger;
  readonly now: () => number;
  readonly options: BulkRevocationJobOptions;
}

/** Provider steps looked up per slice, so one slice stays short however many links the job tombstoned. */
const BULK_PENDING_CHECKS_PER_SLICE = 1_000;

/**
 * A bulk revocation: each claim tombstones a slice of the matching links, publishes progress and
 * comes back; the job ends when no link is left to tombstone and every provider step it caused has
 * ended. The lease keeps it to one replica at a time.
 */
export function createBulkRevocationJob(deps: BulkRevocationJobDeps): JobHandler {
  const { store, revocation, log, now, options } = deps;

  async function run(job: ClaimedJob): Promise<void> {
    let p = job.payload as unknown as BulkRevocationPayload;
    if (typeof p.job_id !== 'string' || typeof p.filter !== 'object' || !Array.isArray(p.pending)) {
      log.error({ job_id: job.id }, 'revocation worker: malformed bulk job; dropping it');
      await job.complete();
      return;
    }
    const actor: RevocationActor = {
      revokedBy: 'admin',
      serviceId: p.service_id,
      reason: p.reason,
      requestId: p.request_id,
      bulkJobId: p.job_id,
    };
    const pending = [...p.pending];
    const skipped = new Set(p.skipped);
    const counts = {
      revoked: p.revoked,
      provider_confirmed: p.provider_confirmed,
      provider_failed: p.provider_failed,
      provider_unsupported: p.provider_unsupported,
    };
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
      const filter = toLinkFilter({
        tenantId: p.filter.tenant_id,
        userId: p.filter.user_id,
        providerId: p.filter.provider_id,
      });
      const want = Math.min(10_000, options.bulkSliceSize + skipped.size);
      let candidates = (await store.listLinks({ ...filter, status: 'active' }, want)).filter(
        (l) => !skipped.has(l.id),
      );
      if (candidates.length < options.bulkSliceSize) {
        const reauth = (await store.listLinks({ ...filter, status: 'needs_reauth' }, want)).filter(
          (l) => !skipped.has(l.id),
        );
        candidates = candidates.concat(reauth);
      }
      if (candidates.length < options.bulkSliceSize) {
        const held = await store.listLinks({ ...filter, status: 'pending_confirmation' }, want);
        candidates = candidates.concat(held.filter((l) => !skipped.has(l.id)));
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
            log.error(
              { err, link_id: link.id, job_id: p.job_id },
              'bulk revocation: a link could not be revoked; skipping it',
            );
            skipped.add(link.id);
          }
        }
      };
      await Promise.all(
        Array.from({ length: Math.min(options.concurrency, candidates.length) }, runOne),
      );
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
      await job.complete();
      await auditQuietly(
        deps,
        REVOCATION_AUDIT.bulkDone,
        { job_id: p.job_id, ...counts, total: Math.max(p.total, p.revoked) },
        p.request_id,
      );
      log.info({ job_id: p.job_id, ...counts }, 'bulk revocation done');
      return;
    }
    const delay =
      transientError !== undefined ? backoffMs(1, options) : exhausted ? options.bulkPollMs : 0;
    await job.reschedule(now() + delay, job.attempts, { ...p });
  }

  async function onError(job: ClaimedJob, err: unknown): Promise<void> {
    log.warn({ err, job_id: job.id }, 'bulk revocation slice failed; will retry');
    // A failed slice spends no attempt: bulk jobs have no attempt limit, progress is in the payload.
    await job.reschedule(now() + backoffMs(1, options), job.attempts, job.payload);
  }

  return { run, onError };
}
