import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../../src/config.js';
import { createKeyProvider } from '../../src/keys/create-key-provider.js';
import { createVault } from '../../src/keys/vault.js';
import { loadCatalogue } from '../../src/links/catalogue.js';
import { sealTokenSet } from '../../src/links/token-vault.js';
import { Metrics } from '../../src/metrics.js';
import { createOAuthClient } from '../../src/oauth/openid-oauth-client.js';
import { createStore } from '../../src/store/create-store.js';
import type { Store } from '../../src/store/store.js';
import { startOidcServer, type OidcServer } from '../support/oidc-server.js';
import { startRedis, type RedisServerHandle } from '../support/redis-server.js';
import { makeTestServices } from '../support/service-jwt.js';
import { startProviderSwitch, type ProviderSwitch } from './provider-switch.js';
import { eventually, obtainTokens } from './revocation-harness.js';

const ENTRY = join(import.meta.dirname, 'revocation-service-main.ts');
const TSX = import.meta.resolve('tsx');
const REDIRECT = 'http://127.0.0.1:3000/v1/oauth/callback/test-as';
const CLIENT = { client_id: 'lv-client', client_secret: 'lv-secret-0123456789', redirect_uris: [REDIRECT] };
const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

interface Child {
  readonly url: string;
  kill(): Promise<void>;
  stop(): Promise<void>;
}

