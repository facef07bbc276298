import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { isLinkvaultError } from '../../../src/errors.js';
import { Metrics } from '../../../src/metrics.js';
import { createStore } from '../../../src/store/create-store.js';
import { checkRedisPersistence } from '../../../src/store/redis/redis-persistence.js';
import { createRedisClient, waitForRedisReady } from '../../../src/store/redis/client.js';
import { redisTenantTag } from '../../../src/store/redis/keys.js';
import type { LinkRecord } from '../../../src/links/link.js';
import type { GrantRecord } from '../../../src/links/release/grants.js';
import type { AuditEvent, ReleaseCommit, Store } from '../../../src/store/store.js';
import { startRedis, type RedisServerHandle } from '../../support/redis-server.js';
import { makeLink, runStoreContract } from '../store-contract.js';
import { runReleaseStoreContract } from '../release-store-contract.js';

let prefixes = 0;
function redisConfig(url: string) {
  return {
    kind: 'redis' as const,
    redisUrl: url,
    clusterNodes: null,
    keyPrefix: `lvtest${++prefixes}`,
  };
}

/** Polls the store until it answers again (Redis restarted; ioredis reconnects with backoff). */
async function waitUntilAnswering(store: Store, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await store.ping();
      return;
    } catch (err) {
      if (!isLinkvaultError(err, 'store_unavailable') || Date.now() > deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

async function timed<T>(
  promise: Promise<T>,
): Promise<{ elapsedMs: number; result: PromiseSettledResult<T> }> {
  const started = Date.now();
  const [result] = await Promise.allSettled([promise]);
  return { elapsedMs: Date.now() - started, result: result! };
}

function assertUnavailable(result: PromiseSettledResult<unknown>): void {
  assert.equal(result.status, 'rejected');
  const reason = (result as PromiseRejectedResult).reason as unknown;
  assert.ok(
    isLinkvaultError(reason, 'store_unavailable'),
    `expected store_unavailable, got ${String(reason)}`,
  );
  assert.equal(reason.retryAfterSeconds, 1);
}

/**
 * The commands a client sent Redis while `work` ran (MONITOR between two ECHO markers), each as
 * its arguments; commands a Lua script ran show up with source "lua" and are not round trips.
 */
async function roundTrips(port: number, work: () => Promise<void>): Promise<string[][]> {
  const admin = new Redis(port, { lazyConnect: true });
  await admin.connect();
  const monitor = await admin.monitor();
  const marker = new Redis(port);
  try {
    const seen: string[][] = [];
    let counting = false;
    let onSentinel: () => void = () => undefined;
    const sentinel = new Promise<void>((resolve) => (onSentinel = resolve));
    monitor.on('monitor', (_time: string, args: string[], source: string) => {
      const name = String(args[0]).toLowerCase();
      if (name === 'echo' && args[1] === 'begin-count') counting = true;
      else if (name === 'echo' && args[1] === 'end-count') onSentinel();
      else if (counting && source !== 'lua') seen.push([name, ...args.slice(1).map(String)]);
    });
    await marker.echo('begin-count');
    await work();
    await marker.echo('end-count');
    await sentinel;
    return seen;
  } finally {
    marker.disconnect();
    monitor.disconnect();
    admin.disconnect();
  }
}

describe('RedisStore on a standalone Redis', () => {
  let server: RedisServerHandle;
  before(async () => {
    server = await startRedis();
  });
  after(async () => {
    await server?.stop();
  });

  runStoreContract('redis', async () => {
    const store = await createStore(redisConfig(server.url), { metrics: new Metrics() });
    return { store, cleanup: () => store.close() };
  });

  runReleaseStoreContract('redis', async () => {
    const store = await createStore(redisConfig(server.url), { metrics: new Metrics() });
    return { store, cleanup: () => store.close() };
  });

  it('when the link tenant is cached, then getLink, touchLink and appendAudit are one round trip each', async () => {
    const store = await createStore(redisConfig(server.url), { metrics: new Metrics() });
    try {
      const link = makeLink();
      await store.saveLink(link, null);
      // Warm up: the tenant cache and the script cache (the first EVALSHA falls back to EVAL once).
      await store.getLink(link.id);
      await store.touchLink(link.id, Date.now());
      await store.appendAudit({ atMs: Date.now(), type: 'warm.up', data: { link_id: link.id } });
      const seen = await roundTrips(server.port, async () => {
        for (let i = 0; i < 50; i++) {
          await store.getLink(link.id);
          await store.touchLink(link.id, Date.now());
          await store.appendAudit({
            atMs: Date.now(),
            type: 'token.released',
            data: { link_id: link.id },
          });
        }
      });
      const calls: Record<string, number> = {};
      for (const [name] of seen) calls[name!] = (calls[name!] ?? 0) + 1;
      // touchLink and appendAudit (the shard's bound checked and the event added in one script) are scripts.
      assert.deepEqual(calls, { hmget: 50, evalsha: 100 });
    } finally {
      await store.close();
    }
  });

  it('when releases commit in one turn of the event loop, then the releases of each tenant go to Redis as one script call (64 at most), each judged on its own', async () => {
    const store = await createStore(redisConfig(server.url), { metrics: new Metrics() });
    try {
      const links: LinkRecord[] = [];
      for (const tenantId of ['tenant-batch-a', 'tenant-batch-b']) {
        const link = makeLink({ tenantId });
        assert.ok(await store.saveLink(link, null));
        links.push(link);
      }
      const grantOf = (link: LinkRecord): GrantRecord => ({
        id: `grt_batch_${link.tenantId}`,
        serviceId: 'svc-batch',
        tenantId: null,
        providerId: null,
        linkId: link.id,
        scopes: null,
        purpose: 'batch',
        createdAtMs: Date.now(),
        expiresAtMs: null,
      });
      for (const link of links) await store.putGrant(grantOf(link));
      const event = (link: LinkRecord, n: number): AuditEvent => ({
        atMs: Date.now(),
        type: 'token.released',
        data: { link_id: link.id, tenant_id: link.tenantId, n },
      });
      // Warm up: the tenant cache and the script cache (the first EVALSHA falls back to EVAL once).
      for (const link of links)
        await store.commitRelease(link.id, grantOf(link).id, event(link, -1));
      let outcomes: ReleaseCommit[] = [];
      const seen = await roundTrips(server.port, async () => {
        // 70 releases of tenant a (over the 64 a call takes) and 5 of tenant b, in one turn.
        outcomes = await Promise.all([
          ...Array.from({ length: 70 }, (_, n) =>
            store.commitRelease(links[0]!.id, grantOf(links[0]!).id, event(links[0]!, n)),
          ),
          ...Array.from({ length: 5 }, (_, n) =>
            store.commitRelease(links[1]!.id, grantOf(links[1]!).id, event(links[1]!, n)),
          ),
        ]);
      });
      // EVALSHA's third argument is its key count: three keys per release.
      assert.deepEqual(seen.map(([name, , keys]) => `${name} ${keys}`).sort(), [
        'evalsha 15',
        'evalsha 18',
        'evalsha 192',
      ]);
      assert.ok(outcomes.every((o) => o.released));
      const seqs = outcomes.map((o) => (o.released ? o.seq : ''));
      assert.equal(new Set(seqs).size, 75);
      const stored = (await store.readAudit(undefined, 1000)).filter((e) => e.data['n'] !== -1);
      assert.equal(stored.length, 75);
      for (const link of links) {
        // In the order the releases were committed.
        const ns = stored.filter((e) => e.data['link_id'] === link.id).map((e) => e.data['n']);
        assert.deepEqual(
          ns,
          [...ns].sort((x, y) => Number(x) - Number(y)),
        );
      }
    } finally {
      await store.close();
    }
  });

  it('when links were stored before the expiry index existed, then the first listing files each of them once', async () => {
    const config = redisConfig(server.url);
    const p = config.keyPrefix;
    const now = Date.now();
    const writer = await createStore(config, { metrics: new Metrics() });
    const soon = makeLink({ tenantId: 'old-a', accessTokenExpiresAtMs: now + 1000 });
    const alsoSoon = makeLink({ tenantId: 'old-b', accessTokenExpiresAtMs: now + 2000 });
    const later = makeLink({ tenantId: 'old-a', accessTokenExpiresAtMs: now + 3_600_000 });
    const reauth = makeLink({
      tenantId: 'old-b',
      status: 'needs_reauth',
      accessTokenExpiresAtMs: now + 1000,
    });
    for (const l of [soon, alsoSoon, later, reauth]) assert.ok(await writer.saveLink(l, null));
    await writer.close();
    // What a store written by an earlier linkvault looks like: no expiry index, no marker.
    const admin = new Redis(server.port);
    try {
      assert.equal(await admin.del(`{${p}:t:old-a}:ix:exp`, `{${p}:t:old-b}:ix:exp`), 2);
      assert.equal(await admin.exists(`${p}:ix:exp:built`), 0);

      const upgraded = await createStore(config, { metrics: new Metrics() });
      try {
        assert.deepEqual(
          (await upgraded.listLinksExpiringBefore(now + 60_000, 100)).map((l) => l.id),
          [soon.id, alsoSoon.id],
        );
      } finally {
        await upgraded.close();
      }
      assert.deepEqual(await admin.zrange(`{${p}:t:old-a}:ix:exp`, '0', '-1', 'WITHSCORES'), [
        soon.id,
        String(now + 1000),
        later.id,
        String(now + 3_600_000),
      ]);
      assert.deepEqual(await admin.zrange(`{${p}:t:old-b}:ix:exp`, '0', '-1', 'WITHSCORES'), [
        alsoSoon.id,
        String(now + 2000),
      ]);
      assert.equal(
        await admin.exists(`${p}:ix:exp:built`),
        1,
        'done once: later processes only read the index',
      );
    } finally {
      admin.disconnect();
    }
  });

  it('when grants and links were stored before the grant index and release state, then a new process files the grants and releases judge the links alike', async () => {
    const config = redisConfig(server.url);
    const first = await createStore(config, { metrics: new Metrics() });
    const admin = new Redis(server.port, { lazyConnect: true });
    await admin.connect();
    try {
      const saved = (await first.saveLink(makeLink({ tenantId: 'tenant-old' }), null))!;
      const linkKey = `${redisTenantTag(config.keyPrefix, 'tenant-old')}:l:${encodeURIComponent(saved.id)}`;
      // The link as written before the release state `s` existed.
      assert.equal(await admin.hdel(linkKey, 's'), 1);
      // A grant as stored before the index: in the two hashes of one slot.
      const legacy = {
        id: 'grt_legacy',
        serviceId: 'svc-old',
        tenantId: null,
        providerId: null,
        linkId: saved.id,
        scopes: null,
        purpose: 'before the index',
        createdAtMs: Date.now(),
        expiresAtMs: null,
      };
      const all = `{${config.keyPrefix}:g}:all`;
      const svc = `{${config.keyPrefix}:g}:svc:svc-old`;
      await admin.hset(all, legacy.id, JSON.stringify(legacy));
      await admin.hset(svc, legacy.id, JSON.stringify(legacy));
      await first.close();

      const store = await createStore(config, { metrics: new Metrics() });
      try {
        const read = await store.readForRelease('svc-old', saved.id);
        assert.deepEqual(read?.grants, [legacy]);
        assert.deepEqual(await store.listGrants('svc-old'), [legacy]);
        assert.equal(await admin.exists(all, svc), 0, 'the old hashes are emptied');
        const event = {
          atMs: Date.now(),
          type: 'token.released',
          data: { tenant_id: 'tenant-old' },
        };
        assert.equal((await store.commitRelease(saved.id, legacy.id, event)).released, true);
        // Revoked, and again without `s`: the script judges the link from its JSON.
        assert.ok(
          await store.saveLink({ ...saved, status: 'revoked', tokens: null }, saved.version),
        );
        assert.equal(await admin.hdel(linkKey, 's'), 1);
        assert.deepEqual(await store.commitRelease(saved.id, legacy.id, event), {
          released: false,
          reason: 'not_active',
          status: 'revoked',
        });
      } finally {
        await store.close();
      }
    } finally {
      admin.disconnect();
    }
  });

  it('when CONFIG shows no AOF, then checkRedisPersistence reports the problem', async () => {
    const client = createRedisClient({ url: server.url });
    try {
      await waitForRedisReady(client, 2000);
      const report = await checkRedisPersistence(client);
      assert.equal(report.ok, false);
      assert.equal(report.problems.length, 1);
      assert.match(report.problems[0]!, /^appendonly is "no": .*set appendonly yes$/);
      assert.deepEqual(report.unknown, []);
    } finally {
      client.disconnect();
    }
  });
});

describe('checkRedisPersistence', () => {
  it('when appendonly yes, appendfsync always and noeviction, then it reports ok', async () => {
    const server = await startRedis({
      appendonly: true,
      appendfsync: 'always',
      maxmemoryPolicy: 'noeviction',
    });
    const client = createRedisClient({ url: server.url });
    try {
      await waitForRedisReady(client, 2000);
      assert.deepEqual(await checkRedisPersistence(client), {
        ok: true,
        problems: [],
        unknown: [],
      });
    } finally {
      client.disconnect();
      await server.stop();
    }
  });

  it('when appendfsync is no and keys may be evicted, then both are reported', async () => {
    const server = await startRedis({
      appendonly: true,
      appendfsync: 'no',
      maxmemoryPolicy: 'allkeys-lru',
    });
    const client = createRedisClient({ url: server.url });
    try {
      await waitForRedisReady(client, 2000);
      const report = await checkRedisPersistence(client);
      assert.equal(report.ok, false);
      assert.equal(report.problems.length, 2);
      assert.match(report.problems[0]!, /^appendfsync is "no": /);
      assert.match(
        report.problems[1]!,
        /^maxmemory-policy is "allkeys-lru": .*set maxmemory-policy noeviction$/,
      );
    } finally {
      client.disconnect();
      await server.stop();
    }
  });

  it('when CONFIG is disabled (managed Redis), then the settings are unknown, not a failure', async () => {
    const server = await startRedis({ extraArgs: ['--rename-command', 'CONFIG', ''] });
    const client = createRedisClient({ url: server.url });
    try {
      await waitForRedisReady(client, 2000);
      assert.deepEqual(await checkRedisPersistence(client), {
        ok: true,
        problems: [],
        unknown: ['appendfsync', 'appendonly', 'maxmemory-policy'],
      });
    } finally {
      client.disconnect();
      await server.stop();
    }
  });
});

describe('RedisStore when Redis fails', () => {
  it('when Redis is not reachable at start, then createStore rejects store_unavailable', async () => {
    const server = await startRedis();
    const url = server.url;
    await server.stop();
    const metrics = new Metrics();
    const started = Date.now();
    await assert.rejects(
      createStore(redisConfig(url), { metrics, startupTimeoutMs: 500 }),
      (err: unknown) => isLinkvaultError(err, 'store_unavailable'),
    );
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 450 && elapsed < 1500, `gave up after ${elapsed} ms`);
    assert.equal(metrics.storeErrors.get({ store: 'redis' }), 1);
  });

  it('when Redis is killed, then calls reject store_unavailable within 2 s, and the store recovers after a restart', async () => {
    const server = await startRedis();
    const metrics = new Metrics();
    const store = await createStore(redisConfig(server.url), { metrics });
    try {
      const link = makeLink();
      await store.saveLink(link, null);
      assert.equal((await store.getLink(link.id))?.id, link.id);

      // A command in flight when the server dies, and calls made while it is down.
      const inFlight = timed(store.appendAudit({ atMs: Date.now(), type: 't', data: {} }));
      await server.kill('SIGKILL');
      const duringOutage = [
        await timed(store.getLink(link.id)),
        await timed(store.appendAudit({ atMs: Date.now(), type: 't', data: {} })),
        await timed(store.claimJobs(Date.now(), 1, 1000)),
        await timed(store.ping()),
      ];
      const settled = await inFlight;
      if (settled.result.status === 'rejected') assertUnavailable(settled.result);
      assert.ok(settled.elapsedMs < 2000, `in-flight call settled in ${settled.elapsedMs} ms`);
      for (const { elapsedMs, result } of duringOutage) {
        assertUnavailable(result);
        assert.ok(elapsedMs < 2000, `rejected in ${elapsedMs} ms`);
      }
      assert.ok(metrics.storeErrors.get({ store: 'redis' }) >= 4);

      await server.restart();
      await waitUntilAnswering(store);
      // No AOF on this server: the data is gone, but the store works again.
      assert.equal(await store.getLink(link.id), null);
      const fresh = makeLink();
      assert.equal((await store.saveLink(fresh, null))?.version, 1);
      assert.equal((await store.getLink(fresh.id))?.id, fresh.id);
    } finally {
      await store.close();
      await server.stop();
    }
  });

  it('when Redis is down while audit hints flush, then the hints are kept and reach Redis after a restart, where another process takes them', async () => {
    const server = await startRedis();
    const config = redisConfig(server.url);
    const writer = await createStore(config, { metrics: new Metrics() });
    const exporterSide = await createStore(config, { metrics: new Metrics() });
    try {
      await writer.appendAudit({ atMs: Date.now(), type: 't', data: { tenant_id: 'tenant-k' } });
      // Down before the hint's flush (250 ms after the append), and for several flushes.
      await server.kill('SIGKILL');
      await new Promise((resolve) => setTimeout(resolve, 800));
      await server.restart();
      await waitUntilAnswering(exporterSide);
      // No AOF on this server: the event is gone with it, but the hint was still in the writer.
      const taken: string[] = [];
      for (const deadline = Date.now() + 5000; Date.now() < deadline && taken.length === 0;) {
        const changed = await exporterSide.takeChangedAuditShards!();
        assert.ok(changed !== null);
        taken.push(...changed);
        if (taken.length === 0) await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.deepEqual(taken, ['t:tenant-k']);
    } finally {
      await writer.close();
      await exporterSide.close();
      await server.stop();
    }
  });

  it('when Redis hangs (SIGSTOP) with audit hints pending, then close still returns within 2 s', async () => {
    const server = await startRedis();
    const store = await createStore(redisConfig(server.url), { metrics: new Metrics() });
    try {
      await store.appendAudit({ atMs: Date.now(), type: 't', data: { tenant_id: 'tenant-h' } });
      await server.kill('SIGSTOP');
      const started = Date.now();
      await store.close();
      const elapsed = Date.now() - started;
      assert.ok(elapsed < 2000, `close took ${elapsed} ms`);
    } finally {
      await server.kill('SIGCONT');
      await store.close();
      await server.stop();
    }
  });

  it('when Redis hangs (SIGSTOP), then a call rejects store_unavailable within 2 s instead of hanging', async () => {
    const server = await startRedis();
    const store = await createStore(redisConfig(server.url), { metrics: new Metrics() });
    try {
      const link = makeLink();
      await store.saveLink(link, null);
      await server.kill('SIGSTOP');
      const { elapsedMs, result } = await timed(store.getLink(link.id));
      assertUnavailable(result);
      assert.ok(elapsedMs >= 900 && elapsedMs < 2000, `timed out after ${elapsedMs} ms`);
      await server.kill('SIGCONT');
      await waitUntilAnswering(store);
      assert.equal((await store.getLink(link.id))?.id, link.id);
    } finally {
      await store.close();
      await server.stop();
    }
  });

  it('when Redis hangs (SIGSTOP) under releases committed together, then each of them rejects store_unavailable within 2 s, and later ones are stored', async () => {
    const server = await startRedis();
    const store = await createStore(redisConfig(server.url), { metrics: new Metrics() });
    try {
      const link = makeLink({ tenantId: 'tenant-frozen' });
      assert.ok(await store.saveLink(link, null));
      const g: GrantRecord = {
        id: 'grt_frozen',
        serviceId: 'svc-frozen',
        tenantId: 'tenant-frozen',
        providerId: null,
        linkId: null,
        scopes: null,
        purpose: 'frozen',
        createdAtMs: Date.now(),
        expiresAtMs: null,
      };
      await store.putGrant(g);
      const event = (n: number): AuditEvent => ({
        atMs: Date.now(),
        type: 'token.released',
        data: { link_id: link.id, tenant_id: link.tenantId, n },
      });
      assert.ok((await store.commitRelease(link.id, g.id, event(0))).released);
      await server.kill('SIGSTOP');
      const frozen = await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          timed(store.commitRelease(link.id, g.id, event(i + 1))),
        ),
      );
      for (const { elapsedMs, result } of frozen) {
        assertUnavailable(result);
        assert.ok(elapsedMs >= 900 && elapsedMs < 2000, `timed out after ${elapsedMs} ms`);
      }
      await server.kill('SIGCONT');
      await waitUntilAnswering(store);
      assert.ok((await store.commitRelease(link.id, g.id, event(99))).released);
      // What a frozen Redis did with the script it had read is its own; the callers were told
      // nothing was released, and the records before and after are there.
      const ns = (await store.readAudit(undefined, 100)).map((e) => e.data['n']);
      assert.equal(ns[0], 0);
      assert.equal(ns.at(-1), 99);
    } finally {
      await store.close();
      await server.stop();
    }
  });

  it('when Redis with appendonly yes and appendfsync always is killed and restarted, then the queue, links and audit survive', async () => {
    const server = await startRedis({ appendonly: true, appendfsync: 'always' });
    const store = await createStore(redisConfig(server.url), { metrics: new Metrics() });
    try {
      const now = Date.now();
      for (let i = 0; i < 5; i++)
        await store.enqueue({
          id: `job-${i}`,
          kind: 'revoke',
          payload: { i },
          attempts: 0,
          runAtMs: now + i,
        });
      const [leased] = await store.claimJobs(now, 1, 60_000);
      const link = makeLink();
      await store.saveLink(link, null);
      const seq = await store.appendAudit({
        atMs: now,
        type: 'link.created',
        data: { link_id: link.id },
      });

      await server.kill('SIGKILL');
      await server.restart();
      await waitUntilAnswering(store);

      assert.equal(await store.countJobs(), 5);
      assert.deepEqual(
        (await store.claimJobs(now + 10, 10, 1000)).map((j) => j.id),
        ['job-1', 'job-2', 'job-3', 'job-4'],
      );
      assert.equal(
        await store.completeJob('job-0', leased!.leaseToken!),
        true,
        'the lease survived too',
      );
      assert.deepEqual(await store.getLink(link.id), { ...link, version: 1 });
      assert.deepEqual(
        (await store.readAudit()).map((e) => e.seq),
        [seq],
      );
    } finally {
      await store.close();
      await server.stop();
    }
  });
});
