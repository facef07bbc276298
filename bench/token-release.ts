/**
 * Token release throughput at production settings: `npm run bench` (= tsx bench/token-release.ts).
 *
 * Starts a redis-server and node-oidc-provider on loopback, the real service (`bin/linkvault.js
 * serve`, test/support/service-process.ts) on the Redis store as a child process, connects one link
 * through a real authorization-code flow at the provider (real OAuth adapter; the connect HTTP
 * routes are not needed for this), creates a grant, then measures with autocannon
 * (BENCH_CONNECTIONS connections, BENCH_SECONDS seconds, default 50 and 10), in the same run:
 *   1. a node:http hello world (bench/node-hello-world.ts), as its own process
 *   2. an Express 5 hello world (bench/express-hello-world.ts), as its own process
 *   3. node:http answering the token route's exchange and nothing else (bench/node-token-shape.ts:
 *      the same request, an answer of the same shape, no authentication, store, audit, log or
 *      metrics), as its own process: its CPU per request is the floor under the service's
 *      (node:http and the kernel's loopback TCP for this exchange, on this machine, in this run)
 *   4. POST /v1/links/:id/token
 * and prints requests/s, p50/p99 latency, the token route beside both hello worlds, and
 * key-service calls per release (from the service's /metrics). Targets: token / Express hello
 * world ≥ 1.5, p99 ≤ 10 ms, 0 key-service calls per release.
 *
 * Production settings by default:
 *   - the service logs at info (LINKVAULT_LOG_LEVEL's default: one line per request) and its
 *     standard output goes to a file (the pipe is copied by this process, without parsing, as a
 *     container runtime's log driver would); the line count is printed at the end;
 *   - Redis persists: `appendonly yes`, `appendfsync everysec`, set with CONFIG SET before the link
 *     is stored, and checked with INFO persistence at the end.
 * To reproduce the old settings: BENCH_LOG_LEVEL=warn (no request line) and BENCH_REDIS_AOF=0
 * (no persistence).
 *
 * Then two series (BENCH_SCALE=0 / BENCH_CLUSTER=0 skip them):
 *   5. scale: BENCH_SCALE_LINKS links (default 100,000, over 1,000 tenants) and as many grants of
 *      the calling service (one per link) are added to the store, and the token route is measured
 *      again: the ratio to the 1-grant figure (target ≥ 0.9);
 *   6. cluster: a 3-master Redis Cluster, a service process on it, links of 30 tenants (a tenant
 *      grant each) released round-robin: requests/s, and the script calls each master served
 *      (every master must serve releases).
 * Each token run prints the service CPU per release (target ≤ 60 µs; over the measured part, the
 * warm-up left out, the window of the baselines' CPU per request), key-service calls per release
 * (target 0) and the Redis memory retained per release (INFO used_memory growth / releases: the
 * audit records, bounded by the audit retention). The Express hello world's own CPU per request is
 * measured in the same run and the service's CPU per release is printed beside it: an absolute
 * figure in µs moves with the machine as much as requests per second do.
 * BENCH_REDIS_STATS=1 also prints Redis's INFO commandstats after each token run (calls and time
 * per command: how many releases each commit script call carried, what the script's commands cost).
 * BENCH_RATE=N offers every run N requests/s in all (autocannon's overallRate) instead of as many
 * as it can take: the CPU per request below saturation, where fewer requests share each event-loop
 * turn, write and Redis call (at 6,000/s here a release cost ~1.5 × its CPU at saturation). Not the
 * targets' figures: those are at saturation, the default.
 * BENCH_EXPRESS_ONLY=1 measures the token route through Express instead of token-fast-path.ts: the
 * same service, asked with the link id percent-encoded (`lnk%5Fbench`), a request the fast path
 * leaves to Express untouched (test/http/token-fast-path.test.ts pins that) and Express answers
 * exactly alike once it has decoded the id.
 */
import { spawn } from 'node:child_process';
import {
  closeSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Redis } from 'ioredis';
