/**
 * Proxied GET throughput beside a direct call to the same API, in the same run:
 * `npm run bench:proxy` (= tsx bench/proxy.ts).
 *
 * Three processes besides autocannon's: a small provider API stand-in on loopback (this file with
 * `api`: node:http answering a ~100-byte JSON body with rate-limit headers, as a provider's GET
 * would), and linkvault (this file with `linkvault <api url>`: the whole stack as the tests build
 * it — a Redis store (a redis-server with appendonly, fsync every second), local key provider, node-oidc-provider as the link's authorization server,
 * one link connected through a real authorization-code flow, one proxy-only grant — listening on
 * loopback, logging at info to nowhere). Then autocannon (BENCH_CONNECTIONS connections,
 * BENCH_SECONDS seconds, default 50 and 10, after a 2 s warm-up each) measures:
 *   1. GET <api>/crm/v3/objects/contacts/1 directly
 *   2. GET <linkvault>/v1/links/:id/proxy/crm/v3/objects/contacts/1 (service JWT, rule match,
 *      the audited token use, the upstream call on a kept-alive connection, the relay)
 *   3. POST <linkvault>/v1/links/:id/token on the same link, for context (the proxy's floor: every
 *      proxied call is a token release plus the upstream call and a second audit record)
 * and prints requests/s, p50/p99 and the ratio proxied / direct (target ≥ 0.7).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

interface AutocannonResult {
  requests: { average: number; total: number };
  latency: { p50: number; p99: number };
  non2xx: number;
  errors: number;
}
type Autocannon = (opts: Record<string, unknown>) => Promise<AutocannonResult>;

const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const TSX = import.meta.resolve('tsx');
const BODY = JSON.stringify({
  id: '1',
  properties: { email: 'ada@example.com', firstname: 'Ada', lastname: 'Lovelace' },
  archived: false,
});

/** The provider API stand-in: prints `{"port": n}` once listening. */
async function serveApi(): Promise<void> {
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(BODY),
        'x-ratelimit-remaining': '99',
      });
      res.end(BODY);
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, 'localhost', () => resolve()));
  console.log(JSON.stringify({ port: (server.address() as AddressInfo).port }));
}

/** linkvault over the test harness: prints the URL to load once the link and grant exist. */
async function serveLinkvault(apiBaseUrl: string): Promise<void> {
  const { createLogger } = await import('../src/log.js');
  const { startProxyHarness } = await import('../test/links/proxy/proxy-harness.js');
  const { startRedis } = await import('../test/support/redis-server.js');
  // Production's store and persistence, as bench/token-release.ts: Redis, appendonly, fsync every second.
  const redis = await startRedis({ appendonly: true, appendfsync: 'everysec' });
  process.once('SIGTERM', () => void redis.stop().finally(() => process.exit(0)));
  const h = await startProxyHarness({
    apiBaseUrl,
    redisUrl: redis.url,
    log: createLogger({ level: 'info', destination: { write: () => undefined } }),
  });
  const link = await h.connect('lnk_bench_proxy');
  await h.stack.addGrant({
    serviceId: 'worker',
    linkId: link.id,
    tokenRelease: false,
    proxy: { allow: [{ method: 'GET', path: '/crm/v3/objects/contacts/*' }] },
  });
  // For context: the token route on the same link, stack and store.
  await h.stack.addGrant({ serviceId: 'tokens-svc', linkId: link.id });
  console.log(
    JSON.stringify({
      url: `${h.stack.publicUrl}/v1/links/${link.id}/proxy/crm/v3/objects/contacts/1`,
      authorization: h.services.bearer('worker', { lifetimeSeconds: 300 }),
      tokenUrl: `${h.stack.publicUrl}/v1/links/${link.id}/token`,
      tokenAuthorization: h.services.bearer('tokens-svc', { lifetimeSeconds: 300 }),
    }),
  );
}

function startChild(
  args: string[],
): Promise<{ line: Record<string, string>; child: ChildProcess }> {
  const child = spawn(
    process.execPath,
    ['--import', TSX, join(import.meta.dirname, 'proxy.ts'), ...args],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', (line) =>
      resolve({ line: JSON.parse(line) as Record<string, string>, child }),
    );
    child.once('exit', (code) => reject(new Error(`${args[0]} exited with ${code}`)));
  });
}

async function run(
  autocannon: Autocannon,
  name: string,
  opts: Record<string, unknown>,
): Promise<AutocannonResult> {
  await autocannon({ ...opts, connections: CONNECTIONS, duration: 2 });
  const result = await autocannon({ ...opts, connections: CONNECTIONS, duration: SECONDS });
  console.log(
    `${name.padEnd(16)} ${result.requests.average.toFixed(0).padStart(7)} req/s   p50 ${String(result.latency.p50).padStart(3)} ms   p99 ${String(result.latency.p99).padStart(3)} ms   non-2xx ${result.non2xx}   errors ${result.errors}`,
  );
  if (result.non2xx > 0 || result.errors > 0) throw new Error(`${name}: failed requests`);
  return result;
}

async function main(): Promise<void> {
  const autocannon = ((await import('autocannon' as string)) as { default: Autocannon }).default;
  const children: ChildProcess[] = [];
  try {
    const api = await startChild(['api']);
    children.push(api.child);
    const apiUrl = `http://localhost:${api.line.port}`;
    const lv = await startChild(['linkvault', apiUrl]);
    children.push(lv.child);
    console.log(
      `node ${process.version}, ${CONNECTIONS} connections, ${SECONDS} s each (after a 2 s warm-up)`,
    );
    const direct = await run(autocannon, 'direct GET', {
      url: `${apiUrl}/crm/v3/objects/contacts/1`,
    });
    const proxied = await run(autocannon, 'proxied GET', {
      url: lv.line.url,
      headers: { authorization: lv.line.authorization },
    });
    const token = await run(autocannon, 'token release', {
      url: lv.line.tokenUrl,
      method: 'POST',
      headers: { authorization: lv.line.tokenAuthorization, 'content-type': 'application/json' },
      body: '{}',
    });
    console.log(
      `ratio proxied / direct: ${(proxied.requests.average / direct.requests.average).toFixed(2)}   target ≥ 0.7   (proxied / token release on the same stack: ${(proxied.requests.average / token.requests.average).toFixed(2)})`,
    );
  } finally {
    for (const child of children) child.kill('SIGTERM');
  }
}

const mode = process.argv[2];
if (mode === 'api') await serveApi();
else if (mode === 'linkvault') await serveLinkvault(process.argv[3]!);
else await main();
