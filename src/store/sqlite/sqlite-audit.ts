import type Database from 'better-sqlite3';
import { LinkvaultError } from '../../errors.js';
import type { AuditEvent, AuditFilter, AuditPage, AuditQueryOptions } from '../store.js';

/**
 * The audit log of the SQLite adapter beyond appending in seq order: the columns a filter uses
 * (tenant_id, link_id, service_id, each indexed with seq: migration 5), the per-shard bound that
 * makes appends fail closed when the exporter has fallen behind, trimming, and filtered reads.
 * SQLite has one shard, `main`; seq is the rowid.
 */

type Db = Database.Database;

interface AuditRow {
  seq: number;
  at_ms: number;
  type: string;
  request_id: string | null;
  data: string;
}

export interface SqliteAudit {
  /** Appends inside the caller's transaction (or alone); throws audit_unavailable when the shard is full. */
  append(event: AuditEvent): string;
  trim(throughSeq: string | null, keep: number): number;
  query(filter: AuditFilter, options: AuditQueryOptions): AuditPage;
}

const SEQ = /^\d{1,16}$/;

function text(data: Readonly<Record<string, unknown>>, name: string): string | null {
  const v = data[name];
  return typeof v === 'string' ? v : null;
}

/** The oldest and newest seq held, asked on every append (test/store/sqlite/sqlite-audit-plan.test.ts checks its plan). */
export const AUDIT_BOUNDS_SQL =
  'SELECT (SELECT min(seq) FROM audit) AS lo, (SELECT max(seq) FROM audit) AS hi';

export function createSqliteAudit(
  db: Db,
  shard: string,
  maxEvents: number,
  onFull: (held: number) => void,
): SqliteAudit {
  const insert = db.prepare<
    [number, string, string | null, string, string | null, string | null, string | null]
  >(
    'INSERT INTO audit (at_ms, type, request_id, data, tenant_id, link_id, service_id) VALUES (?, ?, ?, ?, ?, ?, ?)',
  );
  // Two scalar subqueries: SQLite answers a lone min() or max() of the primary key from the b-tree's
  // ends, but `SELECT min(seq), max(seq)` together scans the whole table (measured: 11 ms at 200,000
  // events, on every append, i.e. every release; 0.8 µs this way).
  const bounds = db.prepare<[], { lo: number | null; hi: number | null }>(AUDIT_BOUNDS_SQL);
  const nthNewestAtOrBefore = db.prepare<[number, number], { seq: number }>(
    'SELECT seq FROM audit WHERE seq <= ? ORDER BY seq DESC LIMIT 1 OFFSET ?',
  );
  const deleteThrough = db.prepare<[number]>('DELETE FROM audit WHERE seq <= ?');

  function held(): number {
    const b = bounds.get();
    return b?.lo == null || b.hi == null ? 0 : b.hi - b.lo + 1;
  }

  return {
    append(event) {
      if (Number.isFinite(maxEvents)) {
        const n = held();
        if (n >= maxEvents) {
          onFull(n);
          throw new LinkvaultError('audit_unavailable', {
            detail: 'the audit log is full: its events have not been exported',
            retryAfterSeconds: 5,
          });
        }
      }
      const { lastInsertRowid } = insert.run(
        event.atMs,
        event.type,
        event.requestId ?? null,
        JSON.stringify(event.data),
        text(event.data, 'tenant_id'),
        text(event.data, 'link_id'),
        text(event.data, 'service_id'),
      );
      return String(lastInsertRowid);
    },

    trim(throughSeq, keep) {
      if (throughSeq !== null && !SEQ.test(throughSeq)) return 0;
      const through = throughSeq === null ? Number.MAX_SAFE_INTEGER : Number(throughSeq);
      // The newest event that goes: the (keep+1)-th newest at or before `through`.
      const edge = nthNewestAtOrBefore.get(through, keep);
      if (!edge) return 0;
      return db.transaction(() => deleteThrough.run(edge.seq).changes)();
    },

    query(filter, options) {
      const where: string[] = [];
      const args: (string | number)[] = [];
      if (filter.tenantId !== undefined) {
        where.push('tenant_id = ?');
        args.push(filter.tenantId);
      }
      if (filter.linkId !== undefined) {
        where.push('link_id = ?');
        args.push(filter.linkId);
      }
      if (filter.serviceId !== undefined) {
        where.push('service_id = ?');
        args.push(filter.serviceId);
      }
      if (filter.type !== undefined) {
        where.push('type = ?');
        args.push(filter.type);
      }
      if (options.after !== undefined) {
        if (!SEQ.test(options.after))
          throw new LinkvaultError('invalid_request', {
            detail: 'after is not a cursor of this audit log',
            extra: { parameter: 'after' },
          });
        where.push(options.order === 'asc' ? 'seq > ?' : 'seq < ?');
        args.push(Number(options.after));
      }
      const sql = `SELECT seq, at_ms, type, request_id, data FROM audit${
        where.length ? ` WHERE ${where.join(' AND ')}` : ''
      } ORDER BY seq ${options.order === 'asc' ? 'ASC' : 'DESC'} LIMIT ?`;
      const rows = db.prepare<(string | number)[], AuditRow>(sql).all(...args, options.limit + 1);
      const page = rows.slice(0, options.limit);
      return {
        events: page.map((row) => ({
          shard,
          seq: String(row.seq),
          atMs: row.at_ms,
          type: row.type,
          requestId: row.request_id,
          data: JSON.parse(row.data) as Record<string, unknown>,
        })),
        next: rows.length > options.limit ? String(page.at(-1)!.seq) : null,
      };
    },
  };
}
