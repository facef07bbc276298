import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import {
  applySqliteMigrations,
  SQLITE_MIGRATIONS,
  type SqliteMigration,
} from '../../../src/store/sqlite/sqlite-migrations.js';
import { SqliteStore } from '../../../src/store/sqlite/sqlite-store.js';
import { checkedStore } from '../../../src/store/checked-store.js';
import { createStore } from '../../../src/store/create-store.js';
import { Metrics } from '../../../src/metrics.js';
import { isLinkvaultError } from '../../../src/errors.js';
import { makeLink, runStoreContract } from '../store-contract.js';
import { runReleaseStoreContract } from '../release-store-contract.js';

const root = mkdtempSync(join(tmpdir(), 'linkvault-sqlite-test-'));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
function freshPath(): string {
  return join(root, `case-${++n}`, 'nested', 'linkvault.db');
}

runStoreContract('sqlite', async () => {
  const path = freshPath();
  const store = checkedStore(new SqliteStore({ path }));
  return { store, cleanup: () => store.close() };
});

runReleaseStoreContract('sqlite', async () => {
  const store = checkedStore(new SqliteStore({ path: freshPath() }));
  return { store, cleanup: () => store.close() };
});

function appliedMigrations(path: string): { version: number; applied_at_ms: number }[] {
  const db = new Database(path, { readonly: true });
  try {
    return db
      .prepare('SELECT version, applied_at_ms FROM schema_migrations ORDER BY version')
      .all() as { version: number; applied_at_ms: number }[];
  } finally {
    db.close();
  }
}

