import type { Logger } from 'pino';
import type { QueueJob, Store } from '../store/store.js';
import { backoffMs, type BackoffOptions } from './backoff.js';
import { settleWithin } from './settle-within.js';

/** A job this worker holds the lease on; completing or rescheduling it goes through that lease. */
export interface ClaimedJob {
  readonly id: string;
  readonly kind: string;
  readonly payload: Readonly<Record<string, unknown>>;
  readonly attempts: number;
  readonly runAtMs: number;
  /** Removes the job; false when the lease was lost (another worker holds the job now). */
  complete(): Promise<boolean>;
  /** Puts the job back, due at `runAtMs`, with `attempts` and (when given) a new payload; false when the lease was lost. */
  reschedule(
    runAtMs: number,
    attempts: number,
    payload?: Readonly<Record<string, unknown>>,
  ): Promise<boolean>;
}

/** The work for one job kind. */
export interface JobHandler {
  /** Does the job and completes or reschedules it; a job left alone comes back when its lease ends. */
  run(job: ClaimedJob): Promise<void>;
  /**
   * Called when `run` throws, to complete or reschedule the job. Without it the job is due again
   * after one backoff step, its attempts counted up.
   */
  onError?(job: ClaimedJob, err: unknown): Promise<void>;
}

export interface JobWorkerOptions extends BackoffOptions {
  /** Idle poll of the queue. */
  readonly pollIntervalMs: number;
  /** Jobs claimed per poll. */
  readonly batchSize: number;
  /** Jobs handled at once. */
  readonly concurrency: number;
  /** Lease of a claimed job; must exceed a job's longest run. */
  readonly leaseMs: number;
}

export type JobWorkerStore = Pick<Store, 'claimJobs' | 'completeJob' | 'rescheduleJob'>;

export interface JobWorkerDeps {
  /** Names the worker in its log lines. */
  readonly name: string;
  readonly store: JobWorkerStore;
  /** Handlers by job kind; jobs of other kinds go back to the queue untouched (the queue is shared). */
  readonly handlers: Readonly<Record<string, JobHandler>>;
  readonly log: Logger;
  readonly now: () => number;
  readonly options: JobWorkerOptions;
}

export interface JobWorker {
  /** Starts polling the queue. Idempotent. */
  start(): void;
  /** Stops polling and resolves when the round in progress has finished, or after `waitMs`. */
  stop(waitMs: number): Promise<void>;
  /** Polls now instead of at the next tick. */
  wake(): void;
  /** One claim-and-handle round; resolves with the number of jobs of a known kind it claimed. */
  runOnce(): Promise<number>;
}

/**
 * A durable job worker: jobs live in the store, so a restart (or another replica) picks up where a
 * stopped worker left off; a claimed job is leased, so a crashed worker's job comes back when the
 * lease ends; a handler that throws never loses its job.
 */
export function createJobWorker(deps: JobWorkerDeps): JobWorker {
  const { name, store, handlers, log, now, options } = deps;

  let started = false;
  let stopping = false;
  let timer: NodeJS.Timeout | undefined;
  let current: Promise<unknown> | undefined;
  let wakeRequested = false;

  function claimed(job: QueueJob, leaseToken: string): ClaimedJob {
    return {
      id: job.id,
      kind: job.kind,
      payload: job.payload,
      attempts: job.attempts,
      runAtMs: job.runAtMs,
      complete: () => store.completeJob(job.id, leaseToken),
      reschedule: (runAtMs, attempts, payload) =>
        store.rescheduleJob(job.id, leaseToken, runAtMs, attempts, payload),
    };
  }

  async function handle(job: ClaimedJob): Promise<void> {
    const handler = handlers[job.kind];
    if (!handler) {
      // Not ours: hand it straight back, unchanged and due as before.
      await job.reschedule(job.runAtMs, job.attempts, job.payload);
      return;
    }
    try {
      await handler.run(job);
    } catch (err) {
      if (handler.onError) {
        await handler.onError(job, err);
        return;
      }
      const attempts = job.attempts + 1;
      const delay = backoffMs(attempts, options);
      log.warn(
        { err, job_id: job.id, job_kind: job.kind, attempts, retry_in_ms: delay },
        `${name}: job failed; will retry`,
      );
      await job.reschedule(now() + delay, attempts, job.payload);
    }
  }

  async function runOnce(): Promise<number> {
    const jobs = await store.claimJobs(now(), options.batchSize, options.leaseMs);
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < jobs.length) {
        const job = jobs[next++]!;
        if (!job.leaseToken) continue;
        try {
          await handle(claimed(job, job.leaseToken));
        } catch (err) {
          // Rescheduling itself failed (store down): the lease brings the job back.
          log.warn({ err, job_id: job.id }, `${name}: job left to its lease`);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(options.concurrency, jobs.length) }, lane));
    return jobs.filter((j) => Object.hasOwn(handlers, j.kind)).length;
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
      .catch((err: unknown) => log.warn({ err }, `${name}: poll failed`))
      .finally(() => {
        current = undefined;
        // A full batch or a wake-up during the round: go again at once.
        schedule(handled >= options.batchSize || wakeRequested ? 0 : options.pollIntervalMs);
      });
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
    start() {
      if (started) return;
      started = true;
      stopping = false;
      schedule(0);
    },
    async stop(waitMs) {
      stopping = true;
      if (timer) clearTimeout(timer);
      // Work in progress may wait on a slow peer; past the bound its lease hands it to the next start.
      await settleWithin(current, waitMs);
      started = false;
    },
    wake,
    runOnce,
  };
}
