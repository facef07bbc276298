import assert from 'node:assert/strict';
import { createSecretKey, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import pino from 'pino';
import { createAudit } from '../../../src/links/audit/audit.js';
import { verifyAuditChain } from '../../../src/links/audit/export/audit-chain.js';
import { createAuditExporter } from '../../../src/links/audit/export/audit-exporter.js';
import { Metrics } from '../../../src/metrics.js';
import { createStore } from '../../../src/store/create-store.js';
import type { Store } from '../../../src/store/store.js';
import { runBin } from '../../cli/run-cli.js';
import { startRedisCluster, type RedisClusterHandle } from '../../support/redis-server.js';

/**
 * The audit log on a real 3-master Redis Cluster: one shard per tenant in the tenant's hash slot,
 * so appends reach every master; the exporter merges the shards (each in sequence order) into one
 * verifiable chain, exactly once while appends go on, and trims every shard to its share.
 */

const TENANTS = Array.from({ length: 24 }, (_, i) => `tenant-${i}`);
const PER_TENANT = 60;
const RETENTION = 240;
const PREFIX = 'lvaxc';

/** The tenant audit streams a master holds, by SCAN on that master alone. */
async function auditStreamsOn(port: number): Promise<string[]> {
  const client = new Redis({ host: '127.0.0.1', port, lazyConnect: true });
  await client.connect();
  try {
    const found: string[] = [];
    let cursor = '0';
    do {
      const [next, keys] = await client.scan(
        cursor,
        'MATCH',
        `{${PREFIX}:t:*}:audit`,
        'COUNT',
        500,
      );
      cursor = next;
      found.push(...keys);
    } while (cursor !== '0');
    return found;
  } finally {
    client.disconnect();
  }
}

async function storedPerShard(store: Store): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (const shard of await store.listAuditShards()) {
    let n = 0;
    let afterSeq: string | undefined;
    for (;;) {
      const page = await store.readAuditShard(shard, afterSeq, 1000);
      n += page.length;
      if (page.length < 1000) break;
      afterSeq = page.at(-1)!.seq;
    }
    counts.set(shard, n);
  }
  return counts;
}

describe('the audit export on a 3-master Redis Cluster', () => {
  let cluster: RedisClusterHandle;
  before(async () => {
    cluster = await startRedisCluster({ masters: 3 });
  });
  after(async () => {
    await cluster?.stop();
  });

  it('when many tenants append while the exporter runs, then shards are on every master, the files hold every event once and the store is trimmed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lv-audit-cluster-'));
    const exportDir = join(dir, 'export');
    const store = await createStore(
      { kind: 'redis', redisUrl: null, clusterNodes: cluster.seeds, keyPrefix: PREFIX },
      { metrics: new Metrics() },
    );
    const key = createSecretKey(randomBytes(32));
    try {
      const audit = createAudit({ store, hmacKey: key, now: Date.now });
      const exporter = createAuditExporter({
        store,
        dir: exportDir,
        key: async () => key,
        maxStoreEvents: RETENTION,
        log: pino({ level: 'silent' }),
        now: Date.now,
        batchSize: 50,
      });

      // Appends for every tenant, in rounds, with an export pass racing each round.
      let n = 0;
      for (let round = 0; round < PER_TENANT / 10; round++) {
        const appends = Promise.all(
          Array.from({ length: TENANTS.length * 10 }, (_, i) =>
            audit.record('token.released', {
              tenant_id: TENANTS[i % TENANTS.length],
              link_id: `lnk_${i % 7}`,
              service_id: 'crm-sync',
              n: n++,
            }),
          ),
        );
        const [, pass] = await Promise.all([appends, exporter.runOnce()]);
        assert.equal(pass.active, true);
      }
      const total = TENANTS.length * PER_TENANT;

      // Every master holds tenant shards: appends are spread over the cluster.
      const perMaster = await Promise.all(cluster.nodes.map((node) => auditStreamsOn(node.port)));
      for (const [i, streams] of perMaster.entries())
        assert.ok(streams.length > 0, `master ${i} holds no audit shard`);
      assert.equal(perMaster.flat().length, TENANTS.length);
      assert.equal(new Set(perMaster.flat()).size, TENANTS.length);

      // Catch up, then check the files: every event once, each shard in seq order, a whole chain.
      while ((await exporter.runOnce()).exported > 0);
      await exporter.stop();
      const lines = readdirSync(exportDir)
        .filter((f) => f.endsWith('.jsonl'))
        .sort()
        .flatMap((f) =>
          readFileSync(join(exportDir, f), 'utf8')
            .split('\n')
            .filter((l) => l !== '' && !l.startsWith('{"checkpoint"'))
            .map((l) => JSON.parse(l) as Record<string, unknown>),
        );
      assert.equal(lines.length, total);
      assert.deepEqual(
        lines.map((l) => (l.data as { n: number }).n).sort((a, b) => a - b),
        Array.from({ length: total }, (_, i) => i),
        'every event exactly once',
      );
      const shards = new Set(lines.map((l) => l.shard as string));
      assert.deepEqual(
        [...shards].sort(),
        TENANTS.map((t) => `t:${t}`).sort(),
        'one shard per tenant',
      );
      for (const l of lines)
        assert.equal(l.shard, `t:${(l.data as { tenant_id: string }).tenant_id}`);
      const report = await verifyAuditChain(exportDir, key);
      assert.deepEqual([report.ok, report.events, report.problem], [true, total, null]);

      // Trimmed: every shard down to its share of the retention, nothing beyond the bound.
      const held = await storedPerShard(store);
      const keep = Math.floor(RETENTION / held.size);
      for (const [shard, count] of held) assert.ok(count <= keep, `${shard} holds ${count}`);
      const stored = [...held.values()].reduce((a, b) => a + b, 0);
      assert.ok(stored <= RETENTION && stored > 0, `the store holds ${stored}`);

      // The CLI's export over the cluster: the files, then what the store has not exported, once each.
      for (let i = 0; i < TENANTS.length; i++)
        await audit.record('token.released', { tenant_id: TENANTS[i], n: total + i });
      writeFileSync(join(dir, 'master.key'), randomBytes(32), { mode: 0o600 });
      const out = await runBin(['audit', 'export', '--since', '2000-01-01T00:00:00Z'], {
        cwd: dir,
        env: {
          LINKVAULT_STORE: 'redis',
          LINKVAULT_REDIS_CLUSTER_NODES: cluster.seeds.map((s) => `${s.host}:${s.port}`).join(','),
          LINKVAULT_REDIS_PREFIX: PREFIX,
          LINKVAULT_LOCAL_KEY_FILE: join(dir, 'master.key'),
          LINKVAULT_AUDIT_EXPORT_DIR: exportDir,
          // The test cluster runs without appendonly; the store's warning about it is not under test.
          LINKVAULT_LOG_LEVEL: 'error',
        },
      });
      assert.equal(out.stderr, '');
      assert.equal(out.code, 0);
      const streamed = out.stdout
        .trimEnd()
        .split('\n')
        .map((l) => JSON.parse(l) as { shard: string; seq: string; data: { n: number } });
      assert.deepEqual(
        streamed.map((e) => e.data.n).sort((a, b) => a - b),
        Array.from({ length: total + TENANTS.length }, (_, i) => i),
      );
      assert.equal(new Set(streamed.map((e) => `${e.shard} ${e.seq}`)).size, streamed.length);
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
