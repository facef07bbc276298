import { strict as assert } from 'node:assert';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../../../src/config.js';
import { LocalKeyProvider } from '../../../src/keys/local-key-provider.js';
import { createVault } from '../../../src/keys/vault.js';
import { sealTokenSet } from '../../../src/links/sealing/token-vault.js';
import { createLogger } from '../../../src/log.js';
import { startService, type RunningService } from '../../../src/main.js';
import { Metrics } from '../../../src/metrics.js';
import type { TokenSet } from '../../../src/oauth/oauth-client.js';
import { Secret } from '../../../src/secret.js';
import { SqliteStore } from '../../../src/store/sqlite/sqlite-store.js';
import type { LinkRecord } from '../../../src/links/link.js';
import {
  startTokenEndpointStandIn,
  type TokenEndpointStandIn,
} from '../../support/provider-stand-ins.js';
import { makeTestServices, type TestServices } from '../../support/service-jwt.js';

/**
 * Per-link metadata the catalogue names (Pipedrive's api_domain, Zoho's api_domain, Salesforce's
 * instance_url) is re-read from every refresh answer, under the same api_hosts check as at
 * connect. Runs the real service (main.ts's wiring) with the built-in Pipedrive entry pointed at a
 * token endpoint stand-in that answers the api_domain the test chooses.
 */
