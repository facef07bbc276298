/**
 * The SQLite schema, as versioned steps recorded in `schema_migrations` and applied at open, each
 * once, in its own IMMEDIATE transaction (two processes opening the same file do not both apply one).
 */
import type Database from 'better-sqlite3';
import { expiryIndexScore } from '../expiry-index-score.js';
import type { LinkRecord } from '../../links/link.js';
import type { GrantRecord } from '../../links/release/grants.js';

type Db = Database.Database;

/** One schema step. Append new steps at the end with the next version; never edit an applied one. */
export interface SqliteMigration {
  readonly version: number;
  readonly description: string;
  readonly up: (db: Db) => void;
}

export const SQLITE_MIGRATIONS: readonly SqliteMigration[] = [
  {
    version: 1,
    description: 'initial schema',
    up: (db) =>
      db.exec(`
        CREATE TABLE links (
          id TEXT PRIMARY KEY,
          tenant_id TEXT NOT NULL,
          user_id TEXT NOT NULL,
          provider_id TEXT NOT NULL,
          status TEXT NOT NULL,
          provider_account_id TEXT,
          version INTEGER NOT NULL,
          created_at_ms INTEGER NOT NULL,
          last_used_at_ms INTEGER,
          body TEXT NOT NULL
        ) STRICT;
        CREATE INDEX links_tenant_user ON links (tenant_id, user_id, created_at_ms);
        CREATE INDEX links_tenant_created ON links (tenant_id, created_at_ms);
        CREATE INDEX links_provider_account ON links (provider_account_id) WHERE provider_account_id IS NOT NULL;
        CREATE INDEX links_status_created ON links (status, created_at_ms);
        CREATE INDEX links_created ON links (created_at_ms);

        CREATE TABLE flow_state (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at_ms INTEGER NOT NULL) STRICT;
        CREATE INDEX flow_state_expiry ON flow_state (expires_at_ms);
        CREATE TABLE sessions (id TEXT PRIMARY KEY, body TEXT NOT NULL, expires_at_ms INTEGER NOT NULL) STRICT;
        CREATE INDEX sessions_expiry ON sessions (expires_at_ms);
        CREATE TABLE locks (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at_ms INTEGER NOT NULL) STRICT;
        CREATE INDEX locks_expiry ON locks (expires_at_ms);

        CREATE TABLE grants (id TEXT PRIMARY KEY, service_id TEXT NOT NULL, created_at_ms INTEGER NOT NULL, body TEXT NOT NULL) STRICT;
        CREATE INDEX grants_service ON grants (service_id, created_at_ms);
        CREATE TABLE revocations (link_id TEXT PRIMARY KEY, body TEXT NOT NULL) STRICT;
        CREATE TABLE job_status (id TEXT PRIMARY KEY, body TEXT NOT NULL) STRICT;

        CREATE TABLE audit (
          seq INTEGER PRIMARY KEY AUTOINCREMENT,
          at_ms INTEGER NOT NULL,
          type TEXT NOT NULL,
          request_id TEXT,
          data TEXT NOT NULL
        ) STRICT;

        -- due_at_ms is run_at_ms while the job waits and lease_until_ms while it is leased:
        -- a job is claimable when due_at_ms <= now, whichever of the two it is.
        CREATE TABLE queue (
          id TEXT PRIMARY KEY,
          kind TEXT NOT NULL,
          payload TEXT NOT NULL,
          attempts INTEGER NOT NULL,
          run_at_ms INTEGER NOT NULL,
          lease_token TEXT,
          lease_until_ms INTEGER,
          due_at_ms INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX queue_due ON queue (due_at_ms, id);
      `),
  },
  {
    version: 2,
    description: 'expiry index: links.refresh_due_at_ms',
    up: (db) => {
      // Where the expiry index files the link (expiry-index-score.ts); NULL = not in the index, so
      // the partial index holds only the links the background refresher may need.
      db.exec(`
        ALTER TABLE links ADD COLUMN refresh_due_at_ms INTEGER;
        CREATE INDEX links_refresh_due ON links (refresh_due_at_ms, id) WHERE refresh_due_at_ms IS NOT NULL;
      `);
      // Backfill from the stored records, by keyset pages (the rows are JSON: computed in code,
      // exactly as saveLink does).
      const page = db.prepare<[string], { id: string; status: string; body: string }>(
        'SELECT id, status, body FROM links WHERE id > ? ORDER BY id LIMIT 500',
      );
      const set = db.prepare<[number | null, string]>(
        'UPDATE links SET refresh_due_at_ms = ? WHERE id = ?',
      );
      for (let after = ''; ;) {
        const rows = page.all(after);
        for (const row of rows) {
          const link = JSON.parse(row.body) as LinkRecord;
          set.run(
            expiryIndexScore({ ...link, status: row.status as LinkRecord['status'] }),
            row.id,
          );
        }
        if (rows.length < 500) break;
        after = rows[rows.length - 1]!.id;
      }
    },
  },
  {
    version: 3,
    description: 'webhook endpoints and deliveries',
    up: (db) =>
      db.exec(`
        CREATE TABLE webhook_endpoints (id TEXT PRIMARY KEY, created_at_ms INTEGER NOT NULL, body TEXT NOT NULL) STRICT;
        CREATE TABLE webhook_deliveries (
          endpoint_id TEXT NOT NULL,
          event_id TEXT NOT NULL,
          updated_at_ms INTEGER NOT NULL,
          body TEXT NOT NULL,
          PRIMARY KEY (endpoint_id, event_id)
        ) STRICT;
        CREATE INDEX webhook_deliveries_recent ON webhook_deliveries (endpoint_id, updated_at_ms);
      `),
  },
  {
    version: 4,
    description: 'grant index: grants.tenant_id, provider_id, link_id',
    up: (db) => {
      // What a token release asks (release-grant lookup): grants naming the link, and grants naming
      // no link but the link's tenant (for its provider, or for any). Both are index lookups, so a
      // release costs the same however many grants the service holds.
      db.exec(`
        ALTER TABLE grants ADD COLUMN tenant_id TEXT;
        ALTER TABLE grants ADD COLUMN provider_id TEXT;
        ALTER TABLE grants ADD COLUMN link_id TEXT;
      `);
      const page = db.prepare<[string], { id: string; body: string }>(
        'SELECT id, body FROM grants WHERE id > ? ORDER BY id LIMIT 500',
      );
      const set = db.prepare<[string | null, string | null, string | null, string]>(
        'UPDATE grants SET tenant_id = ?, provider_id = ?, link_id = ? WHERE id = ?',
      );
      for (let after = ''; ;) {
        const rows = page.all(after);
        for (const row of rows) {
          const g = JSON.parse(row.body) as GrantRecord;
          set.run(g.tenantId ?? null, g.providerId ?? null, g.linkId ?? null, row.id);
        }
        if (rows.length < 500) break;
        after = rows[rows.length - 1]!.id;
      }
      db.exec(`
        CREATE INDEX grants_release_link ON grants (service_id, link_id) WHERE link_id IS NOT NULL;
        CREATE INDEX grants_release_tenant ON grants (service_id, tenant_id, provider_id) WHERE link_id IS NULL;
      `);
    },
  },
  {
    version: 5,
    description: 'audit filters: audit.tenant_id, link_id, service_id',
    up: (db) => {
      // What GET /v1/audit and a link's activity filter by, copied out of the event's data (which
      // stays the record) and indexed with seq, so a filtered page is an index range, not a scan.
      db.exec(`
        ALTER TABLE audit ADD COLUMN tenant_id TEXT;
        ALTER TABLE audit ADD COLUMN link_id TEXT;
        ALTER TABLE audit ADD COLUMN service_id TEXT;
        UPDATE audit SET
          tenant_id = CASE json_type(data, '$.tenant_id') WHEN 'text' THEN json_extract(data, '$.tenant_id') END,
          link_id = CASE json_type(data, '$.link_id') WHEN 'text' THEN json_extract(data, '$.link_id') END,
          service_id = CASE json_type(data, '$.service_id') WHEN 'text' THEN json_extract(data, '$.service_id') END;
        CREATE INDEX audit_tenant ON audit (tenant_id, seq) WHERE tenant_id IS NOT NULL;
        CREATE INDEX audit_link ON audit (link_id, seq) WHERE link_id IS NOT NULL;
        CREATE INDEX audit_service ON audit (service_id, seq) WHERE service_id IS NOT NULL;
      `);
    },
  },
];

