import assert from 'node:assert/strict';
import { createSecretKey, randomBytes, randomUUID, type KeyObject } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { createAudit } from '../../../src/links/audit/audit.js';
import { createAuditExporter } from '../../../src/links/audit/export/audit-exporter.js';
import { verifyAuditChain } from '../../../src/links/audit/export/audit-chain.js';
import { Metrics } from '../../../src/metrics.js';
import { createStore } from '../../../src/store/create-store.js';
import type { Store } from '../../../src/store/store.js';
import { startRedis, type RedisServerHandle } from '../../support/redis-server.js';

const silent = pino({ level: 'silent' });
const TENANTS = ['acme', 'globex', 'initech'];

async function openStore(
  kind: 'sqlite' | 'redis',
  dir: string,
  redisUrl: string,
  auditMaxEvents?: number,
): Promise<Store> {
  const config =
    kind === 'sqlite'
      ? ({ kind: 'sqlite', sqlitePath: join(dir, 'lv.db') } as const)
      : ({
          kind: 'redis',
          redisUrl,
          clusterNodes: null,
          keyPrefix: `ax${randomUUID().slice(0, 8)}`,
        } as const);
  return createStore(config, {
    metrics: new Metrics(),
    ...(auditMaxEvents === undefined ? {} : { auditMaxEvents }),
  });
}

async function storedEvents(store: Store): Promise<number> {
  let n = 0;
  for (const shard of await store.listAuditShards()) {
    let after: string | undefined;
    for (;;) {
      const page = await store.readAuditShard(shard, after, 1000);
      n += page.length;
      if (page.length < 1000) break;
      after = page.at(-1)!.seq;
    }
  }
  return n;
}

function exportedLines(dir: string): Record<string, unknown>[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.jsonl'))
    .sort()
    .flatMap((f) =>
      readFileSync(join(dir, f), 'utf8')
        .split('\n')
        .filter((l) => l && !l.startsWith('{"checkpoint"'))
        .map((l) => JSON.parse(l) as Record<string, unknown>),
    );
}