import { startOidcServer } from '../test/support/oidc-server.js';
import { TEST_REDIRECT_URI } from '../test/support/provider-link.js';
import {
  startReleaseCluster,
  type ReleaseCluster,
  type StartReleaseClusterOptions,
} from '../test/support/release-cluster.js';
import { startRedisCluster } from '../test/support/redis-server.js';
import type { GrantRecord } from '../src/links/release/grants.js';
import type { LinkRecord } from '../src/links/link.js';

interface AutocannonResult {
  requests: { average: number; total: number };
  latency: { p50: number; p99: number; average: number; max: number };
  non2xx: number;
  errors: number;
  timeouts: number;
}
type Autocannon = (opts: Record<string, unknown>) => Promise<AutocannonResult>;

const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const TSX = import.meta.resolve('tsx');
const LOG_LEVEL = process.env.BENCH_LOG_LEVEL ?? 'info';
const REDIS_AOF = process.env.BENCH_REDIS_AOF !== '0';
const SCALE = process.env.BENCH_SCALE !== '0';
const SCALE_LINKS = Number(process.env.BENCH_SCALE_LINKS ?? 100_000);
const CLUSTER = process.env.BENCH_CLUSTER !== '0';
const REDIS_STATS = process.env.BENCH_REDIS_STATS === '1';
const RATE = Number(process.env.BENCH_RATE ?? 0);
const NODE_ARGS = (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
// BENCH_AUDIT_EXPORT=1: the service exports its audit trail to a directory and keeps
// BENCH_AUDIT_RETENTION (default 1,000) events in Redis (LINKVAULT_AUDIT_EXPORT_DIR /
// LINKVAULT_AUDIT_STORE_MAX_EVENTS); compare with a run without it for the exporter's cost.
const AUDIT_EXPORT = process.env.BENCH_AUDIT_EXPORT === '1';
const AUDIT_RETENTION = process.env.BENCH_AUDIT_RETENTION ?? '1000';
const auditExportDir = AUDIT_EXPORT ? mkdtempSync(join(tmpdir(), 'lv-bench-audit-')) : null;

/**
 * One measured autocannon run after a warm-up. With `pid` (a hello world's process), also the CPU
 * that process used per request during the measured part: the same run's reference for the
 * service's CPU per release, which moves with the machine as much as requests per second do.
 */
async function run(
  autocannon: Autocannon,
  name: string,
  opts: Record<string, unknown>,
  pid?: number,
): Promise<AutocannonResult & { cpuUsPerRequest: number | undefined }> {
  // A short warm-up (JIT, connection pools, the data-key cache) that is not measured.
  const load = { connections: CONNECTIONS, ...(RATE > 0 ? { overallRate: RATE } : {}) };
  await autocannon({ ...opts, ...load, duration: 2 });
  const cpuBefore = pid === undefined ? 0 : cpuSeconds(pid);
  const result = await autocannon({ ...opts, ...load, duration: SECONDS });
  const cpuUsPerRequest =
    pid === undefined
      ? undefined
      : ((cpuSeconds(pid) - cpuBefore) * 1e6) / Math.max(1, result.requests.total);
  console.log(
    `${name.padEnd(24)} ${result.requests.average.toFixed(0).padStart(7)} req/s   p50 ${String(result.latency.p50).padStart(3)} ms   p99 ${String(result.latency.p99).padStart(3)} ms   non-2xx ${result.non2xx}   errors ${result.errors}${cpuUsPerRequest === undefined || cpuUsPerRequest === 0 ? '' : `   CPU ${cpuUsPerRequest.toFixed(0)} µs per request`}`,
  );
  return { ...result, cpuUsPerRequest };
}

/** CPU seconds a process has used, all threads (0 where /proc is missing). */
function cpuSeconds(pid: number): number {
  let sum = 0;
  for (const seconds of cpuByThread(pid).values()) sum += seconds;
  return sum;
}

async function startHelloWorld(
  file: string,
): Promise<{ url: string; pid: number; stop: () => void }> {
  const child = spawn(process.execPath, ['--import', TSX, join(import.meta.dirname, file)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', (line) =>
      resolve((JSON.parse(line) as { port: number }).port),
    );
    child.once('exit', () => reject(new Error('hello world exited')));
  });
  return { url: `http://127.0.0.1:${port}/`, pid: child.pid!, stop: () => child.kill('SIGTERM') };
}