/** The real service (revocation wired as main.ts wires it) as a child process; resolves once it listens. */
async function startChild(cwd: string, env: Record<string, string>): Promise<Child> {
  const child = spawn(process.execPath, ['--import', TSX, ENTRY], {
    cwd,
    env: { PATH: process.env.PATH ?? '', LINKVAULT_PORT: '0', LINKVAULT_HOST: '127.0.0.1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(child);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  void exited.then(() => live.delete(child));
  const port = await Promise.race([
    new Promise<number>((resolve) =>
      createInterface({ input: child.stdout! }).on('line', (text) => {
        try {
          const line = JSON.parse(text) as { msg?: string; port?: number };
          if (line.msg?.startsWith('linkvault listening')) resolve(Number(line.port));
        } catch {
          // not a log line
        }
      }),
    ),
    exited.then(() => Promise.reject(new Error(`the service exited before listening: ${stderr}`))),
  ]);
  return {
    url: `http://127.0.0.1:${port}`,
    async kill() {
      child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

async function call(url: string, init: RequestInit): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url, init);
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/**
 * The provider step survives the process: the service is killed (SIGKILL, no shutdown) while the
 * revocation waits for the provider, started again, and the revocation completes.
 */
describe('a pending revocation survives a killed service', () => {
  let oidc: OidcServer;
  let front: ProviderSwitch;
  let redis: RedisServerHandle;

  before(async () => {
    oidc = await startOidcServer({ mode: 'oauth', clients: [CLIENT] });
    front = await startProviderSwitch(oidc.url);
    redis = await startRedis();
  });
  after(async () => {
    await front.close();
    await oidc.close();
    await redis.stop();
  });

  for (const kind of ['sqlite', 'redis'] as const) {
    it(`when the service on ${kind} is killed while the provider answers 503 and started again, then the revocation completes`, async () => {
      const dir = mkdtempSync(join(tmpdir(), `lv-revoke-restart-${kind}-`));
      const services = makeTestServices();
      const prefix = `lv${randomUUID().slice(0, 8)}`;
      writeFileSync(join(dir, 'services.json'), JSON.stringify(services.servicesFile));
      writeFileSync(
        join(dir, 'providers.json'),
        JSON.stringify({ providers: [oidc.catalogueEntry('test-as', { revocation: { style: 'rfc7009', url: `${front.url}/token/revocation`, token_type_hint: 'refresh_token' } })] }),
      );
      const env: Record<string, string> = {
        NODE_ENV: 'test',
        LINKVAULT_LOG_LEVEL: 'info',
        LINKVAULT_SANDBOX: 'false',
        LINKVAULT_ALLOW_INSECURE_PROVIDER_URLS: 'true',
        LINKVAULT_PROVIDERS_FILE: join(dir, 'providers.json'),
        LINKVAULT_SERVICES_FILE: join(dir, 'services.json'),
        LINKVAULT_LOCAL_KEY_FILE: join(dir, 'master.key'),
        LINKVAULT_PROVIDER_TEST_AS_CLIENT_ID: CLIENT.client_id,
        LINKVAULT_PROVIDER_TEST_AS_CLIENT_SECRET: CLIENT.client_secret,
        LINKVAULT_PROVIDER_TIMEOUT_SECONDS: '2',
        ...(kind === 'sqlite' ? { LINKVAULT_STORE: 'sqlite', LINKVAULT_SQLITE_PATH: join(dir, 'lv.db') } : { LINKVAULT_STORE: 'redis', LINKVAULT_REDIS_URL: redis.url, LINKVAULT_REDIS_PREFIX: prefix }),
        ...services.env,
      };
      // The test seals the link itself with the same master key and writes it to the same store.
      const config = loadConfig(env, dir);
      const metrics = new Metrics();
      const keys = await createKeyProvider(config.keys, { metrics });
      const vault = createVault({ keys, metrics, maxEntries: 10, maxAgeMs: 60_000 });
      const catalogue = loadCatalogue({ builtinFile: join(import.meta.dirname, '../../config/providers.json'), config });
      const oauth = createOAuthClient({ catalogue, config });
      let store: Store | undefined;
      let child: Child | undefined;
      try {
        child = await startChild(dir, env);
        store = await createStore(config.store, { metrics });
        const tokens = await obtainTokens({ oauth }, oidc, 'test-as', `user-${kind}`, REDIRECT);
        const id = `lnk_${randomUUID()}`;
        const sealed = await sealTokenSet(vault, { id, tenantId: 'acme', providerId: 'test-as' }, tokens, null);
        const at = Date.now();
        await store.saveLink(
          {
            id,
            tenantId: 'acme',
            userId: `user-${kind}`,
            providerId: 'test-as',
            status: 'active',
            version: 0,
            providerAccountId: null,
            grantedScopes: [...oidc.scopes],
            metadata: {},
            endpointVariables: {},
            tokens: sealed,
            accessTokenExpiresAtMs: tokens.expiresAtMs,
            createdAtMs: at,
            updatedAtMs: at,
            lastRefreshedAtMs: null,
            lastUsedAtMs: null,
          },
          null,
        );

        await store.putGrant({ id: `grt_${randomUUID()}`, serviceId: 'crm-sync', tenantId: null, providerId: null, linkId: id, scopes: null, purpose: 'tests', createdAtMs: at, expiresAtMs: null });

        front.set('/token/revocation', { kind: 'status', status: 503 });
        const seenBefore = front.requests.filter((r) => r.path === '/token/revocation').length;
        const auth = { authorization: services.bearer('crm-hs') };
        const revoked = await call(`${child.url}/v1/links/${id}`, { method: 'DELETE', headers: auth });
        assert.equal(revoked.status, 200);
        assert.deepEqual(revoked.body.provider_revocation, { status: 'pending', attempts: 0 });

        // The service tried, the provider said 503: the work waits in the queue. Kill it there.
        await front.seen('/token/revocation', seenBefore + 1);
        await eventually(async () => ((await call(`${child!.url}/v1/links/${id}/revocation`, { headers: auth })).body.provider_revocation as { attempts: number }).attempts === 1);
        await child.kill();
        assert.equal(await store.countJobs(), 1);
        assert.equal((await oidc.introspect(tokens.refreshToken!.reveal())).active, true);

        front.set('/token/revocation', { kind: 'pass' });
        child = await startChild(dir, env);
        const done = await eventually(
          async () => {
            const record = await call(`${child!.url}/v1/links/${id}/revocation`, { headers: auth });
            const pr = record.body.provider_revocation as { status: string; attempts: number };
            return pr.status === 'pending' ? null : pr;
          },
          20_000,
          100,
        );
        assert.deepEqual(done, { status: 'confirmed', attempts: 2 });
        assert.equal((await oidc.introspect(tokens.refreshToken!.reveal())).active, false);
        assert.equal((await oidc.introspect(tokens.accessToken.reveal())).active, false);
        await eventually(async () => (await store!.countJobs()) === 0);
        const gone = await call(`${child.url}/v1/links/${id}/token`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: '{}' });
        assert.equal(gone.status, 410);
      } finally {
        await child?.stop();
        await store?.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});
