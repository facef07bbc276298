/**
 * SqliteStore: the embedded, one-node Store adapter (better-sqlite3).
 *
 * - WAL journal with synchronous=FULL: a committed write (a rotated refresh token, an audit
 *   record) survives a power loss, not only a process crash, before the caller is told it succeeded.
 * - busy_timeout of about a second; SQLITE_BUSY and I/O failures become store_unavailable.
 * - Schema migrations (sqlite-migrations.ts) are applied at open.
 * - Input is not checked here: createStore wraps the adapter in checked-store.ts.
 * - Rows with a lifetime (flow state, sessions, locks) are checked at read and purged periodically.
 * - Every read-modify-write runs in one transaction; better-sqlite3 is synchronous, so inside one
 *   process nothing interleaves with it either.
 * - A write is acknowledged only once its commit has succeeded. In autocommit mode the commit runs
 *   when the statement finishes, and better-sqlite3's `.get()` steps once and then resets the
 *   statement without reporting the reset's result: a write through `.get()` (`INSERT … RETURNING`)
 *   whose commit fails (a full disk: the WAL cannot grow) would answer with a row that was never
 *   stored. So writes go through `.run()` (which steps to the end and throws on a failed commit),
 *   and a write that must also read does so inside `db.transaction`, whose COMMIT throws.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type pino from 'pino';
import { LinkvaultError, isLinkvaultError } from '../../errors.js';
import { refuseAuditCursor, refuseTenantChange } from '../store-input.js';
import { expiryIndexScore } from '../expiry-index-score.js';
import {
  SQLITE_MIGRATIONS,
  applySqliteMigrations,
  type SqliteMigration,
} from './sqlite-migrations.js';
import type {
  AuditEvent,
  FlowStateRecord,
  JobStatusRecord,
  QueueJob,
  RevocationRecordRow,
  ReleaseCommit,
  ReleaseExpectation,
  ReleaseRead,
  ScannedJob,
  Store,
} from '../store.js';
import type { GrantRecord } from '../../links/release/grants.js';
import type { WebhookDeliveryRecord, WebhookEndpointRecord, WebhookStore } from '../store.js';
import { createSqliteWebhooks } from './sqlite-webhooks.js';
import type { LinkFilter, LinkRecord } from '../../links/link.js';
import type { SessionRecord } from '../../links/connect/sessions.js';
import type { AuditFilter, AuditPage, AuditQueryOptions } from '../store.js';
import { createSqliteAudit, type SqliteAudit } from './sqlite-audit.js';

type Db = Database.Database;

/** The one audit shard of a SQLite store (AuditLogStore). */
export const SQLITE_AUDIT_SHARD = 'main';

export interface SqliteStoreOptions {
  /** Database file; its directory is created when missing. `:memory:` for a throwaway store. */
  readonly path: string;
  /**
   * Events the audit log may hold before appends fail closed (audit_unavailable): the exporter (or
   * the retention) keeps it below; reaching it means they have stopped. Default: no bound.
   */
  readonly auditMaxEvents?: number;
  /** How long a writer waits for another connection's lock before store_unavailable. */
  readonly busyTimeoutMs?: number;
  /** How often expired flow state, sessions and locks are deleted. */
  readonly purgeIntervalMs?: number;
  /** The schema steps; defaults to SQLITE_MIGRATIONS. */
  readonly migrations?: readonly SqliteMigration[];
  readonly log?: pino.Logger | undefined;
  /** Called once for every operation that failed with store_unavailable (metrics). */
  readonly onUnavailable?: () => void;
}

/** sqlite result codes that mean "the database cannot serve now", not "this input is wrong". */
const UNAVAILABLE_CODES =
  /^SQLITE_(BUSY|LOCKED|IOERR|FULL|CANTOPEN|READONLY|NOMEM|PROTOCOL|NOLFS|INTERRUPT)/;

function randomToken(): string {
  return randomBytes(18).toString('base64url');
}

interface LinkRow {
  body: string;
  version: number;
  last_used_at_ms: number | null;
}

interface QueueRow {
  id: string;
  kind: string;
  payload: string;
  attempts: number;
  run_at_ms: number;
}

export class SqliteStore implements Store {
  readonly kind = 'sqlite' as const;
  readonly #db: Db;
  readonly #log: pino.Logger | undefined;
  readonly #onUnavailable: (() => void) | undefined;
  readonly #purgeTimer: NodeJS.Timeout;
  readonly #listStatements = new Map<string, Database.Statement>();
  #closed = false;

