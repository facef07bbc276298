import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config.js';
import { buildAdapters, buildApp, buildFeatures, buildListener } from '../../src/features.js';
import {
  AwsKmsKeyProvider,
  type AwsKmsKeyProviderOptions,
} from '../../src/keys/aws-kms-key-provider.js';
import { createVault } from '../../src/keys/vault.js';
import type { LinkRecord } from '../../src/links/link.js';
import { createLogger } from '../../src/log.js';
import { Metrics } from '../../src/metrics.js';
import type { OAuthClient } from '../../src/oauth/oauth-client.js';
import type { KmsStandIn } from '../support/kms-stand-in.js';
import { makeTestServices, type TestServices } from '../support/service-jwt.js';
import { seedSealedLink } from '../support/stack.js';

/**
 * The whole service wired by the production buildAdapters + buildFeatures, listening on loopback,
 * with its keys in the KMS stand-in through the real AWS SDK (test/support/stack.ts always uses the
 * local key provider). The test chooses the provider's budget, breaker and clock.
 */
export interface KmsStack {
  readonly url: string;
  readonly services: TestServices;
  readonly keys: AwsKmsKeyProvider;
  /** A sealed active link with a grant for crm-sync, sealed through a vault of its own so the service's data-key cache stays cold. */
  seedLink(id: string, accessToken: string): Promise<LinkRecord>;
  close(): Promise<void>;
}

export type KmsStackProviderOptions = Partial<
  Pick<AwsKmsKeyProviderOptions, 'callBudgetMs' | 'breakerOpenMs' | 'pingCacheMs' | 'now'>
>;

const refuse = () => Promise.reject(new Error('this test expected no provider call'));
const REFUSE_OAUTH: OAuthClient = {
  refresh: refuse,
  revoke: refuse,
  startAuthorization: refuse,
  completeAuthorization: refuse,
};

export async function startKmsStack(
  kms: KmsStandIn,
  providerOptions: KmsStackProviderOptions = {},
): Promise<KmsStack> {
  const dir = mkdtempSync(join(tmpdir(), 'lv-kms-stack-'));
  const services = makeTestServices();
  const servicesFile = join(dir, 'services.json');
  writeFileSync(servicesFile, JSON.stringify(services.servicesFile));
  const arn = kms.createKey();
  const config = loadConfig(
    {
      NODE_ENV: 'test',
      LINKVAULT_PUBLIC_URL: 'http://127.0.0.1:3000',
      LINKVAULT_SANDBOX: 'false',
      LINKVAULT_KEYS: 'aws-kms',
      LINKVAULT_KMS_KEY_ID: arn,
      AWS_REGION: kms.region,
      AWS_ENDPOINT_URL_KMS: kms.endpoint,
      LINKVAULT_LOG_LEVEL: 'silent',
      LINKVAULT_SERVICES_FILE: servicesFile,
      LINKVAULT_AUDIENCE: services.audience,
      ...services.env,
      LINKVAULT_STORE: 'sqlite',
      LINKVAULT_SQLITE_PATH: join(dir, 'lv.db'),
    },
    dir,
  );
  if (config.keys.kind !== 'aws-kms') throw new Error('expected the aws-kms configuration');
  const metrics = new Metrics();
  const keys = new AwsKmsKeyProvider({
    keyId: config.keys.kmsKeyId,
    region: config.keys.region,
    endpoint: config.keys.endpoint,
    credentials: { accessKeyId: 'AKIDSTANDIN0000000000', secretAccessKey: 'stand-in-secret' },
    metrics,
    ...providerOptions,
  });
  const log = createLogger({ level: 'silent' });
  const adapters = await buildAdapters(config, { log, metrics, keys });
  const features = await buildFeatures(adapters, {
    oauth: REFUSE_OAUTH,
    auditHmacKey: randomBytes(32),
    startRefresher: false,
    startWorker: false,
  });
  const listener = buildListener(buildApp(adapters, features), features);
  const server: Server = createServer(listener);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  // Seeding seals through a vault of its own: the service's vault has never seen the data key.
  const seedVault = createVault({ keys, metrics: new Metrics(), maxEntries: 0, maxAgeMs: 0 });

  return {
    url,
    services,
    keys,
    async seedLink(id, accessToken) {
      const saved = await seedSealedLink(
        { store: adapters.store, vault: seedVault, now: Date.now },
        { id, accessToken, grantedScopes: ['read'] },
      );
      const at = saved.updatedAtMs;
      await adapters.store.putGrant({
        id: `grt_${id}`,
        serviceId: 'crm-sync',
        tenantId: null,
        providerId: null,
        linkId: id,
        scopes: null,
        purpose: 'tests',
        createdAtMs: at,
        expiresAtMs: null,
      });
      return saved;
    },
    async close() {
      await Promise.allSettled(features.background.map((task) => task.stop()));
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await adapters.close();
      keys.destroy();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
