import type { Logger } from 'pino';
import type { Config } from '../../config.js';
import { createJobWorker, type JobHandler, type JobWorkerOptions } from '../../jobs/job-worker.js';
import { Throttle } from '../../jobs/throttle.js';
import type { Vault } from '../../keys/vault.js';
import type { Metrics } from '../../metrics.js';
import type { OAuthTokenClient } from '../../oauth/oauth-client.js';
import type { Catalogue } from '../../providers/catalogue.js';
import type { Store } from '../../store/store.js';
import type { Audit } from '../audit/audit.js';
import { createBulkRevocationJob, type BulkRevocationJobOptions } from './bulk-revocation-job.js';
import { createDormantSweep, type DormantSweepOptions } from './dormant-sweep.js';
import {
  createProviderRevocationJob,
  type ProviderRevocationJobOptions,
} from './provider-revocation-job.js';
import {
  BULK_REVOCATION_JOB_KIND,
  PROVIDER_REVOCATION_JOB_KIND,
  type Revocation,
} from './revocation.js';

/**
 * The background half of revocation, run on every replica: a job worker over the store's queue
 * with two kinds (the provider step of each revocation, bulk revocations) and the dormant-link
 * sweep.
 *
 * Provider calls are throttled per provider (a GCRA token bucket per provider id and process):
 * a bulk revocation of thousands of links must not trip the provider's rate limit. A 429 (or a
 * 503 with Retry-After) pauses that provider for Retry-After and halves its rate, which then
 * recovers slowly.
 */

export interface RevocationWorkerOptions
  extends
    JobWorkerOptions,
    ProviderRevocationJobOptions,
    BulkRevocationJobOptions,
    DormantSweepOptions {
  /** Provider calls per second per provider (and per replica). */
  readonly ratePerSecond: number;
  /** Calls allowed in a burst. */
  readonly burst: number;
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
export function revocationWorkerOptionsFrom(
  config: Pick<Config, 'dormantLinkDays' | 'providerTimeoutMs'>,
): Partial<RevocationWorkerOptions> {
  return {
    dormantLinkDays: config.dormantLinkDays,
    leaseMs:
      2 * config.providerTimeoutMs + DEFAULT_REVOCATION_WORKER_OPTIONS.maxThrottleWaitMs + 10_000,
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
  /**
   * Handlers of other job kinds sharing the durable queue (webhook deliveries): one worker claims
   * every kind, so no kind is claimed and put back by a worker that cannot run it.
   */
  readonly otherJobs?: Readonly<Record<string, JobHandler>>;
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

/** stop() waits this long for work in progress. */
const STOP_WAIT_MS = 5_000;

export function createRevocationWorker(deps: RevocationWorkerDeps): RevocationWorker {
  const { store, revocation, log } = deps;
  const now = deps.now ?? Date.now;
  const options: RevocationWorkerOptions = {
    ...DEFAULT_REVOCATION_WORKER_OPTIONS,
    ...(deps.options ?? {}),
  };
  const throttle = new Throttle(options.ratePerSecond, options.burst, now);

  const jobs = createJobWorker({
    name: 'revocation worker',
    store,
    handlers: {
      [PROVIDER_REVOCATION_JOB_KIND]: createProviderRevocationJob({
        ...deps,
        now,
        throttle,
        options,
      }),
      [BULK_REVOCATION_JOB_KIND]: createBulkRevocationJob({ ...deps, now, options }),
      ...deps.otherJobs,
    },
    log,
    now,
    options,
  });
  const dormant = createDormantSweep({ store, revocation, log, now, options });

  let started = false;
  let unsubscribe: (() => void) | undefined;

  return {
    name: 'revocation-worker',
    start() {
      if (started) return;
      started = true;
      unsubscribe = revocation.onJobQueued(jobs.wake);
      jobs.start();
      dormant.start();
    },
    async stop() {
      unsubscribe?.();
      await Promise.all([jobs.stop(STOP_WAIT_MS), dormant.stop(STOP_WAIT_MS)]);
      started = false;
    },
    wake: jobs.wake,
    runOnce: jobs.runOnce,
    sweepDormant: dormant.sweep,
  };
}
