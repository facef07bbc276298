import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createOAuthClient } from '../../src/oauth/openid-oauth-client.js';
import { createTestCatalogue } from '../support/test-catalogue.js';

/**
 * A loopback stand-in for a provider whose issuer names the tenant (Microsoft Entra's
 * https://login.microsoftonline.com/{tenant}/v2.0): every tenant path has its own discovery
 * document, and the stand-in counts the discovery requests per tenant.
 */
async function startTenantIssuer(): Promise<{
  baseUrl: string;
  discoveries: Map<string, number>;
  close(): Promise<void>;
}> {
  const discoveries = new Map<string, number>();
  const server: Server = createServer((req, res) => {
    const match = /^\/([a-z0-9]+)\/v2\.0\/\.well-known\/openid-configuration$/.exec(req.url ?? '');
    if (!match) {
      res.writeHead(404).end();
      return;
    }
    const tenant = match[1]!;
    discoveries.set(tenant, (discoveries.get(tenant) ?? 0) + 1);
    const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}/${tenant}/v2.0`;
    res.writeHead(200, { 'content-type': 'application/json' }).end(
      JSON.stringify({
        issuer,
        authorization_endpoint: `${issuer}/authorize`,
        token_endpoint: `${issuer}/token`,
        jwks_uri: `${issuer}/keys`,
        response_types_supported: ['code'],
        code_challenge_methods_supported: ['S256'],
      }),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    baseUrl,
    discoveries,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

const REDIRECT = 'http://127.0.0.1:1/v1/oauth/callback/tenanted';

function tenantedEntry(baseUrl: string): Record<string, unknown> {
  return {
    id: 'tenanted',
    name: 'Tenanted AS',
    category: 'test',
    issuer: `${baseUrl}/{tenant}/v2.0`,
    revocation: { style: 'none', url: null, token_type_hint: 'refresh_token' },
    scopes: { default: ['openid'], separator: ' ' },
    pkce: true,
    token_endpoint_auth_method: 'client_secret_post',
    authorization_params: {},
    template_variables: [
      {
        name: 'tenant',
        description: 'tenant',
        pattern: 't[0-9]{1,5}',
        default: 't0',
        format: 'text',
        session_parameter: 'tenant',
      },
    ],
    capture_metadata: [],
    api_hosts: ['127.0.0.1'],
    privacy: {
      settings_url: null,
      instructions: 'Remove the app.',
      policy_url: 'https://example.test/privacy',
    },
  };
}

describe('when a templated issuer is started with many distinct tenants, then the discovery cache stays bounded', () => {
  let issuer: Awaited<ReturnType<typeof startTenantIssuer>>;
  before(async () => {
    issuer = await startTenantIssuer();
  });
  after(async () => {
    await issuer.close();
  });

  function client(options: { maxEntries: number; ttlMs: number; now: () => number }) {
    return createOAuthClient({
      catalogue: createTestCatalogue([tenantedEntry(issuer.baseUrl)]),
      config: { providerTimeoutMs: 3000, allowInsecureProviderUrls: true },
      discoveryCacheMaxEntries: options.maxEntries,
      discoveryCacheTtlMs: options.ttlMs,
      now: options.now,
    });
  }

  const start = (oauth: ReturnType<typeof client>, tenant: string) =>
    oauth.startAuthorization({
      providerId: 'tenanted',
      endpointVariables: { tenant },
      redirectUri: REDIRECT,
    });

  it('keeps only the most recently used tenants: an evicted one is fetched again, a kept one is not', async () => {
    issuer.discoveries.clear();
    const oauth = client({ maxEntries: 5, ttlMs: 3_600_000, now: Date.now });
    for (let i = 0; i < 50; i += 1) await start(oauth, `t${i}`);
    assert.equal(issuer.discoveries.size, 50);
    // The five most recent are cached: no request.
    for (let i = 45; i < 50; i += 1) await start(oauth, `t${i}`);
    assert.deepEqual(
      [45, 46, 47, 48, 49].map((i) => issuer.discoveries.get(`t${i}`)),
      [1, 1, 1, 1, 1],
    );
    // Every older one was evicted: asking again fetches again.
    for (let i = 0; i < 45; i += 1) await start(oauth, `t${i}`);
    assert.deepEqual(
      Array.from({ length: 45 }, (_, i) => issuer.discoveries.get(`t${i}`)),
      Array.from({ length: 45 }, () => 2),
    );
  });

  it('shares one in-flight discovery among concurrent starts of one tenant', async () => {
    issuer.discoveries.clear();
    const oauth = client({ maxEntries: 5, ttlMs: 3_600_000, now: Date.now });
    await Promise.all(Array.from({ length: 10 }, () => start(oauth, 't7')));
    assert.equal(issuer.discoveries.get('t7'), 1);
  });

  it('fetches a document again once its time to live has passed', async () => {
    issuer.discoveries.clear();
    let nowMs = 1_000_000;
    const oauth = client({ maxEntries: 5, ttlMs: 60_000, now: () => nowMs });
    await start(oauth, 't1');
    nowMs += 59_999;
    await start(oauth, 't1');
    assert.equal(issuer.discoveries.get('t1'), 1);
    nowMs += 1;
    await start(oauth, 't1');
    assert.equal(issuer.discoveries.get('t1'), 2);
  });
});