/** One field of Redis's INFO persistence. */
async function persistenceField(redis: Redis, field: string): Promise<string> {
  const info = await redis.info('persistence');
  return (
    /^(\S+):(.*)$/m
      .exec(info.split('\n').find((l) => l.startsWith(`${field}:`)) ?? '')?.[2]
      ?.trim() ?? '?'
  );
}

/** Turns on the append-only file (fsync every second) and resolves once its first rewrite is done. */
async function enableAof(redis: Redis): Promise<void> {
  await redis.config('SET', 'appendfsync', 'everysec');
  await redis.config('SET', 'appendonly', 'yes');
  // CONFIG SET appendonly yes starts a rewrite; the setting holds once it has finished.
  while (
    (await persistenceField(redis, 'aof_enabled')) !== '1' ||
    (await persistenceField(redis, 'aof_rewrite_in_progress')) !== '0' ||
    (await persistenceField(redis, 'aof_rewrite_scheduled')) !== '0'
  )
    await new Promise((resolve) => setTimeout(resolve, 50));
}

/** CPU seconds (user + system) a process has used, per thread name, from /proc (Linux; empty elsewhere). */
function cpuByThread(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(name, (out.get(name) ?? 0) + (Number(fields[11]) + Number(fields[12])) / 100);
    }
  } catch {
    // not Linux
  }
  return out;
}

function sumMetric(text: string, name: string, filter: RegExp = /.*/): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name) || !filter.test(line)) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

const autocannon = ((await import('autocannon' as string)) as { default: Autocannon }).default;
const client = {
  client_id: 'bench-client',
  client_secret: 'bench-secret-that-is-long-enough-000',
  redirect_uris: [TEST_REDIRECT_URI],
};
const oidc = await startOidcServer({ mode: 'oauth', clients: [client], rotateRefreshTokens: true });
const expressOnly = Boolean(process.env.BENCH_EXPRESS_ONLY);
const clusterOptions: StartReleaseClusterOptions = {
  replicas: 1,
  providerId: 'benchas',
  entry: oidc.catalogueEntry('benchas'),
  clientId: client.client_id,
  clientSecret: client.client_secret,
  completeLogin: (u, o) => oidc.completeLogin(u, o),
  // A short drain, so a profiled service (BENCH_NODE_ARGS=--cpu-prof) exits and writes its profile
  // before the harness's 5 s stop timeout.
  env: {
    LINKVAULT_LOG_LEVEL: LOG_LEVEL,
    LINKVAULT_SHUTDOWN_TIMEOUT_SECONDS: '1',
    ...(auditExportDir
      ? {
          LINKVAULT_AUDIT_EXPORT_DIR: auditExportDir,
          LINKVAULT_AUDIT_STORE_MAX_EVENTS: AUDIT_RETENTION,
        }
      : {}),
  },
  // startService's development warning, written once the server listens, at info and at warn.
  ready: (line) => typeof line.msg === 'string' && line.msg.startsWith('DEVELOPMENT SETUP'),
  // e.g. BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" to profile the service.
  nodeArgs: NODE_ARGS,
};
const cluster = await startReleaseCluster(clusterOptions);
const nodeHello = await startHelloWorld('node-hello-world.ts');
const hello = await startHelloWorld('express-hello-world.ts');
const tokenShape = await startHelloWorld('node-token-shape.ts');
const redis = new Redis(cluster.redis!.url, { lazyConnect: true });
await redis.connect();
const logDir = mkdtempSync(join(tmpdir(), 'lv-bench-log-'));
const logFile = join(logDir, 'service.log');

