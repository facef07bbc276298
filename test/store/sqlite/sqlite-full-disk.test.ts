import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { checkedStore } from '../../../src/store/checked-store.js';
import { SqliteStore } from '../../../src/store/sqlite/sqlite-store.js';
import type { Store } from '../../../src/store/store.js';
import { makeLink } from '../store-contract.js';
import { limitFileSize, liftFileSizeLimit, sqliteFilesBytes } from './file-size-limit.js';
import { startStoreProcess, type Outcome, type StoreProcess } from './store-process.js';

/**
 * The question each test answers: on a full disk, what did the caller get, and what was stored?
 * A write may be refused (store_unavailable) or succeed, but its answer must match the file: no
 * sequence number, flow state or "ok" for something that is not (or is still) stored.
 * The store runs in a process of its own whose file-size limit is the disk (file-size-limit.ts).
 */

const root = mkdtempSync(join(tmpdir(), 'linkvault-sqlite-full-'));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const freshPath = (): string => join(root, `case-${++n}`, 'linkvault.db');
const HOUR_MS = 3_600_000;

/** Fills the disk of the store process: documents are written until one is refused. */
async function fillDisk(proc: StoreProcess, path: string): Promise<void> {
  limitFileSize(proc.pid, sqliteFilesBytes(path));
  for (let i = 0; i < 10_000; i++) {
    const put = await proc.call('putJobStatus', {
      id: `filler-${i}`,
      status: { pad: 'x'.repeat(2000) },
    });
    if (!put.ok) {
      assert.equal(put.code, 'store_unavailable');
      return;
    }
  }
  assert.fail('the disk never filled up');
}

/** Reads the file with a store of the test's own, once the store process has gone. */
async function readBack<T>(path: string, read: (store: Store) => Promise<T>): Promise<T> {
  const store = checkedStore(new SqliteStore({ path }));
  try {
    return await read(store);
  } finally {
    await store.close();
  }
}

function answerOf(outcome: Outcome): string {
  return outcome.ok ? 'ok' : outcome.code;
}