  readonly #s: ReturnType<typeof prepareStatements>;
  readonly #webhooks: WebhookStore;
  readonly #audit: SqliteAudit;
  /** The stored JSON of each grant readForRelease returned (commitRelease compares it). */
  readonly #grantJson = new WeakMap<GrantRecord, string>();
  #lastAuditFullLogMs = 0;

  /** Opens (creating when missing) the database and applies pending migrations. Throws on failure. */
  constructor(options: SqliteStoreOptions) {
    this.#log = options.log;
    this.#onUnavailable = options.onUnavailable;
    if (options.path !== ':memory:') mkdirSync(dirname(options.path), { recursive: true });
    const db = new Database(options.path);
    try {
      db.pragma(`busy_timeout = ${Math.max(0, Math.trunc(options.busyTimeoutMs ?? 1000))}`);
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = FULL');
      db.pragma('foreign_keys = ON');
      // Shredding (revocation) must leave no copy of a sealed token set or wrapped data key in the
      // file: freed cells are zeroed, and the WAL is truncated after a shred (#truncateWal).
      db.pragma('secure_delete = ON');
      applySqliteMigrations(db, options.migrations ?? SQLITE_MIGRATIONS);
      this.#s = prepareStatements(db);
      this.#audit = createSqliteAudit(
        db,
        SQLITE_AUDIT_SHARD,
        options.auditMaxEvents ?? Number.POSITIVE_INFINITY,
        (held) => this.#onAuditFull(held),
      );
    } catch (err) {
      db.close();
      throw err;
    }
    this.#db = db;
    this.#webhooks = createSqliteWebhooks(db, (fn) => this.#run(fn));
    this.#purgeTimer = setInterval(() => this.#purgeExpired(), options.purgeIntervalMs ?? 60_000);
    this.#purgeTimer.unref();
  }

  #onAuditFull(held: number): void {
    const now = Date.now();
    if (now - this.#lastAuditFullLogMs < 10_000) return;
    this.#lastAuditFullLogMs = now;
    this.#log?.error(
      { store: 'sqlite', audit_events: held },
      'the audit log is full (its events have not been exported): releases fail closed until the exporter catches up',
    );
  }

  /** Runs `fn` against the open database, translating sqlite failures by result code. */
  #run<T>(fn: () => T): Promise<T> {
    try {
      if (this.#closed)
        throw new LinkvaultError('store_unavailable', {
          detail: 'the store is closed',
          retryAfterSeconds: 1,
        });
      return Promise.resolve(fn());
    } catch (err) {
      return Promise.reject(this.#translate(err));
    }
  }

  #translate(err: unknown): unknown {
    if (isLinkvaultError(err)) {
      if (err.code === 'store_unavailable') this.#onUnavailable?.();
      return err;
    }
    const code = err instanceof Database.SqliteError ? err.code : undefined;
    if (code !== undefined && UNAVAILABLE_CODES.test(code)) {
      this.#onUnavailable?.();
      // A full or failing disk refuses every write until an operator acts; a busy lock passes.
      if (/^SQLITE_(FULL|IOERR)/.test(code))
        this.#log?.error(
          { store: 'sqlite', code },
          'sqlite store unavailable: a write was refused (disk full or failing)',
        );
      else this.#log?.warn({ store: 'sqlite', code }, 'sqlite store unavailable');
      return new LinkvaultError('store_unavailable', { cause: err, retryAfterSeconds: 1 });
    }
    return new LinkvaultError('internal_error', { cause: err });
  }

  #purgeExpired(): void {
    if (this.#closed) return;
    try {
      const now = Date.now();
      this.#db.transaction(() => {
        this.#s.purgeFlow.run(now);
        this.#s.purgeSessions.run(now);
        this.#s.purgeLocks.run(now);
      })();
    } catch (err) {
      // A busy database is retried at the next tick; reads check expiry anyway.
      this.#log?.warn(
        { store: 'sqlite', code: err instanceof Database.SqliteError ? err.code : 'unknown' },
        'sqlite purge of expired rows failed',
      );
    }
  }

  async ping(): Promise<void> {
    await this.#run(() => this.#s.ping.get());
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#purgeTimer);
    this.#db.close();
  }

  // ---- links ----

  #toLink(row: LinkRow): LinkRecord {
    return {
      ...(JSON.parse(row.body) as LinkRecord),
      version: row.version,
      lastUsedAtMs: row.last_used_at_ms,
    };
  }

  getLink(id: string): Promise<LinkRecord | null> {
    return this.#run(() => {
      const row = this.#s.getLink.get(id);
      return row ? this.#toLink(row) : null;
    });
  }

  listLinks(filter: LinkFilter, limit?: number): Promise<LinkRecord[]> {
    return this.#run(() => {
      const max = limit ?? 1000;
      const where: string[] = [];
      const params: unknown[] = [];
      const add = (column: string, value: string | undefined): void => {
        if (value === undefined) return;
        where.push(`${column} = ?`);
        params.push(value);
      };
      add('tenant_id', filter.tenantId);
      add('user_id', filter.userId);
      add('provider_id', filter.providerId);
      add('status', filter.status);
      add('provider_account_id', filter.providerAccountId);
      const sql = `SELECT body, version, last_used_at_ms FROM links${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at_ms DESC, id DESC LIMIT ?`;
      let stmt = this.#listStatements.get(sql);
      if (!stmt) {
        stmt = this.#db.prepare(sql);
        this.#listStatements.set(sql, stmt);
      }
      return (stmt.all(...params, max) as LinkRow[]).map((row) => this.#toLink(row));
    });
  }

  saveLink(link: LinkRecord, expectedVersion: number | null): Promise<LinkRecord | null> {
    return this.#run(() => {
      return this.#db
        .transaction((): LinkRecord | null => {
          const current = this.#s.getLinkMeta.get(link.id);
          if (expectedVersion === null) {
            if (current) return null;
          } else {
            if (!current || current.version !== expectedVersion) {
              if (current && current.tenant_id !== link.tenantId) refuseTenantChange();
              return null;
            }
            if (current.tenant_id !== link.tenantId) refuseTenantChange();
          }
          // lastUsedAtMs only moves forward: a save carrying an older read must not undo a touch.
          const lastUsedAtMs = maxNullable(current?.last_used_at_ms ?? null, link.lastUsedAtMs);
          const stored: LinkRecord = { ...link, version: (expectedVersion ?? 0) + 1, lastUsedAtMs };
          this.#s.upsertLink.run({
            refresh_due_at_ms: expiryIndexScore(stored),
            id: stored.id,
            tenant_id: stored.tenantId,
            user_id: stored.userId,
            provider_id: stored.providerId,
            status: stored.status,
            provider_account_id: stored.providerAccountId,
            version: stored.version,
            created_at_ms: stored.createdAtMs,
            last_used_at_ms: lastUsedAtMs,
            body: JSON.stringify(stored),
          });
          return stored;
        })
        .immediate();
    }).then((stored) => {
      if (stored && stored.tokens === null && expectedVersion !== null) this.#truncateWal();
      return stored;
    });
  }

  /**
   * Old WAL frames still hold earlier page images (sealed records, wrapped data keys) until the WAL is
   * checkpointed and truncated; after a shred do that now rather than at the next automatic checkpoint.
   * Best effort: a busy checkpoint is retried by the next shred or automatic checkpoint.
   */
  #truncateWal(): void {
    try {
      this.#db.pragma('wal_checkpoint(TRUNCATE)');
    } catch (err) {
      this.#log?.warn(
        { err: { code: (err as { code?: string }).code } },
        'sqlite WAL truncate after shred failed; retried at the next checkpoint',
      );
    }
  }

  listLinksExpiringBefore(cutoffMs: number, limit: number): Promise<LinkRecord[]> {
    return this.#run(() => {
      return this.#s.linksExpiringBefore.all(cutoffMs, limit).map((row) => this.#toLink(row));
    });
  }

  async touchLink(id: string, lastUsedAtMs: number): Promise<void> {
    await this.#run(() => {
      this.#s.touchLink.run(lastUsedAtMs, id, lastUsedAtMs);
    });
  }

  // ---- flow state ----

  async putFlowState(key: string, value: FlowStateRecord, ttlSeconds: number): Promise<void> {
    await this.#run(() => {
      this.#s.putFlow.run(key, JSON.stringify(value), Date.now() + Math.ceil(ttlSeconds * 1000));
    });
  }

  takeFlowState(key: string): Promise<FlowStateRecord | null> {
    return this.#run(() => {
      // Read and delete in one transaction: the value is handed out only once the delete has
      // committed, so a flow state is never both returned and still stored (single use).
      const row = this.#db
        .transaction(() => {
          const found = this.#s.getFlow.get(key);
          if (found) this.#s.deleteFlow.run(key);
          return found;
        })
        .immediate();
      if (!row || row.expires_at_ms <= Date.now()) return null;
      return JSON.parse(row.value) as FlowStateRecord;
    });
  }

  // ---- sessions ----

  async putSession(session: SessionRecord): Promise<void> {
    await this.#run(() => {
      this.#s.putSession.run(session.id, JSON.stringify(session), session.expiresAtMs);
    });
  }

  getSession(id: string): Promise<SessionRecord | null> {
    return this.#run(() => {
      const row = this.#s.getSession.get(id);
      if (!row || row.expires_at_ms <= Date.now()) return null;
      return JSON.parse(row.body) as SessionRecord;
    });
  }

  async deleteSession(id: string): Promise<void> {
    await this.#run(() => {
      this.#s.deleteSession.run(id);
    });
  }

  // ---- grants ----

  async putGrant(grant: GrantRecord): Promise<void> {
    await this.#run(() => {
      // A grant that names a link but no tenant is filed under its link's tenant (the Redis adapter
      // needs it; both refuse alike): such a grant for a link that does not exist is refused.
      if (
        grant.tenantId === null &&
        grant.linkId !== null &&
        !this.#s.getLinkMeta.get(grant.linkId)
      )
        throw new LinkvaultError('link_not_found', { detail: 'the grant names no stored link' });
      this.#s.putGrant.run({
        id: grant.id,
        service_id: grant.serviceId,
        created_at_ms: grant.createdAtMs,
        body: JSON.stringify(grant),
        tenant_id: grant.tenantId,
        provider_id: grant.providerId,
        link_id: grant.linkId,
      });
    });
  }

  getGrant(id: string): Promise<GrantRecord | null> {
    return this.#run(() => {
      const row = this.#s.getGrant.get(id);
      return row ? (JSON.parse(row.body) as GrantRecord) : null;
    });
  }

  listGrants(serviceId?: string): Promise<GrantRecord[]> {
    return this.#run(() => {
      const rows =
        serviceId === undefined
          ? this.#s.listGrants.all()
          : this.#s.listGrantsOfService.all(serviceId);
      return rows.map((row) => JSON.parse(row.body) as GrantRecord);
    });
  }

  deleteGrant(id: string): Promise<boolean> {
    return this.#run(() => this.#s.deleteGrant.run(id).changes > 0);
  }

  // ---- token release ----

  readForRelease(serviceId: string, linkId: string): Promise<ReleaseRead | null> {
    return this.#run(() => {
      const row = this.#s.getLink.get(linkId);
      if (!row) return null;
      const link = this.#toLink(row);
      const grants = this.#s.releaseGrants
        .all({
          service: serviceId,
          link: linkId,
          tenant: link.tenantId,
          provider: link.providerId,
        })
        .map((g) => {
          const grant = JSON.parse(g.body) as GrantRecord;
          // Stored exactly as read: what commitRelease compares when the release states what it expects.
          this.#grantJson.set(grant, g.body);
          return grant;
        });
      return { link, grants };
    });
  }

  commitRelease(
    linkId: string,
    grantId: string,
    event: AuditEvent,
    expect?: ReleaseExpectation,
  ): Promise<ReleaseCommit> {
    const grantJson =
      expect === undefined
        ? null
        : (this.#grantJson.get(expect.grant) ?? JSON.stringify(expect.grant));
    return this.#run(() =>
      this.#db
        .transaction((): ReleaseCommit => {
          // One IMMEDIATE transaction: the checks and the append see the same database, and no
          // other writer (a revocation, a grant deletion) can commit in between. `.run()` and the
          // transaction's COMMIT both throw when the write cannot be made durable (SQLITE_FULL).
          const link = this.#s.releaseLinkState.get(linkId);
          if (!link) return { released: false, reason: 'link_not_found' };
          if (link.status !== 'active')
            return { released: false, reason: 'not_active', status: link.status };
          if (link.has_tokens !== 1) return { released: false, reason: 'no_tokens' };
          if (expect !== undefined) {
            if (link.version !== expect.linkVersion) return { released: false, reason: 'changed' };
            const grant = this.#s.getGrant.get(grantId);
            if (!grant) return { released: false, reason: 'grant_gone' };
            if (grant.body !== grantJson) return { released: false, reason: 'changed' };
          } else if (!this.#s.grantExists.get(grantId))
            return { released: false, reason: 'grant_gone' };
          return { released: true, seq: this.#audit.append(event) };
        })
        .immediate(),
    );
  }

  // ---- revocation records and job status: one documents slot each ----

  async putRevocation(row: RevocationRecordRow): Promise<void> {
    await this.#run(() => this.#s.revocations.put(row.linkId, row.record));
  }

  getRevocation(linkId: string): Promise<RevocationRecordRow | null> {
    return this.#run(() => {
      const record = this.#s.revocations.get(linkId);
      return record === null ? null : { linkId, record };
    });
  }

  async putJobStatus(row: JobStatusRecord): Promise<void> {
    await this.#run(() => this.#s.jobStatus.put(row.id, row.status));
  }

  getJobStatus(id: string): Promise<JobStatusRecord | null> {
    return this.#run(() => {
      const status = this.#s.jobStatus.get(id);
      return status === null ? null : { id, status };
    });
  }

  // ---- webhooks (sqlite-webhooks.ts) ----

  putWebhookEndpoint(endpoint: WebhookEndpointRecord): Promise<void> {
    return this.#webhooks.putWebhookEndpoint(endpoint);
  }

  getWebhookEndpoint(id: string): Promise<WebhookEndpointRecord | null> {
    return this.#webhooks.getWebhookEndpoint(id);
  }

  listWebhookEndpoints(): Promise<WebhookEndpointRecord[]> {
    return this.#webhooks.listWebhookEndpoints();
  }

  deleteWebhookEndpoint(id: string): Promise<boolean> {
    return this.#webhooks.deleteWebhookEndpoint(id);
  }

  putWebhookDelivery(delivery: WebhookDeliveryRecord): Promise<void> {
    return this.#webhooks.putWebhookDelivery(delivery);
  }

  listWebhookDeliveries(endpointId: string, limit: number): Promise<WebhookDeliveryRecord[]> {
    return this.#webhooks.listWebhookDeliveries(endpointId, limit);
  }

  // ---- locks ----

  acquireLock(name: string, ttlMs: number): Promise<string | null> {
    return this.#run(() => {
      return this.#db
        .transaction((): string | null => {
          const now = Date.now();
          const held = this.#s.getLock.get(name);
          if (held && held.expires_at_ms > now) return null;
          const owner = randomToken();
          this.#s.putLock.run(name, owner, now + ttlMs);
          return owner;
        })
        .immediate();
    });
  }

  extendLock(name: string, owner: string, ttlMs: number): Promise<boolean> {
    return this.#run(() => {
      const now = Date.now();
      return this.#s.extendLock.run(now + ttlMs, name, owner, now).changes > 0;
    });
  }

  releaseLock(name: string, owner: string): Promise<boolean> {
    return this.#run(() => {
      return this.#s.releaseLock.run(name, owner, Date.now()).changes > 0;
    });
  }

  // ---- audit ----

  appendAudit(event: AuditEvent): Promise<string> {
    return this.#run(() => {
      // `.run()`, not `INSERT … RETURNING` through `.get()`: the sequence number is claimed only
      // after the commit succeeded (see the file comment). seq is the rowid (INTEGER PRIMARY KEY).
      return this.#audit.append(event);
    });
  }

  readAudit(afterSeq?: string, limit?: number): Promise<AuditEvent[]> {
    return this.#run(() => {
      const max = limit ?? 1000;
      let after = 0;
      if (afterSeq !== undefined) {
        if (typeof afterSeq !== 'string' || !/^\d{1,16}$/.test(afterSeq)) refuseAuditCursor();
        after = Number(afterSeq);
      }
      return this.#s.readAudit.all(after, max).map((row) => ({
        seq: String(row.seq),
        atMs: row.at_ms,
        type: row.type,
        requestId: row.request_id,
        data: parseObject(row.data),
      }));
    });
  }

  /** SQLite keeps one audit shard. */
  listAuditShards(): Promise<string[]> {
    return Promise.resolve([SQLITE_AUDIT_SHARD]);
  }

  async readAuditShard(shard: string, afterSeq?: string, limit?: number): Promise<AuditEvent[]> {
    if (shard !== SQLITE_AUDIT_SHARD) return [];
    return this.readAudit(afterSeq, limit);
  }

  trimAuditShard(shard: string, throughSeq: string | null, keep: number): Promise<number> {
    if (shard !== SQLITE_AUDIT_SHARD) return Promise.resolve(0);
    return this.#run(() => this.#audit.trim(throughSeq, keep));
  }

  queryAudit(filter: AuditFilter, options: AuditQueryOptions): Promise<AuditPage> {
    return this.#run(() => this.#audit.query(filter, options));
  }

  // ---- queue ----

  async enqueue(job: Omit<QueueJob, 'leaseToken'>): Promise<void> {
    await this.#run(() => {
      this.#s.enqueue.run({
        id: job.id,
        kind: job.kind,
        payload: JSON.stringify(job.payload),
        attempts: job.attempts,
        run_at_ms: job.runAtMs,
      });
    });
  }

  claimJobs(nowMs: number, limit: number, leaseMs: number): Promise<QueueJob[]> {
    return this.#run(() => {
      return this.#db
        .transaction((): QueueJob[] => {
          const due = this.#s.dueJobs.all(nowMs, limit);
          return due.map((row) => {
            const leaseToken = randomToken();
            this.#s.leaseJob.run({
              lease_token: leaseToken,
              lease_until_ms: nowMs + leaseMs,
              id: row.id,
            });
            return {
              id: row.id,
              kind: row.kind,
              payload: parseObject(row.payload),
              attempts: row.attempts,
              runAtMs: row.run_at_ms,
              leaseToken,
            };
          });
        })
        .immediate();
    });
  }

  completeJob(id: string, leaseToken: string): Promise<boolean> {
    // A finished job may have carried sealed material (a revocation's token set): truncate the WAL too.
    return this.#run(() => this.#s.completeJob.run(id, leaseToken).changes > 0).then((done) => {
      if (done) this.#truncateWal();
      return done;
    });
  }

  rescheduleJob(
    id: string,
    leaseToken: string,
    runAtMs: number,
    attempts: number,
    payload?: Readonly<Record<string, unknown>>,
  ): Promise<boolean> {
    return this.#run(() => {
      const payloadJson = payload === undefined ? null : JSON.stringify(payload);
      return (
        this.#s.rescheduleJob.run({
          id,
          lease_token: leaseToken,
          run_at_ms: runAtMs,
          attempts,
          payload: payloadJson,
        }).changes > 0
      );
    });
  }

  countJobs(): Promise<number> {
    return this.#run(() => this.#s.countJobs.get()!.n);
  }

  async *scanJobs(): AsyncIterable<ScannedJob> {
    // Keyset pages by id (as scanLinkIds): no cursor stays open while the consumer awaits.
    let after = '';
    for (;;) {
      const page = await this.#run(() => this.#s.jobPage.all(after, 500));
      for (const row of page) {
        yield {
          id: row.id,
          kind: row.kind,
          payload: parseObject(row.payload),
          attempts: row.attempts,
          runAtMs: row.run_at_ms,
          leased: row.leased === 1,
        };
      }
      if (page.length < 500) return;
      after = page[page.length - 1]!.id;
    }
  }

  replaceJobPayload(
    id: string,
    expected: Readonly<Record<string, unknown>>,
    payload: Readonly<Record<string, unknown>>,
  ): Promise<boolean> {
    return this.#run(() => {
      const expectedJson = JSON.stringify(expected);
      const payloadJson = JSON.stringify(payload);
      // One UPDATE is one atomic statement: the lease check and the payload comparison see the same row.
      return (
        this.#s.replaceJobPayload.run({ id, expected: expectedJson, payload: payloadJson })
          .changes > 0
      );
    });
  }

  // ---- maintenance ----

  async *scanLinkIds(): AsyncIterable<string> {
    // Keyset pages, not one open cursor: an open better-sqlite3 iterator would block every other
    // statement on this connection while the consumer awaits between ids.
    let after = '';
    for (;;) {
      const page = await this.#run(() => this.#s.linkIdPage.all(after, 500).map((r) => r.id));
      for (const id of page) yield id;
      if (page.length < 500) return;
      after = page[page.length - 1]!;
    }
  }
}