describe('metadata captured on refresh', () => {
  let dir: string;
  let standIn: TokenEndpointStandIn;
  let store: SqliteStore;
  let service: RunningService;
  let services: TestServices;
  let sealLink: (link: LinkRecord, tokens: TokenSet) => Promise<LinkRecord>;
  let link: LinkRecord;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'lv-refresh-metadata-'));
    standIn = await startTokenEndpointStandIn({ rotate: true });
    const builtin = (
      JSON.parse(
        readFileSync(join(import.meta.dirname, '../../../config/providers.json'), 'utf8'),
      ) as { providers: Record<string, unknown>[] }
    ).providers;
    const pipedrive = builtin.find((p) => p.id === 'pipedrive')!;
    const entry = {
      ...pipedrive,
      authorization_url: `${standIn.url}/authorize`,
      token_url: standIn.tokenUrl,
      revocation: {
        style: 'rfc7009',
        url: standIn.revocationUrl,
        token_type_hint: 'refresh_token',
      },
    };
    writeFileSync(join(dir, 'providers.json'), JSON.stringify({ providers: [entry] }));
    services = makeTestServices();
    writeFileSync(join(dir, 'services.json'), JSON.stringify(services.servicesFile));
    const config = loadConfig(
      {
        ...services.env,
        LINKVAULT_PORT: '0',
        LINKVAULT_HOST: '127.0.0.1',
        LINKVAULT_SQLITE_PATH: join(dir, 'lv.db'),
        LINKVAULT_LOCAL_KEY_FILE: join(dir, 'master.key'),
        LINKVAULT_SERVICES_FILE: join(dir, 'services.json'),
        LINKVAULT_PROVIDERS_FILE: join(dir, 'providers.json'),
        LINKVAULT_PROVIDER_PIPEDRIVE_CLIENT_ID: standIn.client.clientId,
        LINKVAULT_PROVIDER_PIPEDRIVE_CLIENT_SECRET: standIn.client.clientSecret,
        LINKVAULT_ALLOW_INSECURE_PROVIDER_URLS: 'true',
        LINKVAULT_SANDBOX: 'false',
        LINKVAULT_BACKGROUND_REFRESH: 'false',
      },
      dir,
    );
    const metrics = new Metrics();
    const keys = await LocalKeyProvider.load({
      keyFile: join(dir, 'master.key'),
      mayGenerate: true,
      metrics,
    });
    const vault = createVault({ keys, metrics, maxEntries: 100, maxAgeMs: 60_000 });
    store = new SqliteStore({ path: join(dir, 'lv.db') });
    service = await startService(config, {
      store,
      keys,
      metrics,
      log: createLogger({ level: 'silent' }),
    });
    sealLink = async (l, tokens) => {
      const saved = await store.saveLink(
        { ...l, tokens: await sealTokenSet(vault, l, tokens, null) },
        null,
      );
      assert.ok(saved);
      return saved;
    };
  });
  after(async () => {
    await service.close();
    await store.close();
    await standIn.close();
    rmSync(dir, { recursive: true, force: true });
  });

  before(async () => {
    const at = Date.now();
    const refreshToken = 'rt_pipedrive_metadata_test';
    standIn.addRefreshToken(refreshToken);
    link = await sealLink(
      {
        id: 'lnk_pipedrive_metadata',
        tenantId: 'acme',
        userId: 'alice',
        providerId: 'pipedrive',
        status: 'active',
        version: 0,
        providerAccountId: null,
        grantedScopes: ['api:read'],
        metadata: { api_domain: 'https://oldco.pipedrive.com' },
        endpointVariables: {},
        tokens: null,
        accessTokenExpiresAtMs: at - 1000,
        createdAtMs: at - 600_000,
        updatedAtMs: at - 600_000,
        lastRefreshedAtMs: null,
        lastUsedAtMs: null,
      },
      {
        accessToken: new Secret('at_expired'),
        refreshToken: new Secret(refreshToken),
        idToken: null,
        tokenType: 'bearer',
        expiresAtMs: at - 1000,
        scopes: ['api:read'],
        extra: {},
      },
    );
    await store.putGrant({
      id: 'grt_pipedrive',
      serviceId: 'billing',
      tenantId: null,
      providerId: null,
      linkId: link.id,
      scopes: null,
      purpose: 'test',
      createdAtMs: at,
      expiresAtMs: null,
    });
  });

  async function token(body: object): Promise<{ status: number; body: Record<string, unknown> }> {
    const res = await fetch(`${service.url}/v1/links/${link.id}/token`, {
      method: 'POST',
      headers: { authorization: services.bearer('billing-hs'), 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  it('when a refresh answers another api_domain within the api hosts, then the link takes it and the caller gets it with the new token', async () => {
    standIn.setAnswerExtra({ api_domain: 'https://newco.pipedrive.com' });
    const res = await token({});
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.notEqual(res.body.access_token, 'at_expired');
    assert.deepEqual(res.body.metadata, { api_domain: 'https://newco.pipedrive.com' });
    assert.deepEqual((await store.getLink(link.id))!.metadata, {
      api_domain: 'https://newco.pipedrive.com',
    });
    assert.equal(standIn.tokenRequests().refresh_token, 1);
  });

  /**
   * Moves the link's last refresh a minute back: a token refreshed moments ago is served to a
   * forced refresh instead of being refreshed again (FORCED_REFRESH_INTERVAL_MS).
   */
  async function refreshedAMinuteAgo(): Promise<LinkRecord> {
    const stored = (await store.getLink(link.id))!;
    const saved = await store.saveLink(
      { ...stored, lastRefreshedAtMs: (stored.lastRefreshedAtMs ?? Date.now()) - 60_000 },
      stored.version,
    );
    assert.ok(saved);
    return saved;
  }

  it('when a refresh answers an api_domain outside the api hosts, then the refresh stands but the metadata is kept as it was', async () => {
    standIn.setAnswerExtra({ api_domain: 'https://attacker.example.com' });
    const before = await refreshedAMinuteAgo();
    const res = await token({ force_refresh: true });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(res.body.metadata, { api_domain: 'https://newco.pipedrive.com' });
    const after = (await store.getLink(link.id))!;
    assert.equal(after.version, before.version + 1, 'the new tokens are stored');
    assert.deepEqual(after.metadata, { api_domain: 'https://newco.pipedrive.com' });
  });

  it('when a refresh answers no api_domain, then the one held is kept', async () => {
    standIn.setAnswerExtra({});
    await refreshedAMinuteAgo();
    const refreshesBefore = standIn.tokenRequests().refresh_token ?? 0;
    const res = await token({ force_refresh: true });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(standIn.tokenRequests().refresh_token, refreshesBefore + 1);
    assert.deepEqual(res.body.metadata, { api_domain: 'https://newco.pipedrive.com' });
  });
});
