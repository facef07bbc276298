import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { providerEnvName } from '../../src/config.js';
import { LocalKeyProvider } from '../../src/keys/local-key-provider.js';
import { createVault, type Vault } from '../../src/keys/vault.js';
import { Metrics } from '../../src/metrics.js';
import type { OAuthClient } from '../../src/oauth/oauth-client.js';
import { createStore } from '../../src/store/create-store.js';
import type { Store } from '../../src/store/store.js';
import { createTestOAuth } from './provider-link.js';
import { startRedis, type RedisServerHandle } from './redis-server.js';
import { startReleaseService, type ReleaseServiceProcess } from './release-service.js';
import { makeTestServices, type TestServices } from './service-jwt.js';

/**
 * N replicas of the real token-release service (child processes) sharing one redis-server and one
 * master key, with a provider entry from `entry` (its client credentials in the environment, the
 * way an operator configures them). The parent gets its own store/vault/OAuth client on the same
 * Redis and key, to seed links the way the connect flow would.
 */

export interface ReleaseCluster {
  readonly redis: RedisServerHandle;
  readonly replicas: ReleaseServiceProcess[];
  readonly services: TestServices;
  readonly store: Store;
  readonly vault: Vault;
  readonly oauth: OAuthClient;
  readonly providerId: string;
  /** Environment every replica got (to start more). */
  readonly env: Record<string, string>;
  readonly dir: string;
  stop(): Promise<void>;
}

export interface StartReleaseClusterOptions {
  readonly replicas: number;
  readonly providerId: string;
  /** The provider's snake_case catalogue entry (e.g. OidcServer.catalogueEntry). */
  readonly entry: Record<string, unknown>;
  readonly clientId: string;
  readonly clientSecret: string;
  /** Extra LINKVAULT_* variables for every replica. */
  readonly env?: Record<string, string>;
  /** Extra node command-line flags for every replica (e.g. --cpu-prof). */
  readonly nodeArgs?: readonly string[];
}

export async function startReleaseCluster(options: StartReleaseClusterOptions): Promise<ReleaseCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'lv-cluster-'));
  const redis = await startRedis();
  const metrics = new Metrics();
  const keyFile = join(dir, 'master.key');
  // Created once here, so replicas never race to generate it.
  const keys = await LocalKeyProvider.load({ keyFile, mayGenerate: true, metrics });
  const vault = createVault({ keys, metrics, maxEntries: 1000, maxAgeMs: 300_000 });
  const services = makeTestServices();
  writeFileSync(join(dir, 'services.json'), JSON.stringify(services.servicesFile));
  writeFileSync(join(dir, 'providers.json'), JSON.stringify({ providers: [options.entry] }));
  const envName = providerEnvName(options.providerId);
  const env: Record<string, string> = {
    ...services.env,
    LINKVAULT_STORE: 'redis',
    LINKVAULT_REDIS_URL: redis.url,
    LINKVAULT_LOCAL_KEY_FILE: keyFile,
    LINKVAULT_SERVICES_FILE: join(dir, 'services.json'),
    LINKVAULT_PROVIDERS_FILE: join(dir, 'providers.json'),
    [`LINKVAULT_PROVIDER_${envName}_CLIENT_ID`]: options.clientId,
    [`LINKVAULT_PROVIDER_${envName}_CLIENT_SECRET`]: options.clientSecret,
    LINKVAULT_ALLOW_INSECURE_PROVIDER_URLS: 'true',
    LINKVAULT_BACKGROUND_REFRESH: 'false',
    ...options.env,
  };
  const store = await createStore({ kind: 'redis', redisUrl: redis.url, clusterNodes: null, keyPrefix: 'lv' }, { metrics });
  const { oauth } = createTestOAuth({ entry: options.entry, clientId: options.clientId, clientSecret: options.clientSecret });
  const replicas: ReleaseServiceProcess[] = [];
  try {
    replicas.push(...(await Promise.all(Array.from({ length: options.replicas }, () => startReleaseService({ cwd: dir, env, ...(options.nodeArgs ? { nodeArgs: options.nodeArgs } : {}) })))));
  } catch (err) {
    await Promise.all(replicas.map((r) => r.stop()));
    await store.close();
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    redis,
    replicas,
    services,
    store,
    vault,
    oauth,
    providerId: options.providerId,
    env,
    dir,
    async stop() {
      await Promise.all(replicas.map((r) => r.stop()));
      await store.close();
      await redis.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
