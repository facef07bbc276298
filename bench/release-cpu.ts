/**
 * Service CPU of the token release itself, without HTTP or logging: `tsx bench/release-cpu.ts`.
 * One process, the production wiring (test/support/stack.ts over buildFeatures) on a real
 * redis-server (or SQLite with RELEASE_CPU_STORE=sqlite), one link and one grant, RELEASE_CPU_N
 * releases (default 50,000) RELEASE_CPU_CONCURRENCY at a time (default 50) through
 * TokenRelease.release; prints process CPU (user + system) per release. RELEASE_CPU_GRANTS=100000
 * first adds that many links (over 1,000 tenants) and as many grants of the calling service. `--cpu-prof` on the node
 * command line profiles exactly this (node --cpu-prof --import tsx bench/release-cpu.ts).
 * RELEASE_CPU_HELD=0 measures a release that reads every time (as the first release of a link by a
 * service, or one more than 10 s after the previous, does) instead of deciding on the held read.
 */
import { startRedis } from '../test/support/redis-server.js';
import { createTokenRelease } from '../src/links/release/token-release.js';
import { startStack } from '../test/support/stack.js';

const N = Number(process.env.RELEASE_CPU_N ?? 50_000);
const CONCURRENCY = Number(process.env.RELEASE_CPU_CONCURRENCY ?? 50);
const sqlite = process.env.RELEASE_CPU_STORE === 'sqlite';
const GRANTS = Number(process.env.RELEASE_CPU_GRANTS ?? 0);
const HELD = process.env.RELEASE_CPU_HELD !== '0';

const redis = sqlite ? null : await startRedis();
const stack = await startStack({
  ...(redis ? { redisUrl: redis.url } : {}),
  env: { LINKVAULT_LOG_LEVEL: 'warn' },
});
try {
  const link = await stack.seedLink({ tenantId: 'tenant-cpu' });
  await stack.addGrant({ serviceId: 'billing', linkId: link.id });
  let next = 0;
  await Promise.all(
    Array.from({ length: 256 }, async () => {
      for (let i = next++; i < GRANTS; i = next++) {
        const other = { ...link, id: `lnk_cpu_${i}`, tenantId: `cpu-${i % 1000}`, version: 0 };
        await stack.store.saveLink(other, null);
        await stack.store.putGrant({
          id: `grt_cpu_${i}`,
          serviceId: 'billing',
          tenantId: null,
          providerId: null,
          linkId: other.id,
          scopes: null,
          purpose: 'cpu',
          createdAtMs: Date.now(),
          expiresAtMs: null,
        });
      }
    }),
  );
  const request = { service: { id: 'billing', tenants: null }, linkId: link.id, requestId: 'cpu' };
  const release = HELD
    ? stack.release
    : createTokenRelease({
        store: stack.store,
        vault: stack.vault,
        coordinator: stack.coordinator,
        audit: stack.audit,
        metrics: stack.metrics,
        log: stack.log,
        now: Date.now,
        holdReads: false,
      });
  const round = async (count: number): Promise<void> => {
    let next = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next++ < count) await release.release(request);
      }),
    );
  };
  await round(Math.min(5000, N)); // warm-up: JIT, the data-key cache, the tenant cache
  const cpu = process.cpuUsage();
  const started = process.hrtime.bigint();
  await round(N);
  const used = process.cpuUsage(cpu);
  const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
  console.log(
    `${sqlite ? 'sqlite' : 'redis'}, ${GRANTS + 1} grants, ${HELD ? 'held reads' : 'a read each'}: ${N} releases, ${CONCURRENCY} at a time: ${((used.user + used.system) / N).toFixed(1)} µs CPU per release (user ${(used.user / N).toFixed(1)}, system ${(used.system / N).toFixed(1)}), ${((N / wallMs) * 1000).toFixed(0)} releases/s`,
  );
} finally {
  await stack.close();
  await redis?.stop();
}
