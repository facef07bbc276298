/**
 * Token release throughput: `npm run bench` (= tsx bench/token-release.ts).
 *
 * Starts a redis-server and node-oidc-provider on loopback, the real service (`bin/linkvault.js
 * serve`, test/support/service-process.ts) on the Redis store as a child process, connects one link
 * through a real authorization-code flow at the provider (real OAuth adapter; the connect HTTP
 * routes are not needed for this), creates a grant, then measures with autocannon
 * (BENCH_CONNECTIONS connections, BENCH_SECONDS seconds, default 50 and 10):
 *   1. an Express 5 hello world (bench/express-hello-world.ts), as its own process
 *   2. POST /v1/links/:id/token
 * and prints requests/s, p50/p99 latency, the ratio, and key-service calls per release (from the
 * service's /metrics). Targets: ratio ≥ 0.6, p99 < 25 ms, 0 key-service calls per release.
 * BENCH_EXPRESS_ONLY=1 measures the token route through Express instead of token-fast-path.ts: the
 * same service, asked with the link id percent-encoded (`lnk%5Fbench`), a request the fast path
 * leaves to Express untouched (test/http/token-fast-path.test.ts pins that) and Express answers
 * exactly alike once it has decoded the id.
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
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

async function run(
  autocannon: Autocannon,
  name: string,
  opts: Record<string, unknown>,
): Promise<AutocannonResult> {
  // A short warm-up (JIT, connection pools, the data-key cache) that is not measured.
  await autocannon({ ...opts, connections: CONNECTIONS, duration: 2 });
  const result = await autocannon({ ...opts, connections: CONNECTIONS, duration: SECONDS });
  console.log(
    `${name.padEnd(22)} ${result.requests.average.toFixed(0).padStart(7)} req/s   p50 ${String(result.latency.p50).padStart(3)} ms   p99 ${String(result.latency.p99).padStart(3)} ms   non-2xx ${result.non2xx}   errors ${result.errors}`,
  );
  return result;
}

async function startHelloWorld(): Promise<{ url: string; stop: () => void }> {
  const child = spawn(
    process.execPath,
    ['--import', TSX, join(import.meta.dirname, 'express-hello-world.ts')],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const port = await new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', (line) =>
      resolve((JSON.parse(line) as { port: number }).port),
    );
    child.once('exit', () => reject(new Error('hello world exited')));
  });
  return { url: `http://127.0.0.1:${port}/`, stop: () => child.kill('SIGTERM') };
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
  // No request log line, as before: logging costs the service CPU and the pipe would be read by this
  // process, which also runs autocannon. At warn the info line "listening on port N" is not written;
  // startService's development warning is, once the server listens.
  env: { LINKVAULT_LOG_LEVEL: 'warn' },
  ready: (line) => typeof line.msg === 'string' && line.msg.startsWith('DEVELOPMENT SETUP'),
  // e.g. BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" to profile the service.
  nodeArgs: (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean),
});
const hello = await startHelloWorld();
try {
  const service = cluster.replicas[0]!;
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
  console.log(`ratio (token / hello world): ${ratio.toFixed(2)}   target ≥ 0.6`);
  console.log(
    `token release p50 ${token.latency.p50} ms, p99 ${token.latency.p99} ms   target p99 < 25 ms`,
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
} finally {
  hello.stop();
  await cluster.stop();
  await oidc.close();
}