function maxNullable(a: number | null, b: number | null): number | null {
  if (a === null) return b;
  if (b === null) return a;
  return Math.max(a, b);
}

/** JSON documents by key in one table: the revocation records and the job status rows share this slot. */
interface SqliteDocuments {
  put(key: string, value: Readonly<Record<string, unknown>>): void;
  get(key: string): Record<string, unknown> | null;
}

function prepareDocuments(
  db: Db,
  table: 'revocations' | 'job_status',
  keyColumn: 'link_id' | 'id',
): SqliteDocuments {
  // Table and column come from the two literals above, never from input.
  const put = prepareWrite<[string, string]>(
    db,
    `INSERT OR REPLACE INTO ${table} (${keyColumn}, body) VALUES (?, ?)`,
  );
  const get = prepareRead<[string], { body: string }>(
    db,
    `SELECT body FROM ${table} WHERE ${keyColumn} = ?`,
  );
  return {
    put: (key, value) => void put.run(key, JSON.stringify(value)),
    get: (key) => {
      const row = get.get(key);
      return row ? parseObject(row.body) : null;
    },
  };
}

function parseObject(json: string): Record<string, unknown> {
  return JSON.parse(json) as Record<string, unknown>;
}

/**
 * A statement that writes, exposing only `.run()`: it steps to the end, so a failed autocommit
 * (SQLITE_FULL, SQLITE_IOERR) throws instead of being dropped at reset as `.get()` would drop it.
 * A write that returns rows (`RETURNING`) is refused when the store opens.
 */
