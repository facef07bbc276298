/**
 * Proxied GET throughput beside a direct call to the same API and beside a bare Node proxy, in the
 * same run: `npm run bench:proxy` (= tsx bench/proxy.ts).
 *
 * Four processes besides autocannon's:
 *   - `api`: a small provider API stand-in on loopback (node:http answering a ~100-byte JSON body
 *     with rate-limit headers, as a provider's GET would). A request whose query is `?slow=1`
 *     is answered after BENCH_API_LATENCY_MS (default 20 ms): real provider APIs over the internet
 *     answer in 50-300 ms, so 20 ms is conservative. The proxy forwards the query unchanged, so
 *     direct and proxied calls see the same latency.
 *   - `bare`: a bare pass-through proxy (node:http server forwarding every request to the API on a
 *     keep-alive agent and piping the answer back; no authentication, audit, store or log): the
 *     physical ceiling of any Node proxy on this machine.
 *   - `linkvault`: the whole stack as the tests build it (test/links/proxy/proxy-harness.ts) — a
 *     Redis store (a redis-server with appendonly, fsync every second), local key provider,
 *     node-oidc-provider as the link's authorization server, one link connected through a real
 *     authorization-code flow, one proxy-only grant — listening on loopback, logging at info (one
 *     line per request) to a file, asynchronously, as production writes its standard output.
 * Then autocannon (BENCH_CONNECTIONS connections, BENCH_SECONDS seconds, default 50 and 10, after a
 * 2 s warm-up each) measures, with a zero-latency API:
 *   1. direct GET <api>/crm/v3/objects/contacts/1
 *   2. the same GET through the bare proxy
 *   3. GET <linkvault>/v1/links/:id/proxy/crm/v3/objects/contacts/1 (service JWT, rule match, the
 *      audited token use, the upstream call on a kept-alive connection, the relay, the completion
 *      record)
 *   4. POST <linkvault>/v1/links/:id/token on the same link, for context (every proxied call is a
 *      token release plus the upstream call and a second audit record)
 * and with the API answering after BENCH_API_LATENCY_MS (BENCH_LATENCY=0 skips this series):
 *   5. direct, 6. bare proxy, 7. linkvault proxied.
 * It prints requests/s and p50/p99 of each, every ratio, and CPU per call (user + system, from
 * /proc/<pid>/stat over the measured seconds, divided by the answers counted) of linkvault and of
 * the bare proxy. The ≥ 0.7 × direct target (issue 16) is read on the provider-latency series: with
 * a zero-latency API on a few shared cores the bare proxy itself stays far below 0.7 × direct (the
 * ratio then measures a Node HTTP hop against an API that does nothing), so at zero latency read
 * proxied / bare proxy and linkvault's CPU per call.
 * linkvault runs the audit retention as the service does (BENCH_AUDIT_RETENTION events, default
 * 1,000); at the end the log's line count is printed, with every line that is not a 200 request
 * line counted by level, message and status (BENCH_KEEP_LOG=1 keeps the file).
 * BENCH_NODE_ARGS passes node flags to the linkvault process, e.g.
 * `BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof"`. bench/proxy-cpu.ts measures the CPU of
 * a proxied call without HTTP in front, beside a token release.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { Agent, createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

interface AutocannonResult {
  requests: { average: number; total: number };
  latency: { p50: number; p99: number };
  non2xx: number;
  errors: number;
  statusCodeStats?: Record<string, { count: number }>;
}
type Autocannon = (opts: Record<string, unknown>) => Promise<AutocannonResult>;

const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const LATENCY_MS = Number(process.env.BENCH_API_LATENCY_MS ?? 20);
const LATENCY_SERIES = process.env.BENCH_LATENCY !== '0';
const AUDIT_RETENTION = process.env.BENCH_AUDIT_RETENTION ?? '1000';
const NODE_ARGS = (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
const TSX = import.meta.resolve('tsx');
const API_PATH = '/crm/v3/objects/contacts/1';
const BODY = JSON.stringify({
  id: '1',
  properties: { email: 'ada@example.com', firstname: 'Ada', lastname: 'Lovelace' },
  archived: false,
});

/** The provider API stand-in: prints `{"port": n}` once listening. */
async function serveApi(latencyMs: number): Promise<void> {
  const headers = {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(BODY),
    'x-ratelimit-remaining': '99',
  };
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const answer = () => {
        res.writeHead(200, headers);
        res.end(BODY);
      };
      if (req.url?.endsWith('?slow=1')) setTimeout(answer, latencyMs);
      else answer();
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, 'localhost', () => resolve()));
  console.log(JSON.stringify({ port: (server.address() as AddressInfo).port }));
}