/** CPU seconds (user + system, main thread and children) a Redis has used (INFO cpu). */
async function redisCpu(r: Redis): Promise<number> {
  const info = await r.info('cpu');
  let sum = 0;
  for (const f of [
    'used_cpu_sys',
    'used_cpu_user',
    'used_cpu_sys_children',
    'used_cpu_user_children',
  ])
    sum += Number(new RegExp(`^${f}:([0-9.]+)`, 'm').exec(info)?.[1] ?? 0);
  return sum;
}

/** used_memory of a Redis (INFO memory). */
async function usedMemory(r: Redis): Promise<number> {
  return Number(/^used_memory:(\d+)/m.exec(await r.info('memory'))?.[1] ?? NaN);
}

interface TokenRun {
  readonly result: AutocannonResult;
  readonly released: number;
  readonly cpuUsPerRelease: number | null;
}

/**
 * One measured token run against `rc`'s service: requests/s, p50/p99, then service CPU, key-service
 * calls and Redis memory retained per release (`memory`: the Redis to read used_memory from).
 */
async function tokenRun(
  name: string,
  rc: ReleaseCluster,
  opts: Record<string, unknown>,
  memory: Redis | null,
): Promise<TokenRun> {
  const service = rc.replicas[0]!;
  const before = await (await fetch(`${service.url}/metrics`)).text();
  const cpuBefore = cpuByThread(service.pid);
  const memBefore = memory ? await usedMemory(memory) : NaN;
  const redisCpuBefore = memory ? await redisCpu(memory) : NaN;
  const rewritesBefore = memory ? await persistenceField(memory, 'aof_rewrites') : '';
  // With the service's pid: its CPU per answer over the measured part, as for the hello worlds.
  const result = await run(autocannon, name, opts, service.pid);
  const redisCpuAfter = memory ? await redisCpu(memory) : NaN;
  const afterText = await (await fetch(`${service.url}/metrics`)).text();
  const cpuAfter = cpuByThread(service.pid);
  const memAfter = memory ? await usedMemory(memory) : NaN;
  const released =
    sumMetric(afterText, 'linkvault_token_releases_total', /outcome="released"/) -
    sumMetric(before, 'linkvault_token_releases_total', /outcome="released"/);
  const keyCalls =
    sumMetric(afterText, 'linkvault_key_service_calls_total') -
    sumMetric(before, 'linkvault_key_service_calls_total');
  const exported =
    sumMetric(afterText, 'linkvault_audit_exported_total') -
    sumMetric(before, 'linkvault_audit_exported_total');
  const trimmed =
    sumMetric(afterText, 'linkvault_audit_trimmed_total') -
    sumMetric(before, 'linkvault_audit_trimmed_total');
  console.log(
    `  audit: ${exported} events exported and ${trimmed} trimmed during the run, for ${released} releases (${auditExportDir ? `export to a directory, retention ${AUDIT_RETENTION}` : 'no export directory: retention only'})`,
  );
  console.log(
    `  key-service calls per release: ${released ? (keyCalls / released).toFixed(4) : 'n/a'} (${keyCalls} calls / ${released} releases)   target 0`,
  );
  let cpuUsPerRelease: number | null = null;
  if (cpuAfter.size > 0) {
    const used = [...cpuAfter]
      .map(([n, t]) => [n, t - (cpuBefore.get(n) ?? 0)] as const)
      .filter(([, t]) => t > 0.05);
    const total = used.reduce((a, [, t]) => a + t, 0);
    // The figure: the measured part only (the same window as the hello worlds' CPU per request).
    // With the warm-up too, it also carries the JIT's first compilations.
    cpuUsPerRelease = result.cpuUsPerRequest ?? (total * 1e6) / Math.max(1, released);
    console.log(
      `  service CPU per release: ${cpuUsPerRelease.toFixed(0)} µs after the warm-up (target ≤ 60); with the warm-up: ${total.toFixed(1)} s = ${((total * 1e6) / Math.max(1, released)).toFixed(0)} µs per release  [${used.map(([n, t]) => `${n} ${t.toFixed(1)}s`).join(', ')}]`,
    );
  }
  if (memory) {
    console.log(
      `  Redis CPU per release: ${(((redisCpuAfter - redisCpuBefore) * 1e6) / Math.max(1, released)).toFixed(0)} µs (INFO cpu, incl. warm-up)`,
    );
    // A rewrite forks Redis and writes its whole data set, on the same cores as the run.
    const rewrites =
      Number(await persistenceField(memory, 'aof_rewrites')) - Number(rewritesBefore);
    if (rewrites > 0) console.log(`  AOF rewrites during the run: ${rewrites} (auto-aof-rewrite)`);
  }
  if (memory && REDIS_STATS) {
    // Redis's own per-command counts and times for this run (then reset for the next run).
    const stats = (await memory.info('commandstats'))
      .split('\n')
      .filter((l) => l.includes('calls='));
    for (const line of stats) console.log(`    ${line.trim()}`);
    await memory.config('RESETSTAT');
  }
  if (memory)
    console.log(
      `  Redis memory retained per release: ${((memAfter - memBefore) / Math.max(1, released)).toFixed(0)} bytes (used_memory ${memBefore} → ${memAfter}; the audit records, until the audit retention trims them)`,
    );
  return { result, released, cpuUsPerRelease };
}

