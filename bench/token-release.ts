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
 *   3. POST /v1/links/:id/token
 * and prints requests/s, p50/p99 latency, the token route beside both hello worlds, and
 * key-service calls per release (from the service's /metrics). Targets: token / Express hello
 * world ≥ 0.6, p99 < 25 ms, 0 key-service calls per release.
 *
 * Production settings by default:
 *   - the service logs at info (LINKVAULT_LOG_LEVEL's default: one line per request) and its
 *     standard output goes to a file (the pipe is copied by this process, without parsing, as a
 *     container runtime's log driver would); the line count is printed at the end;
 *   - Redis persists: `appendonly yes`, `appendfsync everysec`, set with CONFIG SET before the link
 *     is stored, and checked with INFO persistence at the end.
 * To reproduce the old settings: BENCH_LOG_LEVEL=warn (no request line) and BENCH_REDIS_AOF=0
 * (no persistence).
 * BENCH_EXPRESS_ONLY=1 measures the token route through Express instead of token-fast-path.ts: the
 * same service, asked with the link id percent-encoded (`lnk%5Fbench`), a request the fast path
 * leaves to Express untouched (test/http/token-fast-path.test.ts pins that) and Express answers
 * exactly alike once it has decoded the id.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Redis } from 'ioredis';
import { startOidcServer } from '../test/support/oidc-server.js';
import { TEST_REDIRECT_URI } from '../test/support/provider-link.js';
import { startReleaseCluster } from '../test/support/release-cluster.js';

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

async function run(
  autocannon: Autocannon,
  name: string,
  opts: Record<string, unknown>,
): Promise<AutocannonResult> {
  // A short warm-up (JIT, connection pools, the data-key cache) that is not measured.
  await autocannon({ ...opts, connections: CONNECTIONS, duration: 2 });
  const result = await autocannon({ ...opts, connections: CONNECTIONS, duration: SECONDS });
  console.log(
    `${name.padEnd(24)} ${result.requests.average.toFixed(0).padStart(7)} req/s   p50 ${String(result.latency.p50).padStart(3)} ms   p99 ${String(result.latency.p99).padStart(3)} ms   non-2xx ${result.non2xx}   errors ${result.errors}`,
  );
  return result;
}

async function startHelloWorld(file: string): Promise<{ url: string; stop: () => void }> {
  const child = spawn(process.execPath, ['--import', TSX, join(import.meta.dirname, file)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', (line) =>
      resolve((JSON.parse(line) as { port: number }).port),
    );
    child.once('exit', () => reject(new Error('hello world exited')));
  });
  return { url: `http://127.0.0.1:${port}/`, stop: () => child.kill('SIGTERM') };
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
const cluster = await startReleaseCluster({
  replicas: 1,
  providerId: 'benchas',
  entry: oidc.catalogueEntry('benchas'),
  clientId: client.client_id,
  clientSecret: client.client_secret,
  completeLogin: (u, o) => oidc.completeLogin(u, o),
  env: { LINKVAULT_LOG_LEVEL: LOG_LEVEL },
  // startService's development warning, written once the server listens, at info and at warn.
  ready: (line) => typeof line.msg === 'string' && line.msg.startsWith('DEVELOPMENT SETUP'),
  // e.g. BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" to profile the service.
  nodeArgs: (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean),
});
const nodeHello = await startHelloWorld('node-hello-world.ts');
const hello = await startHelloWorld('express-hello-world.ts');
const redis = new Redis(cluster.redis.url, { lazyConnect: true });
await redis.connect();
const logDir = mkdtempSync(join(tmpdir(), 'lv-bench-log-'));
const logFile = join(logDir, 'service.log');
try {
  const service = cluster.replicas[0]!;
  // From here on the service's standard output goes to the file, unparsed (the start-up lines
  // were read by startServiceProcess to see it ready).
  const logStream = createWriteStream(logFile);
  service.child.stdout!.removeAllListeners('data');
  service.child.stdout!.pipe(logStream);
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
  const probe = await fetch(tokenUrl, {
    method: 'POST',
    headers: { authorization, 'content-type': 'application/json' },
    body: '{}',
  });
  if (probe.status !== 200) throw new Error(`token route: ${probe.status} ${await probe.text()}`);

  console.log(
    `node ${process.version}, ${CONNECTIONS} connections, ${SECONDS} s each (after a 2 s warm-up), token route ${expressOnly ? 'through Express' : 'on the fast path'}`,
  );
  console.log(
    `service log level ${LOG_LEVEL} to a file; Redis ${REDIS_AOF ? 'appendonly yes, appendfsync everysec' : 'without persistence (BENCH_REDIS_AOF=0)'}`,
  );
  const nodeBase = await run(autocannon, 'node:http hello world', { url: nodeHello.url });
  const base = await run(autocannon, 'express hello world', { url: hello.url });
  const before = await (await fetch(`${service.url}/metrics`)).text();
  const cpuBefore = cpuByThread(service.pid);
  const token = await run(autocannon, 'token release', {
    url: tokenUrl,
    method: 'POST',
    headers: { authorization, 'content-type': 'application/json' },
    body: '{}',
  });
  const afterText = await (await fetch(`${service.url}/metrics`)).text();
  const cpuAfter = cpuByThread(service.pid);
  const released =
    sumMetric(afterText, 'linkvault_token_releases_total', /outcome="released"/) -
    sumMetric(before, 'linkvault_token_releases_total', /outcome="released"/);
  const keyCalls =
    sumMetric(afterText, 'linkvault_key_service_calls_total') -
    sumMetric(before, 'linkvault_key_service_calls_total');
  const ratio = token.requests.average / base.requests.average;
  const nodeRatio = token.requests.average / nodeBase.requests.average;
  console.log(
    `ratio token / express hello world: ${ratio.toFixed(2)}   target ≥ 0.6   (token / node:http hello world: ${nodeRatio.toFixed(2)}; express / node:http: ${(base.requests.average / nodeBase.requests.average).toFixed(2)})`,
  );
  console.log(
    `p99: token release ${token.latency.p99} ms (target < 25 ms), express hello world ${base.latency.p99} ms, node:http hello world ${nodeBase.latency.p99} ms`,
  );
  console.log(
    `key-service calls per release: ${released ? (keyCalls / released).toFixed(4) : 'n/a'} (${keyCalls} calls / ${released} releases)   target 0`,
  );
  if (cpuAfter.size > 0) {
    const used = [...cpuAfter]
      .map(([name, t]) => [name, t - (cpuBefore.get(name) ?? 0)] as const)
      .filter(([, t]) => t > 0.05);
    const total = used.reduce((a, [, t]) => a + t, 0);
    console.log(
      `service CPU during the token run (incl. warm-up): ${total.toFixed(1)} s = ${((total * 1e6) / Math.max(1, released)).toFixed(0)} µs per release  [${used.map(([n, t]) => `${n} ${t.toFixed(1)}s`).join(', ')}]`,
    );
  }
  console.log(`provider refreshes during the run: ${oidc.tokenRequests().refresh_token ?? 0}`);
  console.log(
    `redis: aof_enabled ${await persistenceField(redis, 'aof_enabled')}, aof_last_write_status ${await persistenceField(redis, 'aof_last_write_status')}, appendfsync ${((await redis.config('GET', 'appendfsync')) as string[])[1]}`,
  );
  service.child.stdout!.unpipe(logStream);
  logStream.end();
  await once(logStream, 'close');
  const logLines = readFileSync(logFile, 'utf8').split('\n').filter(Boolean);
  console.log(
    `service log lines written during the runs: ${logLines.length} (${logLines.filter((l) => l.includes('"msg":"request"')).length} request lines)`,
  );
} finally {
  redis.disconnect();
  nodeHello.stop();
  hello.stop();
  await cluster.stop();
  await oidc.close();
  rmSync(logDir, { recursive: true, force: true });
}
