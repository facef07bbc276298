import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { ConfigError, loadConfig } from '../../../src/config.js';
import { Metrics } from '../../../src/metrics.js';
import { createStore, replicationLagCounter } from '../../../src/store/create-store.js';
import { createRedisClient, waitForRedisReady } from '../../../src/store/redis/client.js';
import { RedisKeys } from '../../../src/store/redis/keys.js';
import { RedisStore } from '../../../src/store/redis/redis-store.js';
import { ReplicaWait, readConnectedReplicas } from '../../../src/store/redis/replica-wait.js';
import type { Store } from '../../../src/store/store.js';
import {
  startRedis,
  startRedisReplica,
  type RedisServerHandle,
} from '../../support/redis-server.js';
import { makeLink } from '../store-contract.js';

let prefixes = 0;
function redisConfig(url: string, wait: { replicas?: number; timeoutMs?: number } = {}) {
  return {
    kind: 'redis' as const,
    redisUrl: url,
    clusterNodes: null,
    keyPrefix: `lvwait${++prefixes}`,
    waitReplicas: wait.replicas ?? null,
    waitTimeoutMs: wait.timeoutMs ?? 500,
  };
}

/** Watches a server's MONITOR stream; `names` lists the commands seen (lower case, Lua's excluded). */
async function watch(server: RedisServerHandle): Promise<{
  names: string[];
  onCommand(name: string, cb: () => void): void;
  stop(): void;
}> {
  const admin = new Redis(server.port, server.host, { lazyConnect: true });
  await admin.connect();
  const monitor = await admin.monitor();
  const names: string[] = [];
  const hooks: { name: string; cb: () => void }[] = [];
  monitor.on('monitor', (_time: string, args: string[], source: string) => {
    if (source === 'lua') return;
    const name = String(args[0]).toLowerCase();
    names.push(name);
    for (const h of hooks.splice(0))
      if (h.name === name) h.cb();
      else hooks.push(h);
  });
  return {
    names,
    onCommand(name, cb) {
      hooks.push({ name, cb });
    },
    stop() {
      monitor.disconnect();
      admin.disconnect();
    },
  };
}

/** `cmdstat_<name>` calls from INFO commandstats, 0 when the command never ran. */
async function commandCalls(server: RedisServerHandle, name: string): Promise<number> {
  const client = new Redis(server.port, server.host);
  try {
    const info = await client.info('commandstats');
    const match = new RegExp(`^cmdstat_${name}:calls=(\\d+)`, 'm').exec(info);
    return match ? Number(match[1]) : 0;
  } finally {
    client.disconnect();
  }
}

/** Runs every write that must not be lost once, and one that may be (touchLink). */
async function writeEverything(store: Store): Promise<void> {
  const link = makeLink();
  await store.saveLink(link, null);
  await store.touchLink(link.id, Date.now());
  await store.putRevocation({ linkId: link.id, record: { revokedAtMs: 1 } });
  await store.appendAudit({ atMs: 1, type: 'link.revoked', requestId: null, data: {} });
  await store.enqueue({ id: `job_${link.id}`, kind: 'k', payload: {}, attempts: 0, runAtMs: 0 });
  const [job] = await store.claimJobs(Date.now(), 1, 60_000);
  assert.ok(job?.leaseToken);
  assert.equal(await store.rescheduleJob(job.id, job.leaseToken!, Date.now() + 60_000, 1), true);
}