/**
 * The bare pass-through proxy: every request forwarded to the API on one keep-alive agent, the
 * answer's status, headers and body piped back. What any Node proxy pays for the extra hop.
 */
async function serveBareProxy(apiBaseUrl: string): Promise<void> {
  const api = new URL(apiBaseUrl);
  const agent = new Agent({ keepAlive: true });
  const server = createServer((req, res) => {
    const upstream = request(
      {
        hostname: api.hostname,
        port: api.port,
        method: req.method,
        path: req.url,
        headers: { accept: req.headers.accept ?? '*/*' },
        agent,
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  console.log(JSON.stringify({ port: (server.address() as AddressInfo).port }));
}

/** linkvault over the test harness: prints the URLs to load once the link and grants exist. */
async function serveLinkvault(apiBaseUrl: string, logFile: string): Promise<void> {
  const { default: pino } = await import('pino');
  const { createLogger } = await import('../src/log.js');
  const { startProxyHarness } = await import('../test/links/proxy/proxy-harness.js');
  const { startRedis } = await import('../test/support/redis-server.js');
  // Production's store and persistence, as bench/token-release.ts: Redis, appendonly, fsync every second.
  const redis = await startRedis({ appendonly: true, appendfsync: 'everysec' });
  // Production's log: level info, one line per request, written asynchronously (sync: false).
  const destination = pino.destination({ dest: logFile, sync: false });
  // On SIGTERM, as the service does: linkvault closes first (its answered calls' proxy.completed
  // records reach the store), then the log is flushed and Redis stopped.
  let closeLinkvault: () => Promise<void> = () => Promise.resolve();
  process.once('SIGTERM', () => {
    void closeLinkvault()
      .catch(() => undefined)
      .then(() => {
        destination.flushSync();
        return redis.stop();
      })
      .finally(() => process.exit(0));
  });
  const h = await startProxyHarness({
    apiBaseUrl,
    redisUrl: redis.url,
    log: createLogger({ level: 'info', destination }),
    // As the service runs: the audit exporter, here without an export directory, keeps the
    // retention (LINKVAULT_AUDIT_STORE_MAX_EVENTS), so two records per call never fill the tenant's
    // shard. BENCH_AUDIT_RETENTION events (default 1,000, as bench/token-release.ts with
    // BENCH_AUDIT_EXPORT=1): each retention pass reads the newest `retention` events back.
    startAuditExporter: true,
    env: { LINKVAULT_AUDIT_STORE_MAX_EVENTS: AUDIT_RETENTION },
  });
  closeLinkvault = () => h.close();
  const link = await h.connect('lnk_bench_proxy');
  await h.stack.addGrant({
    serviceId: 'worker',
    linkId: link.id,
    tokenRelease: false,
    proxy: { allow: [{ method: 'GET', path: '/crm/v3/objects/contacts/*' }] },
  });
  // For context: the token route on the same link, stack and store.
  await h.stack.addGrant({ serviceId: 'tokens-svc', linkId: link.id });
  // The services' HS256 keys, so that each run signs a fresh JWT (their lifetime is at most 300 s).
  const key = (id: string) => ({
    ...h.services.keys[id]!,
    signingKey: undefined,
    key: h.services.keys[id]!.signingKey.toString('base64'),
  });
  console.log(
    JSON.stringify({
      url: `${h.stack.publicUrl}/v1/links/${link.id}/proxy${API_PATH}`,
      tokenUrl: `${h.stack.publicUrl}/v1/links/${link.id}/token`,
      audience: h.services.audience,
      worker: JSON.stringify(key('worker')),
      tokens: JSON.stringify(key('tokens-svc')),
    }),
  );
}

/** `Bearer <a service JWT>` signed now with the key the linkvault process printed, valid 300 s. */
async function bearer(printed: string, audience: string): Promise<string> {
  const { signServiceJwt } = await import('../test/support/service-jwt.js');
  const k = JSON.parse(printed) as { kid: string; iss: string; key: string };
  const jwt = signServiceJwt({
    kid: k.kid,
    alg: 'HS256',
    key: Buffer.from(k.key, 'base64'),
    iss: k.iss,
    aud: audience,
    lifetimeSeconds: 300,
  });
  return `Bearer ${jwt}`;
}

interface Child {
  readonly line: Record<string, string>;
  readonly child: ChildProcess;
}

function startChild(args: string[], nodeArgs: readonly string[] = []): Promise<Child> {
  const child = spawn(
    process.execPath,
    [...nodeArgs, '--import', TSX, join(import.meta.dirname, 'proxy.ts'), ...args],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', (line) =>
      resolve({ line: JSON.parse(line) as Record<string, string>, child }),
    );
    child.once('exit', (code) => reject(new Error(`${args[0]} exited with ${code}`)));
  });
}

/** CPU seconds (user + system) a process has used, its main thread and the others, from /proc (Linux; empty elsewhere). */
function cpuByThread(pid: number | undefined): Map<string, number> {
  const out = new Map<string, number>();
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      // Node names its threads alike ("node"): the main thread is the one whose id is the pid.
      const name = Number(tid) === pid ? 'main' : 'other threads';
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(name, (out.get(name) ?? 0) + (Number(fields[11]) + Number(fields[12])) / 100);
    }
  } catch {
    // not Linux, or the thread ended while being read
  }
  return out;
}