/** Resolves once `file` has not grown for 300 ms. */
async function settledSize(file: string): Promise<void> {
  let last = -1;
  for (;;) {
    const size = statSync(file).size;
    if (size === last) return;
    last = size;
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
}

/** Adds `count` links over `count / 100` tenants and one link grant of `serviceId` for each, straight through the store. */
async function seedScale(rc: ReleaseCluster, serviceId: string, count: number): Promise<void> {
  const template = await rc.seedLink({ id: 'lnk_scale_template', tenantId: 'scale-template' });
  const startedAt = Date.now();
  const inFlight = 256;
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < count; i = next++) {
      const link: LinkRecord = {
        ...template,
        id: `lnk_scale_${i}`,
        tenantId: `scale-${i % Math.max(1, Math.floor(count / 100))}`,
        userId: `user-${i}`,
        version: 0,
      };
      await rc.store.saveLink(link, null);
      const grant: GrantRecord = {
        id: `grt_scale_${i}`,
        serviceId,
        tenantId: null,
        providerId: null,
        linkId: link.id,
        scopes: null,
        purpose: 'scale series',
        createdAtMs: Date.now(),
        expiresAtMs: null,
      };
      await rc.store.putGrant(grant);
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  console.log(
    `scale series: ${count} links over ${Math.floor(count / 100)} tenants and ${count} grants of ${serviceId} added in ${((Date.now() - startedAt) / 1000).toFixed(0)} s (the grant listing of ${serviceId} now holds ${(await rc.store.listGrants(serviceId)).length})`,
  );
}

/** Script calls (EVAL/EVALSHA) each node has served, by port. */
async function scriptCallsByPort(ports: readonly number[]): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  for (const port of ports) {
    const node = new Redis(port, '127.0.0.1', { lazyConnect: true });
    await node.connect();
    const stats = await node.info('commandstats');
    let calls = 0;
    for (const m of stats.matchAll(/^cmdstat_(?:evalsha|eval):calls=(\d+)/gm))
      calls += Number(m[1]);
    out.set(port, calls);
    node.disconnect();
  }
  return out;
}

