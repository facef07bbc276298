import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import pino from 'pino';
import {
  createJobWorker,
  type ClaimedJob,
  type JobHandler,
  type JobWorkerOptions,
} from '../../src/jobs/job-worker.js';
import type { ScannedJob } from '../../src/store/store.js';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';

const root = mkdtempSync(join(tmpdir(), 'linkvault-job-worker-test-'));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
function freshPath(): string {
  return join(root, `case-${++n}.db`);
}

const log = pino({ level: 'silent' });
const OPTIONS: JobWorkerOptions = {
  pollIntervalMs: 60_000,
  batchSize: 8,
  concurrency: 2,
  leaseMs: 30_000,
  backoffBaseMs: 1_000,
  backoffMaxMs: 60_000,
};
const T0 = 1_700_000_000_000;

function setUp(handlers: Record<string, JobHandler>, path = freshPath()) {
  const clock = { nowMs: T0 };
  const store = new SqliteStore({ path });
  const worker = createJobWorker({
    name: 'test worker',
    store,
    handlers,
    log,
    now: () => clock.nowMs,
    options: OPTIONS,
  });
  return { clock, store, worker, path };
}

async function scan(store: SqliteStore): Promise<ScannedJob[]> {
  const jobs: ScannedJob[] = [];
  for await (const job of store.scanJobs()) jobs.push(job);
  return jobs;
}