interface Measured {
  readonly result: AutocannonResult;
  /** CPU per answer of each watched process over the measured seconds (warm-up excluded), µs. */
  readonly cpuUs: Record<string, number>;
}

async function run(
  autocannon: Autocannon,
  name: string,
  opts: Record<string, unknown>,
  watch: Record<string, ChildProcess> = {},
): Promise<Measured> {
  await autocannon({ ...opts, connections: CONNECTIONS, duration: 2 });
  const before = Object.entries(watch).map(([n, c]) => [n, cpuByThread(c.pid)] as const);
  const result = await autocannon({ ...opts, connections: CONNECTIONS, duration: SECONDS });
  const cpuUs: Record<string, number> = {};
  const parts: string[] = [];
  for (const [n, at] of before) {
    const calls = Math.max(1, result.requests.total);
    const used = [...cpuByThread(watch[n]!.pid)].map(
      ([thread, s]) => [thread, ((s - (at.get(thread) ?? 0)) * 1e6) / calls] as const,
    );
    cpuUs[n] = used.reduce((sum, [, us]) => sum + us, 0);
    const threads = used
      .filter(([, us]) => us >= 1)
      .map(([thread, us]) => `${thread} ${us.toFixed(0)}`)
      .join(', ');
    parts.push(`   ${n} CPU ${cpuUs[n].toFixed(0)} µs/call [${threads}]`);
  }
  console.log(
    `${name.padEnd(28)} ${result.requests.average.toFixed(0).padStart(7)} req/s   p50 ${String(result.latency.p50).padStart(3)} ms   p99 ${String(result.latency.p99).padStart(3)} ms   non-2xx ${result.non2xx}   errors ${result.errors}${parts.join('')}`,
  );
  if (result.non2xx > 0 || result.errors > 0)
    throw new Error(
      `${name}: failed requests, by status ${JSON.stringify(result.statusCodeStats)}`,
    );
  return { result, cpuUs };
}

function ratio(a: Measured, b: Measured): string {
  return (a.result.requests.average / b.result.requests.average).toFixed(2);
}