describe('SqliteStore', () => {
  it('when the database directory is missing, then it is created and the file opens in WAL mode', async () => {
    const path = freshPath();
    assert.equal(existsSync(path), false);
    const store = new SqliteStore({ path });
    await store.ping();
    await store.close();
    assert.equal(existsSync(path), true);
    const db = new Database(path, { readonly: true });
    assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    db.close();
  });

  it('when the store is closed and reopened, then links, queue, audit, grants and sessions are all still there', async () => {
    const path = freshPath();
    const first = new SqliteStore({ path });
    const link = makeLink();
    await first.saveLink(link, null);
    await first.touchLink(link.id, link.createdAtMs + 10);
    await first.enqueue({
      id: 'job-1',
      kind: 'revoke',
      payload: { link_id: link.id },
      attempts: 2,
      runAtMs: 1000,
    });
    await first.enqueue({ id: 'job-2', kind: 'revoke', payload: {}, attempts: 0, runAtMs: 2000 });
    const [leased] = await first.claimJobs(1000, 1, 60_000);
    const seq = await first.appendAudit({
      atMs: 1,
      type: 'link.created',
      requestId: 'r1',
      data: { link_id: link.id },
    });
    await first.putGrant({
      id: 'g1',
      serviceId: 's',
      tenantId: null,
      providerId: null,
      linkId: null,
      scopes: null,
      purpose: 'p',
      createdAtMs: 1,
      expiresAtMs: null,
    });
    const session = {
      id: 'ses-1',
      tenantId: 't',
      userId: 'u',
      providers: [],
      returnTo: null,
      serviceId: 's',
      createdAtMs: Date.now(),
      expiresAtMs: Date.now() + 60_000,
    };
    await first.putSession(session);
    await first.putFlowState('flow-1', { a: 1 }, 60);
    await first.close();

    const second = new SqliteStore({ path });
    try {
      assert.deepEqual(await second.getLink(link.id), {
        ...link,
        version: 1,
        lastUsedAtMs: link.createdAtMs + 10,
      });
      assert.equal(await second.countJobs(), 2);
      // The lease survives the restart too: job-1 is still leased, job-2 is due.
      assert.deepEqual(
        (await second.claimJobs(2000, 10, 1000)).map((j) => j.id),
        ['job-2'],
      );
      assert.equal(await second.completeJob('job-1', leased!.leaseToken!), true);
      assert.deepEqual(
        (await second.readAudit()).map((e) => e.seq),
        [seq],
      );
      assert.equal((await second.getGrant('g1'))?.purpose, 'p');
      assert.deepEqual(await second.getSession('ses-1'), session);
      assert.deepEqual(await second.takeFlowState('flow-1'), { a: 1 });
      // Sequence ids keep increasing after a restart (AUTOINCREMENT never reuses one).
      const next = await second.appendAudit({ atMs: 2, type: 't', data: {} });
      assert.ok(BigInt(next) > BigInt(seq));
    } finally {
      await second.close();
    }
  });

  it('when opened repeatedly, then each migration is applied exactly once, and an appended one applies once on the next open', async () => {
    const path = freshPath();
    const known = SQLITE_MIGRATIONS.length;
    const versions = SQLITE_MIGRATIONS.map((m) => m.version);
    await new SqliteStore({ path }).close();
    const once = appliedMigrations(path);
    assert.deepEqual(
      once.map((m) => m.version),
      versions,
    );
    await new SqliteStore({ path }).close();
    assert.deepEqual(appliedMigrations(path), once, 'reopening applies nothing again');

    let nextRuns = 0;
    const next: SqliteMigration = {
      version: known + 1,
      description: 'add a column',
      up: (db) => {
        nextRuns++;
        db.exec('ALTER TABLE links ADD COLUMN note TEXT');
      },
    };
    const withNext = [...SQLITE_MIGRATIONS, next];
    await new SqliteStore({ path, migrations: withNext }).close();
    await new SqliteStore({ path, migrations: withNext }).close();
    assert.equal(nextRuns, 1);
    assert.deepEqual(
      appliedMigrations(path).map((m) => m.version),
      [...versions, known + 1],
    );
    assert.equal(appliedMigrations(path)[0]!.applied_at_ms, once[0]!.applied_at_ms);

    // An older linkvault refuses a database migrated past what it knows.
    assert.throws(
      () => new SqliteStore({ path }),
      new RegExp(`schema version ${known + 1}, newer than this linkvault knows \\(${known}\\)`),
    );
  });

  it('when a database from before the expiry index is opened, then migration 2 files its links and listings use the index', async () => {
    const path = freshPath();
    mkdirSync(dirname(path), { recursive: true });
    const db = new Database(path);
    applySqliteMigrations(db, SQLITE_MIGRATIONS.slice(0, 1));
    const insert = db.prepare(
      'INSERT INTO links (id, tenant_id, user_id, provider_id, status, provider_account_id, version, created_at_ms, last_used_at_ms, body) VALUES (?, ?, ?, ?, ?, ?, 1, ?, NULL, ?)',
    );
    const now = Date.now();
    const old = [
      makeLink({ id: 'lnk_v1_soon', accessTokenExpiresAtMs: now + 1000 }),
      makeLink({ id: 'lnk_v1_later', accessTokenExpiresAtMs: now + 3_600_000 }),
      makeLink({
        id: 'lnk_v1_uncertain',
        accessTokenExpiresAtMs: now + 3_600_000,
        metadata: { 'linkvault.refresh_uncertain_since': new Date(now).toISOString() },
      }),
      makeLink({ id: 'lnk_v1_reauth', status: 'needs_reauth', accessTokenExpiresAtMs: now + 1000 }),
      makeLink({
        id: 'lnk_v1_revoked',
        status: 'revoked',
        tokens: null,
        accessTokenExpiresAtMs: null,
      }),
    ];
    for (const l of old)
      insert.run(
        l.id,
        l.tenantId,
        l.userId,
        l.providerId,
        l.status,
        l.providerAccountId,
        l.createdAtMs,
        JSON.stringify({ ...l, version: 1 }),
      );
    db.close();

    const store = new SqliteStore({ path });
    try {
      assert.deepEqual(
        (await store.listLinksExpiringBefore(now + 60_000, 100)).map((l) => l.id),
        ['lnk_v1_uncertain', 'lnk_v1_soon'],
      );
      const check = new Database(path, { readonly: true });
      const plan = check
        .prepare(
          'EXPLAIN QUERY PLAN SELECT body, version, last_used_at_ms FROM links WHERE refresh_due_at_ms IS NOT NULL AND refresh_due_at_ms < ? ORDER BY refresh_due_at_ms, id LIMIT ?',
        )
        .all(now, 10) as { detail: string }[];
      check.close();
      assert.equal(plan.length, 1, `one step, no temporary sort: ${JSON.stringify(plan)}`);
      assert.match(
        plan[0]!.detail,
        /^SEARCH links USING INDEX links_refresh_due \(/,
        'an index search, no scan',
      );
    } finally {
      await store.close();
    }
  });

  it('when a migration fails, then nothing of it is applied and the open fails', async () => {
    const path = freshPath();
    await new SqliteStore({ path }).close();
    const broken: SqliteMigration = {
      version: SQLITE_MIGRATIONS.length + 1,
      description: 'half-done',
      up: (db) => {
        db.exec('CREATE TABLE half (x INTEGER)');
        db.exec('THIS IS NOT SQL');
      },
    };
    assert.throws(
      () => new SqliteStore({ path, migrations: [...SQLITE_MIGRATIONS, broken] }),
      /near "THIS": syntax error/,
    );
    assert.deepEqual(
      appliedMigrations(path).map((m) => m.version),
      SQLITE_MIGRATIONS.map((m) => m.version),
    );
    const db = new Database(path, { readonly: true });
    assert.deepEqual(
      db.prepare("SELECT count(*) AS n FROM sqlite_master WHERE name = 'half'").get(),
      { n: 0 },
    );
    db.close();
  });

  it('when another connection holds the write lock, then a write rejects store_unavailable after the busy timeout and is counted', async () => {
    const path = freshPath();
    const metrics = new Metrics();
    const store = await createStore({ kind: 'sqlite', sqlitePath: path }, { metrics });
    const blocker = new Database(path);
    blocker.exec('BEGIN IMMEDIATE');
    try {
      const started = Date.now();
      await assert.rejects(
        store.appendAudit({ atMs: 1, type: 't', data: {} }),
        (err: unknown) => isLinkvaultError(err, 'store_unavailable') && err.retryAfterSeconds === 1,
      );
      const elapsed = Date.now() - started;
      assert.ok(
        elapsed >= 900 && elapsed < 2000,
        `waited the ~1 s busy timeout, took ${elapsed} ms`,
      );
      assert.equal(metrics.storeErrors.get({ store: 'sqlite' }), 1);
    } finally {
      blocker.exec('ROLLBACK');
      blocker.close();
    }
    // Once the lock is gone, writes go through.
    assert.match(await store.appendAudit({ atMs: 1, type: 't', data: {} }), /^\d+$/);
    await store.close();
  });

  it('when rows expire, then the periodic purge deletes them from the file', async () => {
    const path = freshPath();
    const store = new SqliteStore({ path, purgeIntervalMs: 50 });
    await store.putFlowState('f', { a: 1 }, 0.1);
    await store.putSession({
      id: 's',
      tenantId: 't',
      userId: 'u',
      providers: [],
      returnTo: null,
      serviceId: 'x',
      createdAtMs: 0,
      expiresAtMs: Date.now() + 100,
    });
    await store.acquireLock('l', 100);
    await store.putFlowState('keep', { a: 1 }, 60);
    const db = new Database(path, { readonly: true });
    const count = (): number =>
      (
        db
          .prepare(
            'SELECT (SELECT count(*) FROM flow_state) + (SELECT count(*) FROM sessions) + (SELECT count(*) FROM locks) AS n',
          )
          .get() as { n: number }
      ).n;
    assert.equal(count(), 4);
    const deadline = Date.now() + 3000;
    while (count() !== 1 && Date.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(count(), 1, 'only the unexpired flow state remains');
    db.close();
    await store.close();
  });
});

describe('SqliteStore grant index migration', () => {
  it('when grants were stored before the grant index (schema 3), then migration 4 files them and readForRelease finds them', async () => {
    const path = freshPath();
    mkdirSync(dirname(path), { recursive: true });
    const db = new Database(path);
    applySqliteMigrations(db, SQLITE_MIGRATIONS.slice(0, 3));
    const link = makeLink({ tenantId: 'tenant-old', providerId: 'hubspot' });
    const grants = [
      { linkId: link.id, tenantId: null, providerId: null },
      { linkId: null, tenantId: 'tenant-old', providerId: 'hubspot' },
      { linkId: null, tenantId: 'tenant-old', providerId: null },
      { linkId: null, tenantId: 'tenant-other', providerId: null },
    ].map((g, i) => ({
      id: `grt_old_${i}`,
      serviceId: 'svc-old',
      scopes: null,
      purpose: 'old',
      createdAtMs: 1000 + i,
      expiresAtMs: null,
      ...g,
    }));
    const insert = db.prepare(
      'INSERT INTO grants (id, service_id, created_at_ms, body) VALUES (?, ?, ?, ?)',
    );
    for (const g of grants) insert.run(g.id, g.serviceId, g.createdAtMs, JSON.stringify(g));
    db.close();

    const store = checkedStore(new SqliteStore({ path }));
    try {
      assert.ok(await store.saveLink(link, null));
      const read = await store.readForRelease('svc-old', link.id);
      assert.deepEqual(read?.grants.map((g) => g.id).sort(), [
        'grt_old_0',
        'grt_old_1',
        'grt_old_2',
      ]);
    } finally {
      await store.close();
    }
  });
});
