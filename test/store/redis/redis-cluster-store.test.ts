import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { isLinkvaultError } from '../../../src/errors.js';
import { Metrics } from '../../../src/metrics.js';
import { createStore } from '../../../src/store/create-store.js';
import { checkRedisPersistence } from '../../../src/store/redis/redis-persistence.js';
import { createRedisClient, waitForRedisReady } from '../../../src/store/redis/client.js';
import { redisTenantTag } from '../../../src/store/redis/keys.js';
import type { Store } from '../../../src/store/store.js';
import { startRedisCluster, type RedisClusterHandle } from '../../support/redis-server.js';
import { makeLink, runStoreContract } from '../store-contract.js';
import { runReleaseStoreContract } from '../release-store-contract.js';

let cluster: RedisClusterHandle;
let prefixes = 0;
function clusterConfig() {
  return {
    kind: 'redis' as const,
    redisUrl: null,
    clusterNodes: cluster.seeds,
    keyPrefix: `lvc${++prefixes}`,
  };
}

before(async () => {
  cluster = await startRedisCluster({ masters: 3 });
});
after(async () => {
  await cluster?.stop();
});

runStoreContract('redis cluster', async () => {
  const store = await createStore(clusterConfig(), { metrics: new Metrics() });
  return { store, cleanup: () => store.close() };
});

runReleaseStoreContract('redis cluster', async () => {
  const store = await createStore(clusterConfig(), { metrics: new Metrics() });
  return { store, cleanup: () => store.close() };
});

/** Which node (by port) serves the slot of `key`, from CLUSTER KEYSLOT and CLUSTER SLOTS. */
async function nodePortOf(admin: Redis, key: string): Promise<number> {
  const slot = Number(await admin.call('CLUSTER', 'KEYSLOT', key));
  const ranges = (await admin.call('CLUSTER', 'SLOTS')) as [
    number,
    number,
    [string, number, ...unknown[]],
    ...unknown[],
  ][];
  const range = ranges.find(([first, last]) => slot >= first && slot <= last);
  assert.ok(range, `slot ${slot} is served`);
  return Number(range[2][1]);
}

describe('RedisStore on a 3-master Redis Cluster', () => {
  it('when tenants land on every master, then saves with indexes, listings and queue claims work on each', async () => {
    const config = clusterConfig();
    const store = await createStore(config, { metrics: new Metrics() });
    const admin = new Redis(cluster.seeds[0]!.port);
    try {
      const tenants = Array.from({ length: 12 }, (_, i) => `tenant-${i}`);
      const portsHit = new Set<number>();
      for (const t of tenants)
        portsHit.add(await nodePortOf(admin, `${redisTenantTag(config.keyPrefix, t)}:l:x`));
      assert.equal(portsHit.size, 3, 'the tenants spread over all three masters');

      const saved = new Map<string, string>();
      for (const t of tenants) {
        const link = makeLink({ tenantId: t, userId: `user-${t}`, providerAccountId: `acct-${t}` });
        assert.equal((await store.saveLink(link, null))?.version, 1);
        assert.equal((await store.saveLink({ ...link, status: 'needs_reauth' }, 1))?.version, 2);
        saved.set(t, link.id);
      }
      for (const t of tenants) {
        const id = saved.get(t)!;
        assert.equal((await store.getLink(id))?.status, 'needs_reauth');
        assert.deepEqual(
          (await store.listLinks({ tenantId: t, status: 'needs_reauth' })).map((l) => l.id),
          [id],
        );
        assert.deepEqual(await store.listLinks({ tenantId: t, status: 'active' }), []);
        assert.deepEqual(
          (await store.listLinks({ tenantId: t, providerAccountId: `acct-${t}` })).map((l) => l.id),
          [id],
        );
      }
      // Across tenants (and so across slots and masters).
      assert.equal((await store.listLinks({ status: 'needs_reauth' })).length, tenants.length);
      const scanned = new Set<string>();
      for await (const id of store.scanLinkIds()) scanned.add(id);
      assert.deepEqual(scanned, new Set(saved.values()));

      // One queue job per tenant; the queue's keys share one slot, whichever master it is on.
      const now = Date.now();
      for (const t of tenants)
        await store.enqueue({
          id: `revoke-${t}`,
          kind: 'revoke',
          payload: { tenant: t },
          attempts: 0,
          runAtMs: now,
        });
      const claims = await Promise.all([
        store.claimJobs(now, 5, 10_000),
        store.claimJobs(now, 5, 10_000),
        store.claimJobs(now, 5, 10_000),
      ]);
      const claimed = claims.flat();
      assert.equal(new Set(claimed.map((j) => j.id)).size, tenants.length);
      for (const job of claimed)
        assert.equal(await store.completeJob(job.id, job.leaseToken!), true);
      assert.equal(await store.countJobs(), 0);
    } finally {
      admin.disconnect();
      await store.close();
    }
  });

  it('when persistence is checked on a cluster, then every master is reported by address', async () => {
    const client = createRedisClient({ clusterNodes: cluster.seeds });
    try {
      await waitForRedisReady(client, 3000);
      const report = await checkRedisPersistence(client);
      assert.equal(report.ok, false);
      const expected = cluster.seeds.map((s) => `127.0.0.1:${s.port} appendonly`).sort();
      assert.deepEqual(report.problems.map((p) => p.slice(0, p.indexOf(' is'))).sort(), expected);
      assert.deepEqual(report.unknown, []);
    } finally {
      client.disconnect();
    }
  });

  // Last: it takes a master down.
  it('when a master is killed, then calls on its slots and ping reject store_unavailable within 2 s', async () => {
    const config = clusterConfig();
    const metrics = new Metrics();
    const store: Store = await createStore(config, { metrics });
    const admin = new Redis(cluster.seeds[0]!.port);
    try {
      const victim = cluster.nodes[2]!;
      let tenant = '';
      for (let i = 0; !tenant; i++) {
        if (
          (await nodePortOf(admin, `${redisTenantTag(config.keyPrefix, `t${i}`)}:l:x`)) ===
          victim.port
        )
          tenant = `t${i}`;
      }
      const link = makeLink({ tenantId: tenant });
      await store.saveLink(link, null);
      await store.getLink(link.id);
      await victim.kill('SIGKILL');
      for (const call of [() => store.getLink(link.id), () => store.ping()]) {
        const started = Date.now();
        await assert.rejects(call(), (err: unknown) => isLinkvaultError(err, 'store_unavailable'));
        const elapsed = Date.now() - started;
        assert.ok(elapsed < 2000, `rejected in ${elapsed} ms`);
      }
      assert.ok(metrics.storeErrors.get({ store: 'redis' }) >= 2);
    } finally {
      admin.disconnect();
      await store.close();
    }
  });
});