describe('RedisStore waits for replicas after writes that must not be lost', () => {
  let master: RedisServerHandle;
  let replica: RedisServerHandle;
  const stores: Store[] = [];
  before(async () => {
    master = await startRedis();
    replica = await startRedisReplica(master);
  });
  afterEach(async () => {
    await replica.kill('SIGCONT');
    await Promise.all(stores.splice(0).map((s) => s.close()));
  });
  after(async () => {
    await replica?.stop();
    await master?.stop();
  });

  it('when a replica is attached, then saveLink returns only once the replica has the record', async () => {
    const config = redisConfig(master.url, { timeoutMs: 800 });
    const store = await createStore(config, { metrics: new Metrics() });
    stores.push(store);
    const monitor = await watch(master);
    const reader = new Redis(replica.port, replica.host);
    try {
      await reader.ping();
      // The replica is frozen until the master is seen waiting for it: saveLink must not resolve before.
      await replica.kill('SIGSTOP');
      let replicaStopped = true;
      monitor.onCommand('wait', () => {
        replicaStopped = false;
        void replica.kill('SIGCONT');
      });
      const link = makeLink();
      const saved = await store.saveLink(link, null);
      assert.equal(replicaStopped, false, 'saveLink resolved while the replica was frozen');
      assert.equal(saved?.version, 1);
      const onReplica = await reader.hget(
        new RedisKeys(config.keyPrefix).link(link.tenantId, link.id),
        'j',
      );
      assert.ok(onReplica, 'the acknowledged record is not on the replica');
      assert.equal((JSON.parse(onReplica) as { version: number }).version, 1);
    } finally {
      reader.disconnect();
      monitor.stop();
    }
  });

  it('when a replica is attached, then each must-not-lose write is followed by WAIT (Redis 7.0: not WAITAOF) and touchLink is not', async () => {
    const store = await createStore(redisConfig(master.url), { metrics: new Metrics() });
    stores.push(store);
    const waitsBefore = await commandCalls(master, 'wait');
    await writeEverything(store);
    // INFO counts commands as they execute: no race with an asynchronous MONITOR feed.
    assert.equal((await commandCalls(master, 'wait')) - waitsBefore, 5);
    assert.equal(await commandCalls(master, 'waitaof'), 0);
  });

  it('when the replica is frozen, then the write stands after the timeout and the miss is counted', async () => {
    const metrics = new Metrics();
    const config = redisConfig(master.url, { timeoutMs: 200 });
    const store = await createStore(config, { metrics });
    stores.push(store);
    await replica.kill('SIGSTOP');
    const link = makeLink();
    const started = Date.now();
    const saved = await store.saveLink(link, null);
    const elapsedMs = Date.now() - started;
    assert.equal(saved?.version, 1);
    // Generous bound only: the call waited (about the timeout) and did not hang.
    assert.ok(elapsedMs >= 150 && elapsedMs < 5000, `saveLink took ${elapsedMs} ms`);
    assert.equal(replicationLagCounter(metrics).get({ store: 'redis' }), 1);
    assert.match(metrics.render(), /^linkvault_store_replication_lag_total\{store="redis"\} 1$/m);
    // What was lost: nothing on the master; the caller got the stored record.
    assert.deepEqual(await store.getLink(link.id), saved);
  });

  it('when LINKVAULT_REDIS_WAIT_REPLICAS is 0, then no WAIT is sent even with a replica', async () => {
    const before = await commandCalls(master, 'wait');
    const store = await createStore(redisConfig(master.url, { replicas: 0 }), {
      metrics: new Metrics(),
    });
    stores.push(store);
    await writeEverything(store);
    assert.equal(await commandCalls(master, 'wait'), before);
  });
});

