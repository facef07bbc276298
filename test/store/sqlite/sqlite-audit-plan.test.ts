import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { AUDIT_BOUNDS_SQL } from '../../../src/store/sqlite/sqlite-audit.js';
import {
  applySqliteMigrations,
  SQLITE_MIGRATIONS,
} from '../../../src/store/sqlite/sqlite-migrations.js';

/**
 * Every audit append (every token release) asks for the oldest and newest seq held. Asked as
 * `SELECT min(seq), max(seq)` SQLite scanned the whole table: ~11 ms per release with 200,000
 * events retained. The query must be answered from the primary key's b-tree ends.
 */
describe('SQLite audit bounds query', () => {
  it('when the audit bounds are asked, then SQLite searches the primary key and scans no table', () => {
    const db = new Database(':memory:');
    try {
      applySqliteMigrations(db, SQLITE_MIGRATIONS);
      const plan = db
        .prepare<[], { detail: string }>(`EXPLAIN QUERY PLAN ${AUDIT_BOUNDS_SQL}`)
        .all()
        .map((row) => row.detail);
      assert.ok(
        plan.every((step) => !/^SCAN audit/.test(step)),
        `plan scans the audit table: ${JSON.stringify(plan)}`,
      );
      assert.ok(
        plan.some((step) => /^SEARCH audit/.test(step)),
        JSON.stringify(plan),
      );
      assert.deepEqual(db.prepare(AUDIT_BOUNDS_SQL).get(), { lo: null, hi: null });
    } finally {
      db.close();
    }
  });
});
