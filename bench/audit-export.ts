/**
 * What the audit export costs the replica that runs it: `npx tsx bench/audit-export.ts`.
 *
 * One process, the production parts (createStore, createAudit, createAuditExporter) on a real
 * redis-server with `appendonly yes`, `appendfsync everysec` (or SQLite with
 * AUDIT_EXPORT_STORE=sqlite). AUDIT_EXPORT_N events (default 100,000) with a token release's data are
 * recorded over AUDIT_EXPORT_TENANTS tenants (default 10), then exporter passes run until every
 * event is in the export directory. Prints the process CPU per exported event, and how long the
 * passes held the event loop: the longest gap between two ticks of a 1 ms timer and the event-loop
 * delay's p99 and maximum (perf_hooks), and the garbage collections in that time. A release that
 * arrives while a pass holds the loop waits that long, so the longest stall is what the export adds
 * to a replica's p99 (docs/operations.md). AUDIT_EXPORT_TENANTS=100000 (one event each) shows the
 * cost per shard.
 */
import { createSecretKey, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import pino from 'pino';
import { createAudit } from '../src/links/audit/audit.js';
import { createAuditExporter } from '../src/links/audit/export/audit-exporter.js';
import { Metrics } from '../src/metrics.js';
import { createStore } from '../src/store/create-store.js';
import { startRedis } from '../test/support/redis-server.js';

const N = Number(process.env.AUDIT_EXPORT_N ?? 100_000);
const TENANTS = Number(process.env.AUDIT_EXPORT_TENANTS ?? 10);
const sqlite = process.env.AUDIT_EXPORT_STORE === 'sqlite';

const dir = mkdtempSync(join(tmpdir(), 'lv-bench-export-'));
const redis = sqlite ? null : await startRedis({ appendonly: true, appendfsync: 'everysec' });
const store = await createStore(
  redis
    ? { kind: 'redis', redisUrl: redis.url, clusterNodes: null, keyPrefix: 'bench' }
    : { kind: 'sqlite', sqlitePath: join(dir, 'lv.db') },
  { metrics: new Metrics(), auditMaxEvents: N * 2 },
);
const key = createSecretKey(randomBytes(32));
try {
  const audit = createAudit({ store, hmacKey: key, now: Date.now });
  for (let i = 0; i < N; i += 1000)
    await Promise.all(
      Array.from({ length: Math.min(1000, N - i) }, (_, j) =>
        audit.record(
          'token.released',
          {
            service_id: 'billing',
            grant_id: 'grt_0123456789abcdef',
            purpose: 'Invoices to the CRM',
            link_id: `lnk_${(i + j) % 500}`,
            tenant_id: `tenant-${(i + j) % TENANTS}`,
            user_id: 'user-1',
            provider_id: 'hubspot',
            scopes: ['crm.objects.contacts.read', 'crm.objects.deals.read'],
            token: 'hmac-sha256/128:Xy3_ab12:6hM0k0kSx9q0r0Vwq2n4PQ',
          },
          `req-${i + j}`,
        ),
      ),
    );

  const exporter = createAuditExporter({
    store,
    dir: join(dir, 'export'),
    key: async () => key,
    maxStoreEvents: 1000,
    log: pino({ level: 'silent' }),
    now: Date.now,
  });
  const delay = monitorEventLoopDelay({ resolution: 1 });
  let lastTick = performance.now();
  let longestGapMs = 0;
  const ticker = setInterval(() => {
    const t = performance.now();
    longestGapMs = Math.max(longestGapMs, t - lastTick);
    lastTick = t;
  }, 1);
  let gcCount = 0;
  let gcMs = 0;
  let gcLongestMs = 0;
  const gc = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      gcCount++;
      gcMs += entry.duration;
      gcLongestMs = Math.max(gcLongestMs, entry.duration);
    }
  });
  gc.observe({ entryTypes: ['gc'] });
  delay.enable();
  const cpu = process.cpuUsage();
  const started = performance.now();
  let exported = 0;
  let passes = 0;
  while (exported < N) {
    const pass = await exporter.runOnce();
    exported += pass.exported;
    passes++;
    if (pass.exported === 0) throw new Error(`a pass exported nothing at ${exported} of ${N}`);
  }
  const used = process.cpuUsage(cpu);
  const wallMs = performance.now() - started;
  clearInterval(ticker);
  delay.disable();
  gc.disconnect();
  await exporter.stop();
  console.log(
    `${sqlite ? 'sqlite' : 'redis (AOF everysec)'}: ${exported} events over ${TENANTS} tenants exported in ${passes} passes, ${wallMs.toFixed(0)} ms: ${((used.user + used.system) / exported).toFixed(1)} µs CPU per event (user ${(used.user / exported).toFixed(1)}, system ${(used.system / exported).toFixed(1)}); event loop held at most ${longestGapMs.toFixed(1)} ms (delay p99 ${(delay.percentile(99) / 1e6).toFixed(1)} ms, max ${(delay.max / 1e6).toFixed(1)} ms); ${gcCount} garbage collections, ${gcMs.toFixed(0)} ms, the longest ${gcLongestMs.toFixed(1)} ms`,
  );
} finally {
  await store.close();
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
}
