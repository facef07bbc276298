import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../../../src/config.js';
import { createKeyProvider } from '../../../src/keys/create-key-provider.js';
import { createVault } from '../../../src/keys/vault.js';
import { openTokenSet } from '../../../src/links/sealing/token-vault.js';
import { Metrics } from '../../../src/metrics.js';
import { createStore } from '../../../src/store/create-store.js';
import type { Store } from '../../../src/store/store.js';
import { startOidcServer, type OidcServer } from '../../support/oidc-server.js';
import { connectViaProvider, createTestOAuth } from '../../support/provider-link.js';
import { startRedis, type RedisServerHandle } from '../../support/redis-server.js';
import { makeTestServices } from '../../support/service-jwt.js';
import {
  startServiceProcess,
  writeServiceConfig,
  type ServiceProcess,
} from '../../support/service-process.js';
import { startProviderSwitch, type ProviderSwitch } from './provider-switch.js';
import { eventually } from './revocation-harness.js';

const REDIRECT = 'http://127.0.0.1:3000/v1/oauth/callback/test-as';
const CLIENT = {
  client_id: 'lv-client',
  client_secret: 'lv-secret-0123456789',
  redirect_uris: [REDIRECT],
};

async function call(
  url: string,
  init: RequestInit,
): Promise<{ status: number; body: Record<string, unknown> }> {
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
      const entry = oidc.catalogueEntry('test-as', {
        revocation: {
          style: 'rfc7009',
          url: `${front.url}/token/revocation`,
          token_type_hint: 'refresh_token',
        },
      });
      const env: Record<string, string> = {
        ...writeServiceConfig({
          dir,
          services,
          providers: [{ entry, clientId: CLIENT.client_id, clientSecret: CLIENT.client_secret }],
        }),
        LINKVAULT_LOG_LEVEL: 'info',
        LINKVAULT_PROVIDER_TIMEOUT_SECONDS: '2',
        ...(kind === 'sqlite'
          ? { LINKVAULT_STORE: 'sqlite', LINKVAULT_SQLITE_PATH: join(dir, 'lv.db') }
          : {
              LINKVAULT_STORE: 'redis',
              LINKVAULT_REDIS_URL: redis.url,
              LINKVAULT_REDIS_PREFIX: `lv${randomUUID().slice(0, 8)}`,
            }),
      };
      // The test connects the link itself, sealed with the same master key (created here, before the
      // service reads it) and written to the same store.
      const config = loadConfig(env, dir);
      const metrics = new Metrics();
      const keys = await createKeyProvider(config.keys, { metrics });
      const vault = createVault({ keys, metrics, maxEntries: 10, maxAgeMs: 60_000 });
      const { oauth } = createTestOAuth({
        entry,
        clientId: CLIENT.client_id,
        clientSecret: CLIENT.client_secret,
      });
      let store: Store | undefined;
      let service: ServiceProcess | undefined;
      try {
        service = await startServiceProcess({ cwd: dir, env });
        store = await createStore(config.store, { metrics });
        const user = `user-${kind}`;
        const link = await connectViaProvider({
          oauth,
          completeLogin: (u, o) => oidc.completeLogin(u, o),
          store,
          vault,
          providerId: 'test-as',
          linkId: `lnk_${randomUUID()}`,
          tenantId: 'acme',
          userId: user,
          accountId: user,
          redirectUri: REDIRECT,
        });
        const id = link.id;
        const tokens = await openTokenSet(vault, link, link.tokens!);
        await store.putGrant({
          id: `grt_${randomUUID()}`,
          serviceId: 'crm-sync',
          tenantId: null,
          providerId: null,
          linkId: id,
          scopes: null,
          purpose: 'tests',
          createdAtMs: Date.now(),
          expiresAtMs: null,
        });

        front.set('/token/revocation', { kind: 'status', status: 503 });
        const seenBefore = front.requests.filter((r) => r.path === '/token/revocation').length;
        const auth = { authorization: services.bearer('crm-hs') };
        const revoked = await call(`${service.url}/v1/links/${id}`, {
          method: 'DELETE',
          headers: auth,
        });
        assert.equal(revoked.status, 200);
        assert.deepEqual(revoked.body.provider_revocation, { status: 'pending', attempts: 0 });

        // The service tried, the provider said 503: the work waits in the queue. Kill it there.
        await front.seen('/token/revocation', seenBefore + 1);
        await eventually(
          async () =>
            (
              (await call(`${service!.url}/v1/links/${id}/revocation`, { headers: auth })).body
                .provider_revocation as { attempts: number }
            ).attempts === 1,
        );
        await service.crash();
        assert.equal(await store.countJobs(), 1);
        assert.equal((await oidc.introspect(tokens.refreshToken!.reveal())).active, true);

        front.set('/token/revocation', { kind: 'pass' });
        service = await startServiceProcess({ cwd: dir, env });
        const done = await eventually(
          async () => {
            const record = await call(`${service!.url}/v1/links/${id}/revocation`, {
              headers: auth,
            });
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
        const gone = await call(`${service.url}/v1/links/${id}/token`, {
          method: 'POST',
          headers: { ...auth, 'content-type': 'application/json' },
          body: '{}',
        });
        assert.equal(gone.status, 410);
      } finally {
        await service?.stop();
        await store?.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});