describe('RedisStore whose replica went away', () => {
  let master: RedisServerHandle;
  let replica: RedisServerHandle;
  before(async () => {
    master = await startRedis();
    replica = await startRedisReplica(master);
  });
  after(async () => {
    await replica?.stop();
    await master?.stop();
  });

  it('when the only replica is gone, then writes are not held up by WAIT but each counts as a miss', async () => {
    const client = createRedisClient({ url: master.url });
    await waitForRedisReady(client, 5000);
    let misses = 0;
    const replicaWait = new ReplicaWait({
      client,
      replicas: null,
      timeoutMs: 800,
      onMiss: () => misses++,
    });
    await replicaWait.detect();
    const store = new RedisStore({ client, keyPrefix: `lvwait${++prefixes}`, replicaWait });
    try {
      await store.saveLink(makeLink(), null);
      assert.equal(misses, 0);

      await replica.stop();
      const admin = new Redis(master.port, master.host);
      try {
        // Polling Redis's own view: there is no event to await for the master noticing the loss.
        while (readConnectedReplicas(await admin.info('replication')) > 0)
          await new Promise((resolve) => setTimeout(resolve, 20));
      } finally {
        admin.disconnect();
      }
      await replicaWait.detect();

      const waitsBefore = await commandCalls(master, 'wait');
      const link = makeLink();
      const saved = await store.saveLink(link, null);
      await store.appendAudit({ atMs: 1, type: 'link.revoked', requestId: null, data: {} });
      assert.equal(saved?.version, 1);
      assert.equal(misses, 2);
      assert.equal(await commandCalls(master, 'wait'), waitsBefore);
      assert.deepEqual(await store.getLink(link.id), saved);
    } finally {
      await store.close();
    }
  });
});

describe('RedisStore without replicas', () => {
  let server: RedisServerHandle;
  before(async () => {
    server = await startRedis();
  });
  after(async () => {
    await server?.stop();
  });

  it('when the Redis has no replicas, then no WAIT is ever sent', async () => {
    const store = await createStore(redisConfig(server.url), { metrics: new Metrics() });
    try {
      await writeEverything(store);
      assert.equal(await commandCalls(server, 'wait'), 0);
      assert.equal(await commandCalls(server, 'waitaof'), 0);
    } finally {
      await store.close();
    }
  });
});

describe('LINKVAULT_REDIS_WAIT_REPLICAS and LINKVAULT_REDIS_WAIT_TIMEOUT_MS', () => {
  const base = { LINKVAULT_STORE: 'redis', LINKVAULT_REDIS_URL: 'redis://127.0.0.1:1' };
  function rejects(env: Record<string, string>, variable: string): void {
    assert.throws(
      () => loadConfig({ ...base, ...env }),
      (err: unknown) => err instanceof ConfigError && err.variable === variable,
    );
  }

  it('when they are out of range or not numbers, then start-up refuses them', () => {
    rejects({ LINKVAULT_REDIS_WAIT_REPLICAS: '-1' }, 'LINKVAULT_REDIS_WAIT_REPLICAS');
    rejects({ LINKVAULT_REDIS_WAIT_REPLICAS: 'all' }, 'LINKVAULT_REDIS_WAIT_REPLICAS');
    rejects({ LINKVAULT_REDIS_WAIT_REPLICAS: '17' }, 'LINKVAULT_REDIS_WAIT_REPLICAS');
    rejects({ LINKVAULT_REDIS_WAIT_TIMEOUT_MS: '9' }, 'LINKVAULT_REDIS_WAIT_TIMEOUT_MS');
    // Above the client's 1 s command timeout, which would cut the WAIT short.
    rejects({ LINKVAULT_REDIS_WAIT_TIMEOUT_MS: '801' }, 'LINKVAULT_REDIS_WAIT_TIMEOUT_MS');
  });

  it('when unset, then one replica is awaited where there are replicas, for 500 ms', () => {
    const { store } = loadConfig(base);
    assert.equal(store.kind, 'redis');
    // Absent: createStore applies the defaults (null = 1 where there are replicas; 500 ms).
    assert.equal(store.kind === 'redis' && 'waitReplicas' in store, false);
    assert.equal(store.kind === 'redis' && 'waitTimeoutMs' in store, false);
  });

  it('when set, then they are taken as given', () => {
    const { store } = loadConfig({
      ...base,
      LINKVAULT_REDIS_WAIT_REPLICAS: '0',
      LINKVAULT_REDIS_WAIT_TIMEOUT_MS: '250',
    });
    assert.equal(store.kind === 'redis' && store.waitReplicas, 0);
    assert.equal(store.kind === 'redis' && store.waitTimeoutMs, 250);
  });
});