function prepareWrite<P extends unknown[] = unknown[]>(
  db: Db,
  sql: string,
): Pick<Database.Statement<P>, 'run'> {
  const stmt = db.prepare<P>(sql);
  if (stmt.readonly || stmt.reader)
    throw new Error(
      `sqlite-store: a write statement must neither be read-only nor return rows: ${sql}`,
    );
  return stmt;
}

/** A statement that only reads; one that would write is refused when the store opens. */
function prepareRead<P extends unknown[] = unknown[], R = unknown>(
  db: Db,
  sql: string,
): Database.Statement<P, R> {
  const stmt = db.prepare<P, R>(sql);
  if (!stmt.readonly) throw new Error(`sqlite-store: a read statement must not write: ${sql}`);
  return stmt;
}

function prepareStatements(db: Db) {
  return {
    ping: prepareRead(db, 'SELECT 1'),
    getLink: prepareRead<[string], LinkRow>(
      db,
      'SELECT body, version, last_used_at_ms FROM links WHERE id = ?',
    ),
    getLinkMeta: prepareRead<
      [string],
      { version: number; tenant_id: string; last_used_at_ms: number | null }
    >(db, 'SELECT version, tenant_id, last_used_at_ms FROM links WHERE id = ?'),
    upsertLink: prepareWrite(
      db,
      `INSERT INTO links (id, tenant_id, user_id, provider_id, status, provider_account_id, version, created_at_ms, last_used_at_ms, refresh_due_at_ms, body)
       VALUES (@id, @tenant_id, @user_id, @provider_id, @status, @provider_account_id, @version, @created_at_ms, @last_used_at_ms, @refresh_due_at_ms, @body)
       ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, provider_id = excluded.provider_id, status = excluded.status,
         provider_account_id = excluded.provider_account_id, version = excluded.version, created_at_ms = excluded.created_at_ms,
         last_used_at_ms = excluded.last_used_at_ms, refresh_due_at_ms = excluded.refresh_due_at_ms, body = excluded.body`,
    ),
    touchLink: prepareWrite<[number, string, number]>(
      db,
      'UPDATE links SET last_used_at_ms = ? WHERE id = ? AND (last_used_at_ms IS NULL OR last_used_at_ms < ?)',
    ),
    linkIdPage: prepareRead<[string, number], { id: string }>(
      db,
      'SELECT id FROM links WHERE id > ? ORDER BY id LIMIT ?',
    ),
    // Served by the partial index links_refresh_due (migration 2).
    linksExpiringBefore: prepareRead<[number, number], LinkRow>(
      db,
      'SELECT body, version, last_used_at_ms FROM links WHERE refresh_due_at_ms IS NOT NULL AND refresh_due_at_ms < ? ORDER BY refresh_due_at_ms, id LIMIT ?',
    ),

    putFlow: prepareWrite<[string, string, number]>(
      db,
      'INSERT OR REPLACE INTO flow_state (key, value, expires_at_ms) VALUES (?, ?, ?)',
    ),
    getFlow: prepareRead<[string], { value: string; expires_at_ms: number }>(
      db,
      'SELECT value, expires_at_ms FROM flow_state WHERE key = ?',
    ),
    deleteFlow: prepareWrite<[string]>(db, 'DELETE FROM flow_state WHERE key = ?'),
    purgeFlow: prepareWrite<[number]>(db, 'DELETE FROM flow_state WHERE expires_at_ms <= ?'),

    putSession: prepareWrite<[string, string, number]>(
      db,
      'INSERT OR REPLACE INTO sessions (id, body, expires_at_ms) VALUES (?, ?, ?)',
    ),
    getSession: prepareRead<[string], { body: string; expires_at_ms: number }>(
      db,
      'SELECT body, expires_at_ms FROM sessions WHERE id = ?',
    ),
    deleteSession: prepareWrite<[string]>(db, 'DELETE FROM sessions WHERE id = ?'),
    purgeSessions: prepareWrite<[number]>(db, 'DELETE FROM sessions WHERE expires_at_ms <= ?'),

    putGrant: prepareWrite<
      [
        {
          id: string;
          service_id: string;
          created_at_ms: number;
          body: string;
          tenant_id: string | null;
          provider_id: string | null;
          link_id: string | null;
        },
      ]
    >(
      db,
      `INSERT OR REPLACE INTO grants (id, service_id, created_at_ms, body, tenant_id, provider_id, link_id)
       VALUES (@id, @service_id, @created_at_ms, @body, @tenant_id, @provider_id, @link_id)`,
    ),
    grantExists: prepareRead<[string], { one: number }>(
      db,
      'SELECT 1 AS one FROM grants WHERE id = ?',
    ),
    // Served by grants_release_link and grants_release_tenant (migration 3).
    releaseGrants: prepareRead<
      [{ service: string; link: string; tenant: string; provider: string }],
      { body: string }
    >(
      db,
      `SELECT body FROM grants WHERE service_id = @service AND link_id = @link
       UNION ALL
       SELECT body FROM grants WHERE service_id = @service AND link_id IS NULL AND tenant_id = @tenant
         AND (provider_id IS NULL OR provider_id = @provider)`,
    ),
    releaseLinkState: prepareRead<
      [string],
      { status: string; has_tokens: number; version: number }
    >(
      db,
      `SELECT status, version, json_extract(body, '$.tokens') IS NOT NULL AS has_tokens FROM links WHERE id = ?`,
    ),
    getGrant: prepareRead<[string], { body: string }>(db, 'SELECT body FROM grants WHERE id = ?'),
    listGrants: prepareRead<[], { body: string }>(
      db,
      'SELECT body FROM grants ORDER BY created_at_ms, id',
    ),
    listGrantsOfService: prepareRead<[string], { body: string }>(
      db,
      'SELECT body FROM grants WHERE service_id = ? ORDER BY created_at_ms, id',
    ),
    deleteGrant: prepareWrite<[string]>(db, 'DELETE FROM grants WHERE id = ?'),

    revocations: prepareDocuments(db, 'revocations', 'link_id'),
    jobStatus: prepareDocuments(db, 'job_status', 'id'),

    getLock: prepareRead<[string], { owner: string; expires_at_ms: number }>(
      db,
      'SELECT owner, expires_at_ms FROM locks WHERE name = ?',
    ),
    putLock: prepareWrite<[string, string, number]>(
      db,
      'INSERT OR REPLACE INTO locks (name, owner, expires_at_ms) VALUES (?, ?, ?)',
    ),
    extendLock: prepareWrite<[number, string, string, number]>(
      db,
      'UPDATE locks SET expires_at_ms = ? WHERE name = ? AND owner = ? AND expires_at_ms > ?',
    ),
    releaseLock: prepareWrite<[string, string, number]>(
      db,
      'DELETE FROM locks WHERE name = ? AND owner = ? AND expires_at_ms > ?',
    ),
    purgeLocks: prepareWrite<[number]>(db, 'DELETE FROM locks WHERE expires_at_ms <= ?'),

    readAudit: prepareRead<
      [number, number],
      { seq: number; at_ms: number; type: string; request_id: string | null; data: string }
    >(
      db,
      'SELECT seq, at_ms, type, request_id, data FROM audit WHERE seq > ? ORDER BY seq LIMIT ?',
    ),

    enqueue: prepareWrite<
      [{ id: string; kind: string; payload: string; attempts: number; run_at_ms: number }]
    >(
      db,
      `INSERT INTO queue (id, kind, payload, attempts, run_at_ms, lease_token, lease_until_ms, due_at_ms)
       VALUES (@id, @kind, @payload, @attempts, @run_at_ms, NULL, NULL, @run_at_ms) ON CONFLICT (id) DO NOTHING`,
    ),
    dueJobs: prepareRead<[number, number], QueueRow>(
      db,
      'SELECT id, kind, payload, attempts, run_at_ms FROM queue WHERE due_at_ms <= ? ORDER BY due_at_ms, id LIMIT ?',
    ),
    leaseJob: prepareWrite<[{ lease_token: string; lease_until_ms: number; id: string }]>(
      db,
      'UPDATE queue SET lease_token = @lease_token, lease_until_ms = @lease_until_ms, due_at_ms = @lease_until_ms WHERE id = @id',
    ),
    completeJob: prepareWrite<[string, string]>(
      db,
      'DELETE FROM queue WHERE id = ? AND lease_token = ?',
    ),
    rescheduleJob: prepareWrite<
      [
        {
          id: string;
          lease_token: string;
          run_at_ms: number;
          attempts: number;
          payload: string | null;
        },
      ]
    >(
      db,
      `UPDATE queue SET run_at_ms = @run_at_ms, due_at_ms = @run_at_ms, attempts = @attempts, payload = coalesce(@payload, payload),
         lease_token = NULL, lease_until_ms = NULL
       WHERE id = @id AND lease_token = @lease_token`,
    ),
    countJobs: prepareRead<[], { n: number }>(db, 'SELECT count(*) AS n FROM queue'),
    jobPage: prepareRead<[string, number], QueueRow & { leased: number }>(
      db,
      'SELECT id, kind, payload, attempts, run_at_ms, lease_token IS NOT NULL AS leased FROM queue WHERE id > ? ORDER BY id LIMIT ?',
    ),
    replaceJobPayload: prepareWrite<[{ id: string; expected: string; payload: string }]>(
      db,
      'UPDATE queue SET payload = @payload WHERE id = @id AND lease_token IS NULL AND payload = @expected',
    ),
  };
}
