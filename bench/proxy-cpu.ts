/**
 * Service CPU of a proxied call itself, without the incoming HTTP request, the service JWT or the
 * request log line: `npx tsx bench/proxy-cpu.ts`. Beside it, in the same process, the token
 * release the proxy starts from, so that the difference is what the proxy adds (the upstream
 * call, the relay, the `proxy.completed` record).
 *
 * The provider API stand-in runs as its own process (bench/proxy.ts `api`, zero latency); this
 * process holds the stack as the proxy tests build it (test/links/proxy/proxy-harness.ts) on a
 * real redis-server (appendonly, fsync every second), the audit retention running (1,000 events),
 * log level warn. It makes PROXY_CPU_N calls of each kind (default 30,000) PROXY_CPU_CONCURRENCY
 * at a time (default 50), after a warm-up, alternating the kinds PROXY_CPU_ROUNDS times
 * (default 3) so that a disturbance of the machine shows as a round out of line, and prints
 * process CPU (user + system, every thread) per call. Less noisy than `npm run bench:proxy` on a
 * shared machine: nothing else runs in this process and the figure does not depend on how the
 * cores were shared. `node --cpu-prof --import tsx bench/proxy-cpu.ts` profiles exactly this.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { createLogger } from '../src/log.js';
import { startProxyHarness } from '../test/links/proxy/proxy-harness.js';
import { startRedis } from '../test/support/redis-server.js';

const N = Number(process.env.PROXY_CPU_N ?? 30_000);
const CONCURRENCY = Number(process.env.PROXY_CPU_CONCURRENCY ?? 50);
const ROUNDS = Number(process.env.PROXY_CPU_ROUNDS ?? 3);

const api = spawn(
  process.execPath,
  ['--import', import.meta.resolve('tsx'), join(import.meta.dirname, 'proxy.ts'), 'api', '0'],
  { stdio: ['ignore', 'pipe', 'inherit'] },
);
const apiPort = await new Promise<number>((resolve, reject) => {
  createInterface({ input: api.stdout! }).once('line', (line) =>
    resolve((JSON.parse(line) as { port: number }).port),
  );
  api.once('exit', (code) => reject(new Error(`api exited with ${code}`)));
});
const redis = await startRedis({ appendonly: true, appendfsync: 'everysec' });
const h = await startProxyHarness({
  apiBaseUrl: `http://localhost:${apiPort}`,
  redisUrl: redis.url,
  log: createLogger({ level: 'warn', destination: { write: () => undefined } }),
  startAuditExporter: true,
  env: { LINKVAULT_AUDIT_STORE_MAX_EVENTS: '1000' },
});
try {
  const link = await h.connect('lnk_proxy_cpu');
  await h.stack.addGrant({
    serviceId: 'worker',
    linkId: link.id,
    tokenRelease: false,
    proxy: { allow: [{ method: 'GET', path: '/crm/v3/objects/contacts/*' }] },
  });
  await h.stack.addGrant({ serviceId: 'tokens-svc', linkId: link.id });

  let seq = 0;
  const proxied = async (): Promise<void> => {
    const answer = await h.stack.proxy.call({
      service: { id: 'worker', tenants: null },
      linkId: link.id,
      method: 'GET',
      path: '/crm/v3/objects/contacts/1',
      query: '',
      headers: { host: 'linkvault', accept: 'application/json' },
      body: null,
      requestId: `cpu-${++seq}`,
    });
    if (answer.status !== 200) throw new Error(`proxied call: ${answer.status}`);
    if (!Buffer.isBuffer(answer.body)) for await (const _ of answer.body as Readable);
  };
  const released = async (): Promise<void> => {
    await h.stack.release.release({
      service: { id: 'tokens-svc', tenants: null },
      linkId: link.id,
      requestId: `cpu-${++seq}`,
    });
  };
  const measure = async (name: string, one: () => Promise<void>, count: number) => {
    let next = 0;
    const cpu = process.cpuUsage();
    const started = process.hrtime.bigint();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next++ < count) await one();
      }),
    );
    const used = process.cpuUsage(cpu);
    const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
    const us = (used.user + used.system) / count;
    if (name)
      console.log(
        `${name.padEnd(14)} ${us.toFixed(1).padStart(6)} µs CPU per call (user ${(used.user / count).toFixed(1)}, system ${(used.system / count).toFixed(1)}), ${((count / wallMs) * 1000).toFixed(0)} calls/s`,
      );
    return us;
  };
  await measure('', proxied, Math.min(5000, N)); // warm-up: JIT, connection pools, caches
  await measure('', released, Math.min(5000, N));
  const sums = { proxied: 0, released: 0 };
  for (let r = 0; r < ROUNDS; r++) {
    sums.proxied += await measure('proxied call', proxied, N);
    sums.released += await measure('token release', released, N);
  }
  console.log(
    `mean of ${ROUNDS} rounds: proxied call ${(sums.proxied / ROUNDS).toFixed(1)} µs, token release ${(sums.released / ROUNDS).toFixed(1)} µs, the proxy's own ${((sums.proxied - sums.released) / ROUNDS).toFixed(1)} µs (${N} calls each, ${CONCURRENCY} at a time)`,
  );
} finally {
  await h.close();
  await redis.stop();
  api.kill('SIGTERM');
}
