import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalKeyProvider } from '../../src/keys/local-key-provider.js';
import { createVault, type Vault } from '../../src/keys/vault.js';
import { Metrics } from '../../src/metrics.js';
import type { OAuthClient } from '../../src/oauth/oauth-client.js';
import { createStore } from '../../src/store/create-store.js';
import type { Store } from '../../src/store/store.js';
import type { LinkRecord } from '../../src/links/link.js';
import { freePort } from './free-port.js';
import {
  connectViaProvider,
  createTestOAuth,
  type ConnectViaProviderOptions,
} from './provider-link.js';
import { startRedis, type RedisClusterHandle, type RedisServerHandle } from './redis-server.js';
import { seedSealedLink, type SeedLinkOptions } from './stack.js';
import {
  startServiceProcess,
  writeServiceConfig,
  type ServiceProcess,
  type StartServiceProcessOptions,
} from './service-process.js';
import { makeTestServices, type TestServices } from './service-jwt.js';

/**
 * N replicas of the real service (`bin/linkvault.js serve`, child processes) sharing one
 * redis-server and one master key, with one provider from `entry` (its client credentials in the
 * environment, the way an operator configures them). The parent gets its own store, vault and
 * OAuth client on the same Redis and key, to connect links the way the connect flow would.
 */

export interface ReleaseCluster {
  /** The standalone redis-server (null on a Redis Cluster given as `redisCluster`). */
  readonly redis: RedisServerHandle | null;
  readonly replicas: ServiceProcess[];
  readonly services: TestServices;
  readonly store: Store;
  readonly vault: Vault;
  readonly oauth: OAuthClient;
  /**
   * Connects a link of the cluster's provider through a real authorization-code flow (login by
   * the options' completeLogin) and stores it, sealed, as the connect flow would.
   */
  connectLink(
    options: Pick<
      ConnectViaProviderOptions,
      'linkId' | 'accessTokenExpiresAtMs' | 'tenantId' | 'userId' | 'accountId'
    >,
  ): Promise<LinkRecord>;
  /** Seals a token set and stores an active link of the cluster's provider directly (no OAuth flow). */
  seedLink(options?: Omit<SeedLinkOptions, 'providerId'>): Promise<LinkRecord>;
  /** POST /v1/grants on replica 0 as crm-sync (an admin). */
  createGrant(
    body: Record<string, unknown>,
  ): Promise<{ status: number; body: Record<string, unknown> }>;
  /** POST /v1/links/:id/token on `replica` as `billing` (role tokens). */
  requestToken(
    replica: number,
    linkId: string,
    body?: Record<string, unknown>,
  ): Promise<{ status: number; body: Record<string, unknown> }>;
  stop(): Promise<void>;
}

export interface StartReleaseClusterOptions {
  readonly replicas: number;
  readonly providerId: string;
  /** The provider's snake_case catalogue entry (e.g. OidcServer.catalogueEntry). */
  readonly entry: Record<string, unknown>;
  readonly clientId: string;
  readonly clientSecret: string;
  /** Logs in at the provider like a browser and returns the redirect back (OidcServer.completeLogin). */
  readonly completeLogin: ConnectViaProviderOptions['completeLogin'];
  /** Extra LINKVAULT_* variables for every replica. */
  readonly env?: Readonly<Record<string, string>>;
  /** Extra node command-line flags for every replica (e.g. --cpu-prof). */
  readonly nodeArgs?: readonly string[];
  /** A ready line other than the info "listening" one (see StartServiceProcessOptions.ready); each replica then gets a free port chosen here. */
  readonly ready?: StartServiceProcessOptions['ready'];
  /** Run on this Redis Cluster (LINKVAULT_REDIS_CLUSTER_NODES) instead of a standalone redis-server of its own. */
  readonly redisCluster?: RedisClusterHandle;
}

async function call(
  url: string,
  authorization: string,
  body: Record<string, unknown>,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { authorization, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

export async function startReleaseCluster(
  options: StartReleaseClusterOptions,
): Promise<ReleaseCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'lv-cluster-'));
  const redis = options.redisCluster ? null : await startRedis();
  const seeds = options.redisCluster?.seeds.map((n) => `${n.host}:${n.port}`).join(',');
  const metrics = new Metrics();
  // Created once here (where writeServiceConfig points the replicas), so they never race to generate it.
  const keys = await LocalKeyProvider.load({
    keyFile: join(dir, 'master.key'),
    mayGenerate: true,
    metrics,
  });
  const vault = createVault({ keys, metrics, maxEntries: 1000, maxAgeMs: 300_000 });
  const services = makeTestServices();
  const env: Record<string, string> = {
    ...writeServiceConfig({
      dir,
      services,
      providers: [
        { entry: options.entry, clientId: options.clientId, clientSecret: options.clientSecret },
      ],
    }),
    LINKVAULT_STORE: 'redis',
    ...(redis ? { LINKVAULT_REDIS_URL: redis.url } : { LINKVAULT_REDIS_CLUSTER_NODES: seeds! }),
    LINKVAULT_BACKGROUND_REFRESH: 'false',
    ...options.env,
  };
  const store = await createStore(
    redis
      ? { kind: 'redis', redisUrl: redis.url, clusterNodes: null, keyPrefix: 'lv' }
      : {
          kind: 'redis',
          redisUrl: null,
          clusterNodes: options.redisCluster!.seeds,
          keyPrefix: 'lv',
        },
    { metrics },
  );
  const { oauth } = createTestOAuth({
    entry: options.entry,
    clientId: options.clientId,
    clientSecret: options.clientSecret,
  });
  const replicas: ServiceProcess[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(replicas.map((r) => r.stop()));
    await store.close();
    await redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  };
  const startReplica = async (): Promise<ServiceProcess> => {
    const replicaEnv = options.ready ? { ...env, LINKVAULT_PORT: String(await freePort()) } : env;
    return startServiceProcess({
      cwd: dir,
      env: replicaEnv,
      ...(options.nodeArgs ? { nodeArgs: options.nodeArgs } : {}),
      ...(options.ready ? { ready: options.ready } : {}),
    });
  };
  const started = await Promise.allSettled(Array.from({ length: options.replicas }, startReplica));
  for (const outcome of started) if (outcome.status === 'fulfilled') replicas.push(outcome.value);
  const failed = started.find((outcome) => outcome.status === 'rejected');
  if (failed) {
    await stop();
    throw failed.reason;
  }
  return {
    redis,
    replicas,
    services,
    store,
    vault,
    oauth,
    connectLink: (o) =>
      connectViaProvider({
        ...o,
        oauth,
        completeLogin: options.completeLogin,
        store,
        vault,
        providerId: options.providerId,
      }),
    seedLink: (o = {}) =>
      seedSealedLink({ store, vault, now: Date.now }, { ...o, providerId: options.providerId }),
    createGrant: (body) => call(`${replicas[0]!.url}/v1/grants`, services.bearer('crm-hs'), body),
    requestToken: (replica, linkId, body = {}) =>
      call(
        `${replicas[replica]!.url}/v1/links/${linkId}/token`,
        services.bearer('billing-hs'),
        body,
      ),
    stop,
  };
}