describe('createJobWorker', () => {
  it('when a handler completes its job, then the job leaves the queue and the round counts it', async () => {
    const seen: unknown[] = [];
    const { store, worker } = setUp({
      echo: {
        async run(job) {
          seen.push(job.payload);
          assert.equal(await job.complete(), true);
        },
      },
    });
    try {
      await store.enqueue({
        id: 'job-1',
        kind: 'echo',
        payload: { n: 1 },
        attempts: 0,
        runAtMs: T0,
      });
      assert.equal(await worker.runOnce(), 1);
      assert.deepEqual(seen, [{ n: 1 }]);
      assert.equal(await store.countJobs(), 0);
    } finally {
      store.close();
    }
  });

  it('when a job is not due yet, then it is not claimed until it is', async () => {
    const { clock, store, worker } = setUp({
      echo: { run: async (job) => void (await job.complete()) },
    });
    try {
      await store.enqueue({
        id: 'job-1',
        kind: 'echo',
        payload: {},
        attempts: 0,
        runAtMs: T0 + 5_000,
      });
      assert.equal(await worker.runOnce(), 0);
      clock.nowMs = T0 + 5_000;
      assert.equal(await worker.runOnce(), 1);
      assert.equal(await store.countJobs(), 0);
    } finally {
      store.close();
    }
  });

  it('when a handler throws, then the job is kept, due after one backoff step, its attempts counted up', async () => {
    let runs = 0;
    const { clock, store, worker } = setUp({
      flaky: {
        async run(job) {
          runs++;
          assert.equal(job.attempts, runs - 1);
          if (runs < 3) throw new Error('peer down');
          await job.complete();
        },
      },
    });
    try {
      await store.enqueue({
        id: 'job-1',
        kind: 'flaky',
        payload: { keep: 'me' },
        attempts: 0,
        runAtMs: T0,
      });
      assert.equal(await worker.runOnce(), 1);
      const [first] = await scan(store);
      assert.deepEqual(
        { ...first!, runAtMs: undefined },
        {
          id: 'job-1',
          kind: 'flaky',
          payload: { keep: 'me' },
          attempts: 1,
          runAtMs: undefined,
          leased: false,
        },
      );
      // backoffBaseMs ± 20% jitter.
      assert.ok(
        first!.runAtMs >= T0 + 800 && first!.runAtMs <= T0 + 1_200,
        `runAtMs ${first!.runAtMs - T0}`,
      );
      assert.equal(await worker.runOnce(), 0);

      clock.nowMs = first!.runAtMs;
      assert.equal(await worker.runOnce(), 1);
      const [second] = await scan(store);
      assert.equal(second!.attempts, 2);
      // The second step doubles the first.
      assert.ok(
        second!.runAtMs >= clock.nowMs + 1_600 && second!.runAtMs <= clock.nowMs + 2_400,
        `runAtMs ${second!.runAtMs - clock.nowMs}`,
      );

      clock.nowMs = second!.runAtMs;
      assert.equal(await worker.runOnce(), 1);
      assert.equal(runs, 3);
      assert.equal(await store.countJobs(), 0);
    } finally {
      store.close();
    }
  });

  it('when a handler that throws has onError, then onError decides what happens to the job', async () => {
    const errors: unknown[] = [];
    const { store, worker } = setUp({
      giving_up: {
        async run() {
          throw new Error('never works');
        },
        async onError(job, err) {
          errors.push((err as Error).message);
          await job.complete();
        },
      },
    });
    try {
      await store.enqueue({
        id: 'job-1',
        kind: 'giving_up',
        payload: {},
        attempts: 0,
        runAtMs: T0,
      });
      assert.equal(await worker.runOnce(), 1);
      assert.deepEqual(errors, ['never works']);
      assert.equal(await store.countJobs(), 0);
    } finally {
      store.close();
    }
  });

  it('when a handler reschedules with attempts and a new payload, then the next claim sees them', async () => {
    const claims: { attempts: number; payload: unknown }[] = [];
    const { clock, store, worker } = setUp({
      stepper: {
        async run(job) {
          claims.push({ attempts: job.attempts, payload: job.payload });
          const step = (job.payload.step as number) + 1;
          if (step === 3) await job.complete();
          else
            assert.equal(await job.reschedule(clock.nowMs + 100, job.attempts + 1, { step }), true);
        },
      },
    });
    try {
      await store.enqueue({
        id: 'job-1',
        kind: 'stepper',
        payload: { step: 0 },
        attempts: 0,
        runAtMs: T0,
      });
      for (let i = 0; i < 3; i++) {
        assert.equal(await worker.runOnce(), 1);
        clock.nowMs += 100;
      }
      assert.deepEqual(claims, [
        { attempts: 0, payload: { step: 0 } },
        { attempts: 1, payload: { step: 1 } },
        { attempts: 2, payload: { step: 2 } },
      ]);
      assert.equal(await store.countJobs(), 0);
    } finally {
      store.close();
    }
  });

  it('when a job is of a kind the worker has no handler for, then it goes back unchanged and is not counted', async () => {
    const { store, worker } = setUp({ echo: { run: async (job) => void (await job.complete()) } });
    try {
      await store.enqueue({
        id: 'job-1',
        kind: 'someone_else',
        payload: { a: 1 },
        attempts: 4,
        runAtMs: T0 - 10,
      });
      assert.equal(await worker.runOnce(), 0);
      assert.deepEqual(await scan(store), [
        {
          id: 'job-1',
          kind: 'someone_else',
          payload: { a: 1 },
          attempts: 4,
          runAtMs: T0 - 10,
          leased: false,
        },
      ]);
    } finally {
      store.close();
    }
  });

  it('when a worker dies holding a job, then after a restart the job comes back once its lease ends, and the dead lease can no longer end it', async () => {
    // The first process "dies" inside the handler: it neither completes nor reschedules.
    const first = setUp({ work: { run: async () => undefined } });
    await first.store.enqueue({
      id: 'job-1',
      kind: 'work',
      payload: { x: 1 },
      attempts: 0,
      runAtMs: T0,
    });
    assert.equal(await first.worker.runOnce(), 1);
    first.store.close();

    const done: unknown[] = [];
    const second = setUp(
      { work: { run: async (job) => void done.push(job.payload, await job.complete()) } },
      first.path,
    );
    try {
      second.clock.nowMs = T0 + OPTIONS.leaseMs - 1;
      assert.equal(await second.worker.runOnce(), 0);
      second.clock.nowMs = T0 + OPTIONS.leaseMs;
      assert.equal(await second.worker.runOnce(), 1);
      assert.deepEqual(done, [{ x: 1 }, true]);
      assert.equal(await second.store.countJobs(), 0);
    } finally {
      second.store.close();
    }

    // A worker that outlived its lease (stalled, not dead) can no longer end the job.
    const third = setUp({ work: { run: async () => undefined } });
    try {
      await third.store.enqueue({
        id: 'job-2',
        kind: 'work',
        payload: {},
        attempts: 0,
        runAtMs: T0,
      });
      let stale: ClaimedJob | undefined;
      const claimer = createJobWorker({
        name: 'stale',
        store: third.store,
        handlers: { work: { run: async (job) => void (stale = job) } },
        log,
        now: () => T0,
        options: OPTIONS,
      });
      assert.equal(await claimer.runOnce(), 1);
      third.clock.nowMs = T0 + OPTIONS.leaseMs;
      assert.equal(await third.worker.runOnce(), 1);
      assert.equal(await stale!.complete(), false);
      assert.equal(await stale!.reschedule(T0, 1), false);
      assert.equal(await third.store.countJobs(), 1);
    } finally {
      third.store.close();
    }
  });

  it('when started and woken, then a queued job runs without waiting for the poll, and stop waits for it', async () => {
    const store = new SqliteStore({ path: freshPath() });
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let ran!: () => void;
    const running = new Promise<void>((resolve) => (ran = resolve));
    let completed = false;
    const worker = createJobWorker({
      name: 'test worker',
      store,
      handlers: {
        slow: {
          async run(job) {
            ran();
            await gate;
            completed = await job.complete();
          },
        },
      },
      log,
      now: Date.now,
      options: OPTIONS,
    });
    try {
      worker.start();
      worker.start();
      await store.enqueue({
        id: 'job-1',
        kind: 'slow',
        payload: {},
        attempts: 0,
        runAtMs: Date.now(),
      });
      worker.wake();
      await running;
      const stopped = worker.stop(5_000);
      release();
      await stopped;
      assert.equal(completed, true);
      assert.equal(await store.countJobs(), 0);
    } finally {
      store.close();
    }
  });
});
