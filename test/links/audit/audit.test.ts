import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { LocalKeyProvider } from '../../../src/keys/local-key-provider.js';
import { createVault } from '../../../src/keys/vault.js';
import {
  AUDIT_KEY_ROW_ID,
  auditKeyLoader,
  createAudit,
  loadAuditKey,
} from '../../../src/links/audit/audit.js';
import { Metrics } from '../../../src/metrics.js';
import { Secret } from '../../../src/secret.js';
import { SqliteStore } from '../../../src/store/sqlite/sqlite-store.js';

/** The audit trail: tokens only as a keyed MAC, a per-deployment key shared by replicas, fail closed. */

describe('audit', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'lv-audit-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  async function deployment(
    name: string,
    keyFile = join(dir, `${name}.key`),
    previousKeyFiles: string[] = [],
  ) {
    const metrics = new Metrics();
    const store = new SqliteStore({ path: join(dir, `${name}.db`) });
    const keys = await LocalKeyProvider.load({
      keyFile,
      previousKeyFiles,
      mayGenerate: true,
      metrics,
    });
    const vault = createVault({ keys, metrics, maxEntries: 100, maxAgeMs: 60_000 });
    return { store, keys, vault, metrics };
  }

  it('when an event carries Secrets, then they are stored as labelled truncated HMACs, never raw', async () => {
    const d = await deployment('scrub');
    try {
      const key = await loadAuditKey({
        store: d.store,
        vault: d.vault,
        currentKeyId: () => d.keys.currentKeyId(),
        now: Date.now,
      });
      const audit = createAudit({ store: d.store, hmacKey: key, now: () => 1_700_000_000_000 });
      const raw = 'ya29.a0-very-secret-access-token';
      await audit.record(
        'token.released',
        { link_id: 'l1', access_token: new Secret(raw), nested: { list: [new Secret(raw)] } },
        'req-1',
      );
      const [event] = await d.store.readAudit();
      assert.ok(event);
      const label = await audit.fingerprint(new Secret(raw));
      assert.match(label, /^hmac-sha256\/128:[A-Za-z0-9_-]{8}:[A-Za-z0-9_-]{22}$/);
      assert.deepEqual(
        { ...event, seq: undefined },
        {
          seq: undefined,
          atMs: 1_700_000_000_000,
          type: 'token.released',
          requestId: 'req-1',
          data: { link_id: 'l1', access_token: label, nested: { list: [label] } },
        },
      );
      assert.ok(!JSON.stringify(event).includes(raw));
      assert.notEqual(label, await audit.fingerprint(new Secret(`${raw}x`)));
    } finally {
      await d.store.close();
    }
  });

  it('when replicas load the key concurrently, then they agree; another deployment gets another key', async () => {
    const d = await deployment('shared');
    const other = await deployment('other');
    try {
      const load = () =>
        loadAuditKey({
          store: d.store,
          vault: d.vault,
          currentKeyId: () => d.keys.currentKeyId(),
          now: Date.now,
        });
      const keys = await Promise.all([load(), load(), load(), load()]);
      const secret = new Secret('same-token');
      const labels = await Promise.all(
        keys.map((k) =>
          createAudit({ store: d.store, hmacKey: k, now: Date.now }).fingerprint(secret),
        ),
      );
      assert.equal(new Set(labels).size, 1, 'every replica derives the same label');
      const otherKey = await loadAuditKey({
        store: other.store,
        vault: other.vault,
        currentKeyId: () => other.keys.currentKeyId(),
        now: Date.now,
      });
      assert.notEqual(
        await createAudit({ store: other.store, hmacKey: otherKey, now: Date.now }).fingerprint(
          secret,
        ),
        labels[0],
        'the key is per deployment, not a constant',
      );
      const row = await d.store.getJobStatus(AUDIT_KEY_ROW_ID);
      assert.ok(row);
      const sealed = row.status.sealed as Record<string, string>;
      assert.deepEqual(
        Object.keys(sealed).sort(),
        ['alg', 'ct', 'edk', 'iv', 'kid', 'tag', 'v'],
        'stored sealed, not raw',
      );
    } finally {
      await d.store.close();
      await other.store.close();
    }
  });

  it('when the master key rotates, then the same audit key opens and is re-sealed under the new key', async () => {
    const oldKeyFile = join(dir, 'rot-old.key');
    const d1 = await deployment('rot', oldKeyFile);
    const k1 = await loadAuditKey({
      store: d1.store,
      vault: d1.vault,
      currentKeyId: () => d1.keys.currentKeyId(),
      now: Date.now,
    });
    await d1.store.close();
    const d2 = await deployment('rot', join(dir, 'rot-new.key'), [oldKeyFile]);
    try {
      const k2 = await loadAuditKey({
        store: d2.store,
        vault: d2.vault,
        currentKeyId: () => d2.keys.currentKeyId(),
        now: Date.now,
      });
      assert.ok(k1.equals(k2));
      const row = await d2.store.getJobStatus(AUDIT_KEY_ROW_ID);
      assert.equal((row!.status.sealed as { kid: string }).kid, d2.keys.currentKeyId());
    } finally {
      await d2.store.close();
    }
  });

  it('when the store cannot append, then record rejects audit_unavailable', async () => {
    const d = await deployment('closed');
    const key = await loadAuditKey({
      store: d.store,
      vault: d.vault,
      currentKeyId: () => d.keys.currentKeyId(),
      now: Date.now,
    });
    const audit = createAudit({ store: d.store, hmacKey: key, now: Date.now });
    await d.store.close();
    await assert.rejects(
      audit.record('token.released', { access_token: new Secret('t') }),
      (err: Error & { code?: string; retryAfterSeconds?: number }) =>
        err.code === 'audit_unavailable' && err.retryAfterSeconds === 1,
    );
  });

  it('when the key cannot be loaded yet (key service down at start), then records fail closed until it can', async () => {
    const d = await deployment('lazy');
    try {
      let down = true;
      const loader = auditKeyLoader({
        store: d.store,
        vault: {
          seal: (...a) =>
            down ? Promise.reject(new Error('key service down')) : d.vault.seal(...a),
          open: (...a) => d.vault.open(...a),
        },
        currentKeyId: () => d.keys.currentKeyId(),
        now: Date.now,
      });
      const audit = createAudit({ store: d.store, hmacKey: loader, now: Date.now });
      await assert.rejects(
        audit.record('token.released', { access_token: new Secret('t') }),
        (err: Error & { code?: string }) => err.code === 'audit_unavailable',
      );
      assert.deepEqual(await d.store.readAudit(), []);
      down = false;
      await audit.record('token.released', { access_token: new Secret('t') });
      assert.equal((await d.store.readAudit()).length, 1);
    } finally {
      await d.store.close();
    }
  });

  it('when the key is a constant-looking short buffer, then createAudit refuses it', () => {
    assert.throws(() =>
      createAudit({
        store: { appendAudit: async () => '1' },
        hmacKey: Buffer.alloc(16),
        now: Date.now,
      }),
    );
  });
});