try {
  const service = cluster.replicas[0]!;
  // From here on the service's standard output goes to the file, unparsed (the start-up lines
  // were read by startServiceProcess to see it ready), through a reader of its own (`cat`), as a
  // container runtime's log collector reads a service's output. Not through this process: it is
  // busy running autocannon, reads the pipe late, the pipe fills, and the service then holds its
  // lines in memory and retries the write (measured: the service's CPU per release ~1.9x, all of
  // it garbage collection and write retries, figures no deployment sees).
  const serviceOut = service.child.stdout!;
  serviceOut.removeAllListeners('data');
  serviceOut.pause();
  (serviceOut as unknown as { _handle?: { readStop?: () => number } })._handle?.readStop?.();
  const logFd = openSync(logFile, 'w');
  spawn('cat', [], { stdio: [serviceOut, logFd, 'inherit'] }); // ends when the service does
  closeSync(logFd);
  if (REDIS_AOF) await enableAof(redis);
  const link = await cluster.connectLink({ linkId: 'lnk_bench' });
  const grant = await cluster.createGrant({
    service_id: 'billing',
    link_id: link.id,
    purpose: 'benchmark',
  });
  if (grant.status !== 201) throw new Error(`grant: ${grant.status} ${JSON.stringify(grant.body)}`);
  const tokenUrl = `${service.url}/v1/links/${expressOnly ? link.id.replace('_', '%5F') : link.id}/token`;
  // One service JWT for the whole run, as a backend would reuse it (lifetime 300 s, the maximum).
  const authorization = cluster.services.bearer('billing-hs', { lifetimeSeconds: 300 });
  const tokenRequest = {
    url: tokenUrl,
    method: 'POST',
    headers: { authorization, 'content-type': 'application/json' },
    body: '{}',
  };
  const probe = await fetch(tokenUrl, tokenRequest);
  if (probe.status !== 200) throw new Error(`token route: ${probe.status} ${await probe.text()}`);

  console.log(
    `node ${process.version}, ${CONNECTIONS} connections${RATE > 0 ? `, ${RATE} requests/s offered (BENCH_RATE: not the product's figures)` : ''}, ${SECONDS} s each (after a 2 s warm-up), token route ${expressOnly ? 'through Express' : 'on the fast path'}`,
  );
  console.log(
    `service log level ${LOG_LEVEL} to a file; Redis ${REDIS_AOF ? 'appendonly yes, appendfsync everysec' : 'without persistence (BENCH_REDIS_AOF=0)'}`,
  );
  const nodeBase = await run(
    autocannon,
    'node:http hello world',
    { url: nodeHello.url },
    nodeHello.pid,
  );
  const base = await run(autocannon, 'express hello world', { url: hello.url }, hello.pid);
  const floor = await run(
    autocannon,
    'node:http, token exchange',
    { ...tokenRequest, url: `${tokenShape.url}v1/links/${link.id}/token` },
    tokenShape.pid,
  );
  const one = await tokenRun('token release (1 grant)', cluster, tokenRequest, redis);
  if (one.cpuUsPerRelease !== null && floor.cpuUsPerRequest)
    console.log(
      `service CPU per release = node:http and the kernel for the same exchange ${floor.cpuUsPerRequest.toFixed(0)} µs + linkvault's own work ${(one.cpuUsPerRelease - floor.cpuUsPerRequest).toFixed(0)} µs`,
    );
  if (one.cpuUsPerRelease !== null && base.cpuUsPerRequest)
    console.log(
      `service CPU per release / express hello world CPU per request: ${(one.cpuUsPerRelease / base.cpuUsPerRequest).toFixed(2)}   (${one.cpuUsPerRelease.toFixed(0)} / ${base.cpuUsPerRequest.toFixed(0)} µs; the ≤ 60 µs target was set when the express hello world ran at ~15,000 req/s)`,
    );
  const token = one.result;
  const ratio = token.requests.average / base.requests.average;
  const nodeRatio = token.requests.average / nodeBase.requests.average;
  console.log(
    `ratio token / express hello world: ${ratio.toFixed(2)}   target ≥ 1.5   (token / node:http hello world: ${nodeRatio.toFixed(2)}; express / node:http: ${(base.requests.average / nodeBase.requests.average).toFixed(2)})`,
  );
  console.log(
    `p99: token release ${token.latency.p99} ms (target ≤ 10 ms), express hello world ${base.latency.p99} ms, node:http hello world ${nodeBase.latency.p99} ms`,
  );

  if (SCALE) {
    await seedScale(cluster, 'billing', SCALE_LINKS);
    if (REDIS_AOF) {
      // The seeding grew the AOF far past its last rewrite: let Redis's own rewrite (a fork of the
      // whole data set) happen now rather than during the measured run.
      // (An error here means a rewrite is already running: the loop below waits for it.)
      await redis.bgrewriteaof().catch(() => undefined);
      while (
        (await persistenceField(redis, 'aof_rewrite_in_progress')) !== '0' ||
        (await persistenceField(redis, 'aof_rewrite_scheduled')) !== '0'
      )
        await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const scaled = await tokenRun(
      `token release (${SCALE_LINKS} grants)`,
      cluster,
      tokenRequest,
      redis,
    );
    console.log(
      `scale: ${SCALE_LINKS} grants and links / 1 grant: ${(scaled.result.requests.average / token.requests.average).toFixed(2)}   target ≥ 0.9   (token / express hello world at scale: ${(scaled.result.requests.average / base.requests.average).toFixed(2)})`,
    );
  }
  console.log(`provider refreshes during the run: ${oidc.tokenRequests().refresh_token ?? 0}`);
  console.log(
    `redis: aof_enabled ${await persistenceField(redis, 'aof_enabled')}, aof_last_write_status ${await persistenceField(redis, 'aof_last_write_status')}, appendfsync ${((await redis.config('GET', 'appendfsync')) as string[])[1]}`,
  );
  // The service's asynchronous log writes reach the file a moment after the last answer.
  await settledSize(logFile);
  const logLines = readFileSync(logFile, 'utf8').split('\n').filter(Boolean);
  console.log(
    `service log lines written during the runs: ${logLines.length} (${logLines.filter((l) => l.includes('"msg":"request"')).length} request lines)`,
  );

  if (CLUSTER) {
    const redisCluster = await startRedisCluster({ masters: 3 });
    const onCluster = await startReleaseCluster({
      ...clusterOptions,
      env: { ...clusterOptions.env, LINKVAULT_LOG_LEVEL: 'warn' },
      redisCluster,
    });
    try {
      const clusterAuth = onCluster.services.bearer('billing-hs', { lifetimeSeconds: 300 });
      const requests: Record<string, unknown>[] = [];
      for (let t = 0; t < 30; t++) {
        const tenantId = `cluster-tenant-${t}`;
        const l = await onCluster.seedLink({ id: `lnk_cluster_${t}`, tenantId });
        const g = await onCluster.createGrant({
          service_id: 'billing',
          tenant_id: tenantId,
          purpose: 'cluster benchmark',
        });
        if (g.status !== 201) throw new Error(`cluster grant: ${g.status}`);
        requests.push({
          method: 'POST',
          path: `/v1/links/${l.id}/token`,
          headers: { authorization: clusterAuth, 'content-type': 'application/json' },
          body: '{}',
        });
      }
      // One release per link first: the data-key cache is warm, so the run shows the steady state.
      for (const r of requests) {
        const res = await fetch(`${onCluster.replicas[0]!.url}${String(r.path)}`, {
          method: 'POST',
          headers: r.headers as Record<string, string>,
          body: '{}',
        });
        if (res.status !== 200) throw new Error(`cluster token route: ${res.status}`);
      }
      const ports = redisCluster.nodes.map((n) => n.port);
      const callsBefore = await scriptCallsByPort(ports);
      const clusterRun = await tokenRun(
        'token release, 3-master cluster, 30 tenants',
        onCluster,
        { url: onCluster.replicas[0]!.url, requests },
        null,
      );
      const callsAfter = await scriptCallsByPort(ports);
      console.log(
        `cluster: ${clusterRun.result.requests.average.toFixed(0)} req/s (service at log level warn; token / express hello world ${(clusterRun.result.requests.average / base.requests.average).toFixed(2)}); script calls per master: ${ports.map((p) => `${p}: ${callsAfter.get(p)! - callsBefore.get(p)!}`).join(', ')}; every master served releases: ${ports.every((p) => callsAfter.get(p)! - callsBefore.get(p)! > 0)}`,
      );
    } finally {
      await onCluster.stop();
      await redisCluster.stop();
    }
  }
} finally {
  redis.disconnect();
  nodeHello.stop();
  hello.stop();
  tokenShape.stop();
  await cluster.stop();
  await oidc.close();
  rmSync(logDir, { recursive: true, force: true });
}
