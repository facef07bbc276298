import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import request from 'supertest';
import { Metrics } from '../../../src/metrics.js';
import { createStore } from '../../../src/store/create-store.js';
import { redisTenantTag } from '../../../src/store/redis/keys.js';
import type { Store } from '../../../src/store/store.js';
import { createReleaseHarness, type ReleaseHarness } from '../../support/release-harness.js';
import { startRedisCluster, type RedisClusterHandle } from '../../support/redis-server.js';

/**
 * Token releases on a real 3-master Redis Cluster (one replica per master, full coverage not
 * required, as an operator runs it to keep the healthy slots serving): the whole release path (the
 * service's features over the cluster store, through the token route) must not depend on one slot.
 * Releases over links of many tenants reach every master, and a failover of the master holding one
 * tenant's keys — chosen as the master of the slot every release used to write (the one audit
 * stream) — does not stop releases for the tenants on the other masters.
 */

const PREFIX = 'lvrel';
const TENANTS = 24;

/** The port of the master serving `key`'s slot, from CLUSTER SLOTS. */
async function masterPortOf(admin: Redis, key: string): Promise<number> {
  const slot = Number(await admin.call('CLUSTER', 'KEYSLOT', key));
  const ranges = (await admin.call('CLUSTER', 'SLOTS')) as [
    number,
    number,
    [string, number, ...unknown[]],
  ][];
  const range = ranges.find(([first, last]) => slot >= first && slot <= last);
  assert.ok(range, `slot ${slot} is served`);
  return Number(range[2][1]);
}

/** Calls of EVALSHA/EVAL a node has served (INFO commandstats). */
async function scriptCalls(port: number): Promise<number> {
  const node = new Redis(port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 0 });
  try {
    await node.connect();
    const stats = await node.info('commandstats');
    let calls = 0;
    for (const m of stats.matchAll(/^cmdstat_(?:evalsha|eval):calls=(\d+)/gm))
      calls += Number(m[1]);
    return calls;
  } finally {
    node.disconnect();
  }
}

describe('token release on a 3-master Redis Cluster', () => {
  let cluster: RedisClusterHandle;
  let store: Store;
  let h: ReleaseHarness;
  const links: { id: string; tenantId: string; port: number }[] = [];

  before(async () => {
    cluster = await startRedisCluster({
      masters: 3,
      replicasPerMaster: 1,
      extraArgs: ['--cluster-require-full-coverage', 'no'],
    });
    store = await createStore(
      { kind: 'redis', redisUrl: null, clusterNodes: cluster.seeds, keyPrefix: PREFIX },
      { metrics: new Metrics() },
    );
    h = await createReleaseHarness({ store });
    const admin = new Redis(cluster.seeds[0]!.port, '127.0.0.1');
    try {
      for (let i = 0; i < TENANTS; i++) {
        const tenantId = `tenant-${i}`;
        const link = await h.seedLink({ tenantId, accessToken: `token-of-${tenantId}` });
        await h.addGrant({ serviceId: 'billing', tenantId });
        const port = await masterPortOf(admin, `${redisTenantTag(PREFIX, tenantId)}:audit`);
        links.push({ id: link.id, tenantId, port });
      }
    } finally {
      admin.disconnect();
    }
  });
  after(async () => {
    await h?.close();
    await store?.close();
    await cluster?.stop();
  });

  const release = (linkId: string) =>
    request(h.listener)
      .post(`/v1/links/${linkId}/token`)
      .set('Authorization', h.services.bearer('billing-hs'))
      .set('Content-Type', 'application/json')
      .send('{}');

  it('when links of many tenants are released, then every master serves releases and each tenant shard holds its records', async () => {
    const masters = cluster.nodes.map((n) => n.port);
    assert.deepEqual(
      new Set(links.map((l) => l.port)),
      new Set(masters),
      'the tenants spread over every master',
    );
    const before = await Promise.all(masters.map(scriptCalls));
    for (const link of links) {
      const res = await release(link.id);
      assert.equal(res.status, 200, `${link.tenantId}: ${res.status} ${res.text}`);
    }
    const afterCalls = await Promise.all(masters.map(scriptCalls));
    for (let i = 0; i < masters.length; i++) {
      const onThis = links.filter((l) => l.port === masters[i]).length;
      // Each release is two scripts (read, commit) on its tenant's master.
      assert.ok(
        afterCalls[i]! - before[i]! >= 2 * onThis,
        `master ${masters[i]}: ${afterCalls[i]! - before[i]!} script calls for ${onThis} tenants`,
      );
    }
    const shards = await store.listAuditShards();
    for (const link of links) {
      assert.ok(shards.includes(`t:${link.tenantId}`), link.tenantId);
      const events = await store.readAuditShard(`t:${link.tenantId}`);
      assert.ok(
        events.some((e) => e.type === 'token.released' && e.data['link_id'] === link.id),
        `${link.tenantId}: its release is in its own shard`,
      );
    }
  });

  it('when the master holding one tenant (and the global audit shard) fails over, then the tenants on the other masters keep being released', async () => {
    const admin = new Redis(cluster.seeds[1]!.port, '127.0.0.1');
    const victimPort = await masterPortOf(admin, `{${PREFIX}:audit}:log`);
    admin.disconnect();
    const victim = cluster.nodes.find((n) => n.port === victimPort)!;
    const onVictim = links.filter((l) => l.port === victimPort);
    const others = links.filter((l) => l.port !== victimPort);
    assert.ok(onVictim.length > 0 && others.length > 0);

    await victim.kill('SIGKILL');
    const startedAt = Date.now();
    // While the master is down, before and during its replica's promotion (node timeout 2 s).
    let rounds = 0;
    while (Date.now() - startedAt < 5000 || rounds < 3) {
      for (const link of others) {
        const res = await release(link.id);
        assert.equal(
          res.status,
          200,
          `${link.tenantId} (another master) after ${Date.now() - startedAt} ms: ${res.status} ${res.text}`,
        );
      }
      rounds++;
    }
    // The failed-over tenant is served again once its replica has taken over.
    const deadline = Date.now() + 30_000;
    for (;;) {
      const res = await release(onVictim[0]!.id);
      if (res.status === 200) break;
      assert.equal(res.status, 503, res.text);
      assert.ok(Date.now() < deadline, 'the failed-over tenant came back');
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  });
});