async function main(): Promise<void> {
  const autocannon = ((await import('autocannon' as string)) as { default: Autocannon }).default;
  const children: ChildProcess[] = [];
  const logDir = mkdtempSync(join(tmpdir(), 'lv-bench-proxy-log-'));
  const logFile = join(logDir, 'linkvault.log');
  try {
    const api = await startChild(['api', String(LATENCY_MS)]);
    children.push(api.child);
    const apiUrl = `http://localhost:${api.line.port}`;
    const bare = await startChild(['bare', apiUrl]);
    children.push(bare.child);
    const bareUrl = `http://127.0.0.1:${bare.line.port}`;
    const lv = await startChild(['linkvault', apiUrl, logFile], NODE_ARGS);
    children.push(lv.child);
    const { audience } = lv.line;
    const proxied = async () => ({
      url: lv.line.url,
      headers: { authorization: await bearer(lv.line.worker!, audience!) },
    });
    console.log(
      `node ${process.version}, ${CONNECTIONS} connections, ${SECONDS} s each (after a 2 s warm-up); linkvault at log level info to a file, Redis appendonly everysec, audit retention ${AUDIT_RETENTION} events`,
    );
    const direct = await run(autocannon, 'direct GET', { url: `${apiUrl}${API_PATH}` });
    const bareRun = await run(
      autocannon,
      'bare proxy GET',
      { url: `${bareUrl}${API_PATH}` },
      { bare: bare.child },
    );
    const proxy = await run(autocannon, 'proxied GET', await proxied(), { linkvault: lv.child });
    const token = await run(
      autocannon,
      'token release',
      {
        url: lv.line.tokenUrl,
        method: 'POST',
        headers: {
          authorization: await bearer(lv.line.tokens!, audience!),
          'content-type': 'application/json',
        },
        body: '{}',
      },
      { linkvault: lv.child },
    );
    console.log(
      `zero latency: proxied / direct ${ratio(proxy, direct)}   proxied / bare proxy ${ratio(proxy, bareRun)}   bare proxy / direct ${ratio(bareRun, direct)}   proxied / token release ${ratio(proxy, token)}`,
    );
    if (LATENCY_SERIES) {
      const slow = `${API_PATH}?slow=1`;
      const directSlow = await run(autocannon, `direct GET, API ${LATENCY_MS} ms`, {
        url: `${apiUrl}${slow}`,
      });
      const bareSlow = await run(
        autocannon,
        `bare proxy GET, API ${LATENCY_MS} ms`,
        { url: `${bareUrl}${slow}` },
        { bare: bare.child },
      );
      const proxySlow = await run(
        autocannon,
        `proxied GET, API ${LATENCY_MS} ms`,
        { ...(await proxied()), url: `${lv.line.url}?slow=1` },
        { linkvault: lv.child },
      );
      console.log(
        `API latency ${LATENCY_MS} ms: proxied / direct ${ratio(proxySlow, directSlow)}   proxied / bare proxy ${ratio(proxySlow, bareSlow)}   bare proxy / direct ${ratio(bareSlow, directSlow)}   p50 added by linkvault ${proxySlow.result.latency.p50 - directSlow.result.latency.p50} ms`,
      );
      console.log(
        `target ≥ 0.7 × direct, read on the ${LATENCY_MS} ms series: proxied / direct = ${ratio(proxySlow, directSlow)} (at zero latency the bare proxy itself reaches ${ratio(bareRun, direct)} × direct; linkvault reaches ${ratio(proxy, bareRun)} × the bare proxy)`,
      );
    } else
      console.log(
        'target ≥ 0.7 × direct is read on the provider-latency series (BENCH_LATENCY=0 skipped it)',
      );
  } finally {
    // linkvault first: a call still in flight when the API went away would log a failure.
    for (const child of children.reverse()) {
      if (child.exitCode !== null) continue;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
    }
    try {
      const lines = readFileSync(logFile, 'utf8').split('\n').filter(Boolean);
      console.log(
        `linkvault log lines written: ${lines.length} (${lines.filter((l) => l.includes('"msg":"request"')).length} request lines)`,
      );
      // Anything but a 200 request line: what went wrong, counted by level, message, status and code.
      const other = new Map<string, number>();
      for (const l of lines) {
        if (l.includes('"status":200,') && l.includes('"msg":"request"')) continue;
        const o = JSON.parse(l) as Record<string, unknown>;
        const what = `level ${String(o.level)} ${String(o.msg)} ${String(o.status ?? '')} ${String(o.code ?? '')}`;
        other.set(what, (other.get(what) ?? 0) + 1);
      }
      for (const [what, count] of other) console.log(`  ${count} × ${what}`);
    } catch {
      // linkvault did not start
    }
    if (!process.env.BENCH_KEEP_LOG) rmSync(logDir, { recursive: true, force: true });
    else console.log(`log kept: ${logFile}`);
  }
}

const mode = process.argv[2];
if (mode === 'api') await serveApi(Number(process.argv[3]));
else if (mode === 'bare') await serveBareProxy(process.argv[3]!);
else if (mode === 'linkvault') await serveLinkvault(process.argv[3]!, process.argv[4]!);
else await main();