/**
 * Applies the pending `migrations` to `db`, each once, in order, in its own transaction.
 * Refuses a database whose schema is newer than the newest migration known here.
 */
export function applySqliteMigrations(db: Db, migrations: readonly SqliteMigration[]): void {
  migrations.forEach((m, i) => {
    if (m.version !== i + 1)
      throw new Error(
        `sqlite migrations must be numbered 1, 2, 3, ...; got ${m.version} at position ${i + 1}`,
      );
  });
  db.exec(
    'CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at_ms INTEGER NOT NULL) STRICT',
  );
  const current = db.prepare<[], { v: number | null }>(
    'SELECT max(version) AS v FROM schema_migrations',
  );
  const record = db.prepare(
    'INSERT INTO schema_migrations (version, description, applied_at_ms) VALUES (?, ?, ?)',
  );
  const known = migrations.length;
  const found = current.get()?.v ?? 0;
  if (found > known) {
    throw new Error(
      `the sqlite database has schema version ${found}, newer than this linkvault knows (${known}); refusing to open it`,
    );
  }
  for (const m of migrations) {
    // IMMEDIATE takes the write lock first, then re-reads: another process may have applied it meanwhile.
    db.transaction(() => {
      if ((current.get()?.v ?? 0) >= m.version) return;
      m.up(db);
      record.run(m.version, m.description, Date.now());
    }).immediate();
  }
}