describe('the audit exporter: export, trim, fail closed', () => {
  let redis: RedisServerHandle;
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await redis.stop();
  });

  for (const kind of ['sqlite', 'redis'] as const) {
    it(`when 20,000 events are appended on ${kind} with a retention of 1,000, then the store keeps at most 1,000 and the files all 20,000, verifiably`, async () => {
      const dir = mkdtempSync(join(tmpdir(), `lv-audit-export-${kind}-`));
      const exportDir = join(dir, 'export');
      const store = await openStore(kind, dir, redis.url);
      const key = createSecretKey(randomBytes(32));
      try {
        const audit = createAudit({ store, hmacKey: key, now: Date.now });
        const exporter = createAuditExporter({
          store,
          dir: exportDir,
          key: async () => key,
          maxStoreEvents: 1000,
          log: silent,
          now: Date.now,
        });
        let maxHeld = 0;
        for (let round = 0; round < 10; round++) {
          await Promise.all(
            Array.from({ length: 2000 }, (_, i) =>
              audit.record('token.released', {
                tenant_id: TENANTS[i % 3],
                link_id: `lnk_${i % 50}`,
                service_id: 'crm-sync',
                n: round * 2000 + i,
              }),
            ),
          );
          const pass = await exporter.runOnce();
          assert.equal(pass.active, true);
          maxHeld = Math.max(maxHeld, await storedEvents(store));
          assert.ok(
            (await storedEvents(store)) <= 1000,
            'trimmed to the retention after each pass',
          );
        }
        await exporter.stop();
        const lines = exportedLines(exportDir);
        assert.equal(lines.length, 20_000);
        assert.deepEqual(
          lines.map((l) => (l.data as { n: number }).n).sort((a, b) => a - b),
          Array.from({ length: 20_000 }, (_, i) => i),
          'every event exactly once',
        );
        assert.equal(
          lines.some((l) => JSON.stringify(l).includes('access_token')),
          false,
        );
        const report = await verifyAuditChain(exportDir, key);
        assert.deepEqual([report.ok, report.events], [true, 20_000]);

        // One byte changed: verify names the file and line (then the original is put back).
        const first = readdirSync(exportDir)
          .filter((f) => f.endsWith('.jsonl'))
          .sort()[0]!;
        const original = readFileSync(join(exportDir, first), 'utf8');
        const tampered = original.split('\n');
        tampered[41] = tampered[41]!.replace('"n":', '"n": ');
        writeFileSync(join(exportDir, first), tampered.join('\n'));
        const bad = await verifyAuditChain(exportDir, key);
        assert.deepEqual([bad.problem?.file, bad.problem?.line], [first, 42]);
        writeFileSync(join(exportDir, first), original);
        assert.equal((await verifyAuditChain(exportDir, key)).ok, true);
      } finally {
        await store.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it(`when the exporter cannot write on ${kind}, then appends fail closed at the bound, before the store grows past it, and resume once it exports`, async () => {
      const dir = mkdtempSync(join(tmpdir(), `lv-audit-full-${kind}-`));
      const blocked = join(dir, 'not-a-dir');
      writeFileSync(blocked, 'a file where the export directory should be');
      const store = await openStore(kind, dir, redis.url, 300);
      const key = createSecretKey(randomBytes(32));
      try {
        const audit = createAudit({ store, hmacKey: key, now: Date.now });
        const stuck = createAuditExporter({
          store,
          dir: join(blocked, 'export'),
          key: async () => key,
          maxStoreEvents: 100,
          log: silent,
          now: Date.now,
        });
        let stored = 0;
        let refused = 0;
        for (let i = 0; i < 400; i++) {
          try {
            await audit.record('token.released', { tenant_id: 'acme', n: i });
            stored++;
          } catch (err) {
            assert.equal((err as { code?: string }).code, 'audit_unavailable');
            refused++;
          }
          if (i % 50 === 0) await assert.rejects(stuck.runOnce());
        }
        assert.equal(stored, 300, 'appends stop at the bound');
        assert.equal(refused, 100);
        assert.equal(await storedEvents(store), 300, 'the store never holds more than the bound');
        await stuck.stop();

        // The directory comes back: the exporter catches up and appends are accepted again.
        const exporter = createAuditExporter({
          store,
          dir: join(dir, 'export'),
          key: async () => key,
          maxStoreEvents: 100,
          log: silent,
          now: Date.now,
        });
        const pass = await exporter.runOnce();
        assert.equal(pass.exported, 300);
        assert.ok((await storedEvents(store)) <= 100);
        await audit.record('token.released', { tenant_id: 'acme', n: 400 });
        await exporter.stop();
      } finally {
        await store.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it(`when no export directory is set on ${kind}, then the retention keeps each shard's share and drops the rest`, async () => {
      const dir = mkdtempSync(join(tmpdir(), `lv-audit-retention-${kind}-`));
      const store = await openStore(kind, dir, redis.url);
      const key = createSecretKey(randomBytes(32));
      try {
        const audit = createAudit({ store, hmacKey: key, now: Date.now });
        for (let i = 0; i < 900; i++)
          await audit.record('token.released', { tenant_id: TENANTS[i % 3], n: i });
        const retention = createAuditExporter({
          store,
          dir: null,
          key: async () => key,
          maxStoreEvents: 300,
          log: silent,
          now: Date.now,
        });
        const pass = await retention.runOnce();
        await retention.stop();
        const held = await storedEvents(store);
        assert.ok(held <= 300, `${held} events kept`);
        assert.equal(pass.trimmed, 900 - held);
        // The newest stay: the last event appended is still there.
        const newest = await store.queryAudit(
          { tenantId: TENANTS[899 % 3]! },
          { limit: 1, order: 'desc' },
        );
        assert.equal((newest.events[0]!.data as { n: number }).n, 899);
      } finally {
        await store.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it(`when audit events are queried on ${kind}, then filters narrow, pages chain and nothing repeats`, async () => {
      const dir = mkdtempSync(join(tmpdir(), `lv-audit-query-${kind}-`));
      const store = await openStore(kind, dir, redis.url);
      const key = createSecretKey(randomBytes(32));
      try {
        const audit = createAudit({ store, hmacKey: key, now: Date.now });
        for (let i = 0; i < 120; i++)
          await audit.record(i % 4 === 0 ? 'link.refreshed' : 'token.released', {
            tenant_id: TENANTS[i % 3],
            link_id: `lnk_${i % 6}`,
            service_id: i % 2 === 0 ? 'crm-sync' : 'billing',
            n: i,
          });
        const collect = async (
          filter: Parameters<Store['queryAudit']>[0],
          order: 'asc' | 'desc',
        ) => {
          const seen: number[] = [];
          let after: string | undefined;
          for (let pages = 0; pages < 100; pages++) {
            const page = await store.queryAudit(filter, {
              ...(after === undefined ? {} : { after }),
              limit: 7,
              order,
            });
            seen.push(...page.events.map((e) => (e.data as { n: number }).n));
            if (!page.next) break;
            after = page.next;
          }
          return seen;
        };
        const all = await collect({}, 'asc');
        assert.deepEqual(
          [...all].sort((a, b) => a - b),
          Array.from({ length: 120 }, (_, i) => i),
        );
        const acme = await collect({ tenantId: 'acme' }, 'asc');
        assert.deepEqual(
          acme,
          Array.from({ length: 40 }, (_, i) => i * 3),
          'oldest first within a tenant',
        );
        const link = await collect({ linkId: 'lnk_3' }, 'desc');
        assert.deepEqual(
          link,
          [117, 111, 105, 99, 93, 87, 81, 75, 69, 63, 57, 51, 45, 39, 33, 27, 21, 15, 9, 3],
        );
        const refreshesOfBilling = await collect(
          { serviceId: 'billing', type: 'link.refreshed' },
          'asc',
        );
        assert.deepEqual(refreshesOfBilling, []);
        const billing = await collect({ serviceId: 'billing', tenantId: 'globex' }, 'asc');
        assert.deepEqual(
          billing,
          Array.from({ length: 20 }, (_, i) => 1 + i * 6),
        );
        await assert.rejects(store.queryAudit({}, { after: 'garbage!', limit: 5, order: 'asc' }));
      } finally {
        await store.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }

  // Many shards (a shard per tenant), on Redis.
  /**
   * The store as the exporter sees it (with its changed-shard hints), recording the shards read and
   * trimmed and how many trims (and reads) are in flight at once; `failReadOnce` makes the next read throw.
   */
  function instrumented(store: Store): {
    source: Parameters<typeof createAuditExporter>[0]['store'];
    mostInFlight: () => number;
    mostReadsInFlight: () => number;
    read: Set<string>;
    trimmed: Set<string>;
    failReadOnce: () => void;
  } {
    let inFlight = 0;
    let most = 0;
    let readsInFlight = 0;
    let mostReads = 0;
    const read = new Set<string>();
    const trimmed = new Set<string>();
    let failNextRead = false;
    const source: Parameters<typeof createAuditExporter>[0]['store'] = {
      listAuditShards: () => store.listAuditShards(),
      takeChangedAuditShards: () => store.takeChangedAuditShards!(),
      readAuditShard: async (shard, afterSeq, limit) => {
        read.add(shard);
        if (failNextRead) {
          failNextRead = false;
          throw new Error('injected read failure');
        }
        mostReads = Math.max(mostReads, ++readsInFlight);
        try {
          return await store.readAuditShard(shard, afterSeq, limit);
        } finally {
          readsInFlight--;
        }
      },
      trimAuditShard: async (shard, throughSeq, keep) => {
        trimmed.add(shard);
        most = Math.max(most, ++inFlight);
        try {
          return await store.trimAuditShard(shard, throughSeq, keep);
        } finally {
          inFlight--;
        }
      },
      acquireLock: (name, ttlMs) => store.acquireLock(name, ttlMs),
      extendLock: (name, owner, ttlMs) => store.extendLock(name, owner, ttlMs),
      releaseLock: (name, owner) => store.releaseLock(name, owner),
    };
    return {
      source,
      mostInFlight: () => most,
      mostReadsInFlight: () => mostReads,
      read,
      trimmed,
      failReadOnce: () => (failNextRead = true),
    };
  }

  /** Runs `body` on a fresh Redis store (with an export directory and an audit key), then closes and removes them. */
  async function onFreshRedis(
    body: (fresh: { store: Store; exportDir: string; key: KeyObject }) => Promise<void>,
  ): Promise<void> {
    const dir = mkdtempSync(join(tmpdir(), 'lv-audit-shards-'));
    const store = await openStore('redis', dir, redis.url);
    try {
      await body({ store, exportDir: join(dir, 'export'), key: createSecretKey(randomBytes(32)) });
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }

  /** Shard i of `count` gets i × `per` events, in order (n = 0, 1, …). */
  async function fill(store: Store, count: number, per: number): Promise<number> {
    const audit = createAudit({ store, hmacKey: createSecretKey(randomBytes(32)), now: Date.now });
    let total = 0;
    await Promise.all(
      Array.from({ length: count }, async (_, t) => {
        for (let n = 0; n < t * per; n++)
          await audit.record('token.released', { tenant_id: `tenant-${t}`, n });
        total += t * per;
      }),
    );
    return total;
  }

  it('when no export directory is set and 100 shards are over their share, then up to 16 trims are in flight together and each shard keeps its newest share', async () => {
    await onFreshRedis(async ({ store }) => {
      const total = await fill(store, 100, 1); // shard i holds i events
      const { source, mostInFlight } = instrumented(store);
      const retention = createAuditExporter({
        store: source,
        dir: null,
        key: async () => createSecretKey(randomBytes(32)),
        maxStoreEvents: 100 * 20, // a share of 20 per shard
        log: silent,
        now: Date.now,
      });
      const pass = await retention.runOnce();
      await retention.stop();
      assert.equal(mostInFlight(), 16);
      const kept = Array.from({ length: 100 }, (_, t) => Math.min(t, 20));
      assert.equal(pass.trimmed, total - kept.reduce((a, b) => a + b, 0));
      assert.equal(await storedEvents(store), total - pass.trimmed);
      // The newest stay: each over-full shard keeps n = t - 20 … t - 1.
      const page = await store.queryAudit({ tenantId: 'tenant-99' }, { limit: 100, order: 'asc' });
      assert.deepEqual(
        page.events.map((e) => (e.data as { n: number }).n),
        Array.from({ length: 20 }, (_, k) => 79 + k),
      );
    });
  });

  it('when 40 shards hold 0 to 312 new events, then every event is exported once, in order per shard, first pages are read 16 at a time and each shard is trimmed through its last, 16 at a time', async () => {
    await onFreshRedis(async ({ store, exportDir, key }) => {
      const total = await fill(store, 40, 8); // up to 312 events: four batches of 100
      const { source, mostInFlight, mostReadsInFlight } = instrumented(store);
      const exporter = createAuditExporter({
        store: source,
        dir: exportDir,
        key: async () => key,
        maxStoreEvents: 40 * 5, // keep 5 exported events per shard
        log: silent,
        now: Date.now,
        batchSize: 100,
      });
      const pass = await exporter.runOnce();
      await exporter.stop();
      assert.equal(pass.exported, total);
      assert.equal(mostInFlight(), 16);
      assert.equal(mostReadsInFlight(), 16);
      const lines = exportedLines(exportDir);
      assert.equal(lines.length, total);
      for (let t = 0; t < 40; t++) {
        const ns = lines
          .filter((l) => l.tenant_id === `tenant-${t}`)
          .map((l) => (l.data as { n: number }).n);
        assert.deepEqual(
          ns,
          Array.from({ length: t * 8 }, (_, n) => n),
          `tenant-${t}`,
        );
      }
      assert.equal(
        await storedEvents(store),
        Array.from({ length: 40 }, (_, t) => Math.min(t * 8, 5)).reduce((a, b) => a + b, 0),
      );
      const report = await verifyAuditChain(exportDir, key);
      assert.equal(report.ok, true);
      assert.equal(report.events, total);
    });
  });

  it('when 2 of 100 shards get new events after a pass, then the next pass reads and trims only those 2, and the passes of the next sweep interval visit every shard once, a slice each', async () => {
    await onFreshRedis(async ({ store, exportDir, key }) => {
      const total = await fill(store, 100, 1); // tenant-1 … tenant-99 hold 1 … 99 events
      const { source, read, trimmed } = instrumented(store);
      let clock = Date.now();
      const exporter = createAuditExporter({
        store: source,
        dir: exportDir,
        key: async () => key,
        maxStoreEvents: 100 * 5,
        log: silent,
        now: () => clock,
        sweepIntervalMs: 60_000,
      });
      const first = await exporter.runOnce();
      assert.equal(first.exported, total);
      const every = (await store.listAuditShards()).length;
      assert.equal(first.shards, every);
      assert.equal(read.size, every);

      const audit = createAudit({ store, hmacKey: key, now: Date.now });
      for (let n = 0; n < 3; n++)
        await audit.record('token.released', { tenant_id: 'tenant-5', n });
      await audit.record('token.released', { tenant_id: 'tenant-77', n: 0 });
      read.clear();
      trimmed.clear();
      const second = await exporter.runOnce();
      assert.equal(second.exported, 4);
      assert.equal(second.shards, 2);
      assert.deepEqual([...read].sort(), ['t:tenant-5', 't:tenant-77']);
      assert.deepEqual([...trimmed].sort(), ['t:tenant-5', 't:tenant-77']);
      // Trimmed to its share (5) like every other shard: tenant-77 keeps its newest 5.
      assert.equal((await store.readAuditShard('t:tenant-77')).length, 5);

      read.clear();
      const idle = await exporter.runOnce();
      assert.deepEqual([idle.exported, idle.shards, read.size], [0, 0, 0], 'nothing changed');

      // The rolling visit: a quarter of the interval later, a quarter of the shards (rounded up),
      // and so on; after the whole interval every shard has been read and trimmed exactly once.
      const visits: string[] = [];
      for (let quarter = 1; quarter <= 4; quarter++) {
        read.clear();
        trimmed.clear();
        clock += 15_000;
        const slice = await exporter.runOnce();
        assert.equal(slice.shards, Math.ceil((every * quarter) / 4) - visits.length);
        // Each shard read is trimmed, but for the global shard: it holds no event, so no mark.
        assert.deepEqual(
          [...trimmed].sort(),
          [...read].filter((shard) => shard !== 'global').sort(),
        );
        visits.push(...read);
      }
      assert.equal(visits.length, every, 'no shard visited twice');
      assert.deepEqual(new Set(visits), new Set(await store.listAuditShards()));
      await exporter.stop();
      const report = await verifyAuditChain(exportDir, key);
      assert.equal(report.ok, true);
      assert.equal(report.events, total + 4);
      assert.equal(exportedLines(exportDir).length, total + 4);
    });
  });

  it('when the lock runs out mid-pass and is taken again, then the pass commits nothing it staged and the next pass exports every event once onto a whole chain', async () => {
    await onFreshRedis(async ({ store, exportDir, key }) => {
      const total = await fill(store, 40, 2); // 40 shards: three groups of sixteen reads
      const { source } = instrumented(store);
      let clock = Date.now();
      let expireOnNextRenewal = false;
      let ranOut = false;
      const exporter = createAuditExporter({
        store: {
          ...source,
          // The lock's time runs out before the renewal: the key is gone, so it can be taken again.
          extendLock: async (name, owner, ttlMs) => {
            if (!expireOnNextRenewal) return store.extendLock(name, owner, ttlMs);
            expireOnNextRenewal = false;
            await store.releaseLock(name, owner);
            return false;
          },
          readAuditShard: async (shard, after, limit) => {
            if (shard === 't:tenant-1' && !ranOut) {
              ranOut = true;
              clock += 20_000; // past half the lock's 30 s: the next check renews
              expireOnNextRenewal = true;
            }
            return source.readAuditShard(shard, after, limit);
          },
        },
        dir: exportDir,
        key: async () => key,
        maxStoreEvents: 100_000,
        log: silent,
        now: () => clock,
      });
      const first = await exporter.runOnce();
      assert.deepEqual([first.active, first.exported], [false, 0]);
      assert.equal(
        exportedLines(exportDir).length,
        0,
        'nothing staged by the stale writer committed',
      );
      const second = await exporter.runOnce();
      assert.equal(second.exported, total);
      await exporter.stop();
      assert.equal(exportedLines(exportDir).length, total);
      const report = await verifyAuditChain(exportDir, key);
      assert.equal(report.ok, true, JSON.stringify(report.problem));
      assert.equal(report.events, total);
    });
  });

  it('when a pass fails after taking the changed shards, then the next pass visits every shard and exports what the failed one missed', async () => {
    await onFreshRedis(async ({ store, exportDir, key }) => {
      const total = await fill(store, 20, 1);
      const { source, read, failReadOnce } = instrumented(store);
      const exporter = createAuditExporter({
        store: source,
        dir: exportDir,
        key: async () => key,
        maxStoreEvents: 100_000,
        log: silent,
        now: Date.now,
      });
      assert.equal((await exporter.runOnce()).exported, total);
      const audit = createAudit({ store, hmacKey: key, now: Date.now });
      await audit.record('token.released', { tenant_id: 'tenant-3', n: 3 });
      failReadOnce();
      await assert.rejects(exporter.runOnce(), /injected read failure/);
      // The hint for tenant-3 was taken by the failed pass: nothing will send it again.
      assert.deepEqual(await store.takeChangedAuditShards!(), []);
      read.clear();
      const next = await exporter.runOnce();
      assert.equal(next.exported, 1);
      assert.equal(read.size, (await store.listAuditShards()).length);
      await exporter.stop();
      assert.equal(exportedLines(exportDir).length, total + 1);
      assert.equal((await verifyAuditChain(exportDir, key)).ok, true);
    });
  });
});
