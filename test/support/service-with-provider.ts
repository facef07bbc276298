import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config.js';
import { createKeyProvider } from '../../src/keys/create-key-provider.js';
import { createVault, type Vault } from '../../src/keys/vault.js';
import type { LinkRecord } from '../../src/links/link.js';
import { Metrics } from '../../src/metrics.js';
import { createStore } from '../../src/store/create-store.js';
import type { Store } from '../../src/store/store.js';
import { startOidcServer, type OidcServer } from './oidc-server.js';
import { connectViaProvider, createTestOAuth } from './provider-link.js';
import { makeTestServices, type TestServices } from './service-jwt.js';
import { startServiceProcess, writeServiceConfig, type ServiceProcess } from './service-process.js';

/**
 * The real service as a child process (`linkvault serve`, SQLite) with one provider served by
 * node-oidc-provider, plus the test's own store and vault on the same file and master key, so a
 * test can connect links through the real OAuth server without driving a browser. The setup the
 * CLI's HTTP-command tests share.
 */

export interface OAuthTestClient {
  readonly client_id: string;
  readonly client_secret: string;
  readonly redirect_uris: readonly string[];
}

export interface ServiceWithProviderOptions {
  readonly providerId: string;
  readonly client: OAuthTestClient;
  /** Members over node-oidc-provider's catalogue entry (api_base_url, api_hosts, …). */
  readonly entryOverrides?: Record<string, unknown>;
  /** Default: makeTestServices(). */
  readonly services?: TestServices;
  /** Extra environment for the service. */
  readonly env?: Readonly<Record<string, string>>;
  /** Prefix of the temporary directory. */
  readonly name?: string;
}

export interface ServiceWithProvider {
  readonly dir: string;
  readonly oidc: OidcServer;
  readonly services: TestServices;
  readonly service: ServiceProcess;
  /** The service's environment (to start it again, or to run the CLI against its configuration). */
  readonly env: Readonly<Record<string, string>>;
  /** The test's own store on the service's SQLite file. */
  readonly store: Store;
  readonly vault: Vault;
  /** Runs a real authorization code flow at node-oidc-provider and stores the link. */
  connect(link: {
    tenantId: string;
    userId: string;
    linkId?: string;
    accountId?: string;
  }): Promise<LinkRecord>;
  close(): Promise<void>;
}

export async function startServiceWithProvider(
  options: ServiceWithProviderOptions,
): Promise<ServiceWithProvider> {
  const dir = mkdtempSync(join(tmpdir(), `${options.name ?? 'lv-service'}-`));
  const oidc = await startOidcServer({ mode: 'oauth', clients: [{ ...options.client }] });
  let service: ServiceProcess | undefined;
  let store: Store | undefined;
  try {
    const services = options.services ?? makeTestServices();
    const entry = oidc.catalogueEntry(options.providerId, options.entryOverrides);
    const { client } = options;
    const env: Record<string, string> = {
      ...writeServiceConfig({
        dir,
        services,
        providers: [{ entry, clientId: client.client_id, clientSecret: client.client_secret }],
      }),
      LINKVAULT_LOG_LEVEL: 'info',
      LINKVAULT_STORE: 'sqlite',
      LINKVAULT_SQLITE_PATH: join(dir, 'lv.db'),
      ...options.env,
    };
    // The test's vault uses the master key the service will read (created here, first).
    const config = loadConfig(env, dir);
    const metrics = new Metrics();
    const keys = await createKeyProvider(config.keys, { metrics });
    const vault = createVault({ keys, metrics, maxEntries: 10, maxAgeMs: 60_000 });
    const { oauth } = createTestOAuth({
      entry,
      clientId: client.client_id,
      clientSecret: client.client_secret,
    });
    service = await startServiceProcess({ cwd: dir, env });
    store = await createStore(config.store, { metrics });
    const ownStore = store;
    const running = service;
    return {
      dir,
      oidc,
      services,
      service: running,
      env,
      store: ownStore,
      vault,
      connect: (link) =>
        connectViaProvider({
          oauth,
          completeLogin: (u, o) => oidc.completeLogin(u, o),
          store: ownStore,
          vault,
          providerId: options.providerId,
          linkId: link.linkId ?? `lnk_${randomUUID()}`,
          tenantId: link.tenantId,
          userId: link.userId,
          accountId: link.accountId ?? `${link.tenantId}-${link.userId}`,
          redirectUri: client.redirect_uris[0]!,
        }),
      async close() {
        await running.stop();
        await ownStore.close();
        await oidc.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await service?.stop();
    await store?.close();
    await oidc.close();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