describe('SqliteStore on a full disk', () => {
  it('when the disk is full, then 400 audit appends are all refused with store_unavailable and the store works again once there is room', async () => {
    const path = freshPath();
    const proc = await startStoreProcess(path);
    try {
      const first = await proc.call('appendAudit', { atMs: 1, type: 'before', data: {} });
      assert.deepEqual(first, { ok: true, value: '1' });
      await fillDisk(proc, path);

      const answers = new Map<string, number>();
      const claimed: string[] = [];
      for (let i = 0; i < 400; i++) {
        const outcome = await proc.call('appendAudit', {
          atMs: 2,
          type: 'while.full',
          requestId: `full-${i}`,
          data: { i },
        });
        answers.set(answerOf(outcome), (answers.get(answerOf(outcome)) ?? 0) + 1);
        if (outcome.ok) claimed.push(String(outcome.value));
      }
      liftFileSizeLimit(proc.pid);
      const afterRoom = await proc.call('appendAudit', { atMs: 3, type: 'after', data: {} });
      assert.equal(afterRoom.ok, true);
      await proc.stop();

      const stored = await readBack(path, async (store) =>
        (await store.readAudit(undefined, 1000)).map((e) => ({ seq: e.seq, type: e.type })),
      );
      // A seq handed out for a record that is not there (a later record may reuse the number).
      const claimedButNotStored = claimed.filter(
        (seq) => !stored.some((e) => e.seq === seq && e.type === 'while.full'),
      );
      assert.deepEqual(
        { answers: Object.fromEntries(answers), claimedButNotStored: claimedButNotStored.length },
        { answers: { store_unavailable: 400 }, claimedButNotStored: 0 },
      );
      assert.deepEqual(
        stored.map((e) => e.type),
        ['before', 'after'],
      );
      assert.equal(stored[1]!.seq, (afterRoom as { value: string }).value);
    } finally {
      await proc.stop();
    }
  });

  it('when the disk is full, then every write method is refused and leaves the file as it was (a flow state is never both handed out and still stored)', async () => {
    const path = freshPath();
    const proc = await startStoreProcess(path);
    const now = Date.now();
    const link = makeLink();
    const newLink = makeLink();
    const session = {
      id: 'ses_full_1',
      tenantId: 'tenant-a',
      userId: 'user-1',
      providers: [],
      returnTo: null,
      serviceId: 'crm-sync',
      createdAtMs: now,
      expiresAtMs: now + HOUR_MS,
    };
    const grant = {
      id: 'grt_full_1',
      serviceId: 'crm-sync',
      tenantId: null,
      providerId: null,
      linkId: link.id,
      scopes: null,
      purpose: 'tests',
      createdAtMs: now,
      expiresAtMs: null,
    };
    const flow = { verifier: 'v-full-disk', nonce: 'n' };
    let leases: Record<string, string> = {};
    let lockA = '';
    let lockB = '';
    try {
      // While the disk has room: one of each record the writes below change.
      const ok = async (outcome: Promise<Outcome>): Promise<unknown> => {
        const got = await outcome;
        assert.equal(got.ok, true, JSON.stringify(got));
        return (got as { value: unknown }).value;
      };
      await ok(proc.call('saveLink', link, null));
      await ok(proc.call('putFlowState', 'flow-full', flow, 600));
      await ok(proc.call('putSession', session));
      await ok(proc.call('putGrant', grant));
      lockA = (await ok(proc.call('acquireLock', 'lock-a', 60_000))) as string;
      lockB = (await ok(proc.call('acquireLock', 'lock-b', 60_000))) as string;
      for (const id of ['job-1', 'job-2', 'job-3', 'job-4'])
        await ok(proc.call('enqueue', { id, kind: 'k', payload: { id }, attempts: 0, runAtMs: 0 }));
      const claimed = (await ok(proc.call('claimJobs', now, 2, HOUR_MS))) as {
        id: string;
        leaseToken: string;
      }[];
      leases = Object.fromEntries(claimed.map((j) => [j.id, j.leaseToken]));
      assert.deepEqual(Object.keys(leases).sort(), ['job-1', 'job-2']);

      await fillDisk(proc, path);
      const readWhileFull = await proc.call('getLink', link.id);
      assert.equal(readWhileFull.ok, true, 'reads still work on a full disk');

      const outcomes: Record<string, Outcome> = {
        appendAudit: await proc.call('appendAudit', { atMs: now, type: 'full', data: {} }),
        takeFlowState: await proc.call('takeFlowState', 'flow-full'),
        putFlowState: await proc.call('putFlowState', 'flow-new', flow, 600),
        'saveLink (create)': await proc.call('saveLink', newLink, null),
        'saveLink (update)': await proc.call('saveLink', { ...link, status: 'revoked' }, 1),
        touchLink: await proc.call('touchLink', link.id, now + 1000),
        putSession: await proc.call('putSession', { ...session, id: 'ses_full_2' }),
        deleteSession: await proc.call('deleteSession', session.id),
        putGrant: await proc.call('putGrant', { ...grant, id: 'grt_full_2' }),
        deleteGrant: await proc.call('deleteGrant', grant.id),
        putRevocation: await proc.call('putRevocation', { linkId: link.id, record: { by: 'x' } }),
        putJobStatus: await proc.call('putJobStatus', { id: 'status-new', status: { a: 1 } }),
        acquireLock: await proc.call('acquireLock', 'lock-new', 60_000),
        extendLock: await proc.call('extendLock', 'lock-a', lockA, 10 * HOUR_MS),
        releaseLock: await proc.call('releaseLock', 'lock-b', lockB),
        enqueue: await proc.call('enqueue', {
          id: 'job-5',
          kind: 'k',
          payload: {},
          attempts: 0,
          runAtMs: 0,
        }),
        claimJobs: await proc.call('claimJobs', now, 5, HOUR_MS),
        completeJob: await proc.call('completeJob', 'job-1', leases['job-1']!),
        rescheduleJob: await proc.call('rescheduleJob', 'job-2', leases['job-2']!, now, 7),
        replaceJobPayload: await proc.call(
          'replaceJobPayload',
          'job-3',
          { id: 'job-3' },
          { id: 'job-3', replaced: true },
        ),
      };
      liftFileSizeLimit(proc.pid);
      await proc.stop();

      // What the file holds, read by another connection: did each write take effect?
      const applied = await readBack(path, async (store) => {
        const db = new Database(path, { readonly: true });
        try {
          const lockUntil = (name: string) =>
            (
              db.prepare('SELECT expires_at_ms AS t FROM locks WHERE name = ?').get(name) as
                { t: number } | undefined
            )?.t;
          const job = (id: string) =>
            db.prepare('SELECT payload, attempts, lease_token FROM queue WHERE id = ?').get(id) as
              { payload: string; attempts: number; lease_token: string | null } | undefined;
          return {
            appendAudit: (await store.readAudit()).some((e) => e.type === 'full'),
            takeFlowState: (await store.takeFlowState('flow-full')) === null,
            putFlowState: (await store.takeFlowState('flow-new')) !== null,
            'saveLink (create)': (await store.getLink(newLink.id)) !== null,
            'saveLink (update)': (await store.getLink(link.id))!.version === 2,
            touchLink: (await store.getLink(link.id))!.lastUsedAtMs === now + 1000,
            putSession: (await store.getSession('ses_full_2')) !== null,
            deleteSession: (await store.getSession(session.id)) === null,
            putGrant: (await store.getGrant('grt_full_2')) !== null,
            deleteGrant: (await store.getGrant(grant.id)) === null,
            putRevocation: (await store.getRevocation(link.id)) !== null,
            putJobStatus: (await store.getJobStatus('status-new')) !== null,
            acquireLock: lockUntil('lock-new') !== undefined,
            extendLock: lockUntil('lock-a')! > now + HOUR_MS,
            releaseLock: lockUntil('lock-b') === undefined,
            enqueue: job('job-5') !== undefined,
            claimJobs: job('job-4')!.lease_token !== null,
            completeJob: job('job-1') === undefined,
            rescheduleJob: job('job-2')!.attempts === 7,
            replaceJobPayload: JSON.parse(job('job-3')!.payload).replaced === true,
          } as Record<string, boolean>;
        } finally {
          db.close();
        }
      });

      const seen = Object.fromEntries(
        Object.entries(outcomes).map(([name, o]) => [
          name,
          { answer: answerOf(o), applied: applied[name] },
        ]),
      );
      // A take may also succeed, if it deleted what it handed out; never hand it out and keep it.
      const take = outcomes.takeFlowState!;
      const expectedTake =
        take.ok && take.value !== null
          ? { answer: 'ok', applied: true }
          : { answer: 'store_unavailable', applied: false };
      if (take.ok) assert.deepEqual(take.value, flow);
      const expected = Object.fromEntries(
        Object.keys(outcomes).map((name) => [
          name,
          name === 'takeFlowState' ? expectedTake : { answer: 'store_unavailable', applied: false },
        ]),
      );
      assert.deepEqual(seen, expected);
    } finally {
      await proc.stop();
    }
  });
});
