import type { Logger } from 'pino';
import type { JobHandler } from '../../jobs/job-worker.js';
import type { Connect } from './connect.js';

/**
 * The queue job that discards a pending_confirmation link left unconfirmed (docs/api.md: 10
 * minutes). connect.ts writes it, due at the link's deadline, before it writes the link itself, so
 * a restart or a crash between the two never leaves live tokens held without their end. The job
 * revokes through the revocation machinery (tombstone + durable provider revocation job); a link
 * that was confirmed, merged or revoked meanwhile completes the job with nothing to do.
 */

export interface ConfirmationExpiryJobDeps {
  readonly connect: Pick<Connect, 'expireConfirmation'>;
  readonly log: Logger;
}

export function createConfirmationExpiryJob(deps: ConfirmationExpiryJobDeps): JobHandler {
  return {
    async run(job) {
      const linkId = job.payload.link_id;
      if (typeof linkId !== 'string' || linkId === '') {
        deps.log.warn({ job_id: job.id }, 'confirmation expiry: job without a link id; dropped');
        await job.complete();
        return;
      }
      const result = await deps.connect.expireConfirmation(linkId);
      // A job that came due early (clock skew between replicas) waits for the link's own deadline.
      if (result.outcome === 'not_due') await job.reschedule(result.dueAtMs, job.attempts);
      else await job.complete();
    },
  };
}
