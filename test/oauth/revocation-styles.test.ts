import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createOAuthClient } from '../../src/oauth/openid-oauth-client.js';
import type { OAuthClient } from '../../src/oauth/oauth-client.js';
import { Secret } from '../../src/secret.js';
import {
  startIntercomStandIn,
  startTokenEndpointStandIn,
  type IntercomStandIn,
  type TokenEndpointStandIn,
} from '../support/provider-stand-ins.js';
import { loadCatalogue } from '../../src/providers/catalogue.js';
import { errorWithCode } from '../support/error-with-code.js';
import {
  BUILTIN_PROVIDERS_FILE,
  createTestCatalogue,
  shippedEntry,
  testProviderEntry,
} from '../support/test-catalogue.js';

const config = { providerTimeoutMs: 1000, allowInsecureProviderUrls: true };

describe('when a token is revoked at an RFC 7009 endpoint, then 200 confirms and 503/429 are provider_unavailable with Retry-After', () => {
  let standIn: TokenEndpointStandIn;
  let oauth: OAuthClient;
  before(async () => {
    standIn = await startTokenEndpointStandIn();
    const entry = testProviderEntry('rfc', standIn.url, {
      scopes: { default: [], separator: ' ' },
      token_endpoint_auth_method: 'client_secret_basic',
      api_hosts: [],
    });
    oauth = createOAuthClient({ catalogue: createTestCatalogue([entry], standIn.client), config });
  });
  after(() => standIn.close());
  const revoke = (t: string) =>
    oauth.revoke({
      providerId: 'rfc',
      endpointVariables: {},
      token: new Secret(t),
      tokenTypeHint: 'refresh_token',
    });

  it('confirms a live token (and it is dead afterwards) and an unknown one', async () => {
    standIn.addRefreshToken('rt-live');
    assert.equal(await revoke('rt-live'), 'confirmed');
    assert.equal(standIn.isActive('rt-live'), false);
    assert.equal(await revoke('rt-never-issued'), 'confirmed');
  });

  it('503 + Retry-After → provider_unavailable (RFC 7009 §2.2.1: the token may still be alive)', async () => {
    standIn.setRevocationBehaviour({ kind: 'status', status: 503, retryAfter: '7' });
    standIn.addRefreshToken('rt-503');
    try {
      await assert.rejects(
        revoke('rt-503'),
        errorWithCode('provider_unavailable', (err) => assert.equal(err.retryAfterSeconds, 7)),
      );
      assert.equal(standIn.isActive('rt-503'), true);
    } finally {
      standIn.setRevocationBehaviour({ kind: 'normal' });
    }
  });

  it('a rate-limited endpoint answers 429 + Retry-After past N per second', async () => {
    standIn.setRevocationRateLimit(2);
    try {
      const before = standIn.revocationCounts();
      const results = await Promise.allSettled(
        Array.from({ length: 6 }, (_, i) => revoke(`rt-burst-${i}`)),
      );
      const after = standIn.revocationCounts();
      assert.equal(after.requests - before.requests, 6, 'one request per call, no retries');
      const limited = results.filter((r) => r.status === 'rejected');
      assert.equal(limited.length, after.rateLimited - before.rateLimited);
      assert.ok(limited.length >= 1);
      for (const r of limited)
        errorWithCode('provider_unavailable', (err) => assert.equal(err.retryAfterSeconds, 1))(
          (r as PromiseRejectedResult).reason,
        );
    } finally {
      standIn.setRevocationRateLimit(null);
    }
  });

  it('a revocation that never answers → provider_unavailable', async () => {
    standIn.setRevocationBehaviour({ kind: 'hang' });
    try {
      await assert.rejects(revoke('rt-hang'), errorWithCode('provider_unavailable'));
    } finally {
      standIn.setRevocationBehaviour({ kind: 'normal' });
    }
  });
});

describe('when the catalogue says a provider has no revocation, then revoke() is unsupported without a request', () => {
  it('answers unsupported for Microsoft, Attio and Copper', async () => {
    const catalogue = loadCatalogue({
      builtinFile: BUILTIN_PROVIDERS_FILE,
      extraFile: null,
      config: {
        allowInsecureProviderUrls: false,
        providerCredentialFor: () => ({ clientId: 'a', clientSecret: 'b' }),
      },
    });
    const oauth = createOAuthClient({
      catalogue,
      config,
      fetch: () => {
        throw new Error('no request expected');
      },
    });
    for (const providerId of ['microsoft', 'attio', 'copper']) {
      assert.equal(
        await oauth.revoke({
          providerId,
          endpointVariables: { tenant: 'common' },
          token: new Secret('t'),
          tokenTypeHint: 'refresh_token',
        }),
        'unsupported',
      );
    }
  });
});

describe('when Intercom is disconnected, then the uninstall call carries the token as a Bearer', () => {
  let intercom: IntercomStandIn;
  let oauth: OAuthClient;
  const client = { clientId: 'ic', clientSecret: 'ic-secret' };
  const redirect = 'http://127.0.0.1:1/v1/oauth/callback/intercom';
  before(async () => {
    intercom = await startIntercomStandIn(client);
    const entry = shippedEntry('intercom', {
      authorization_url: `${intercom.url}/{region}oauth`,
      token_url: `${intercom.url}/{region}auth/eagle/token`,
      revocation: {
        style: 'intercom_uninstall',
        url: `${intercom.url}/{region}auth/uninstall`,
        token_type_hint: 'access_token',
      },
      template_variables: [
        {
          name: 'region',
          description: 'region',
          values: { us: '' },
          default: 'us',
          session_parameter: 'region',
        },
      ],
    });
    oauth = createOAuthClient({ catalogue: createTestCatalogue([entry], client), config });
  });
  after(() => intercom.close());

  it('connects (no expiry, no refresh token), uninstalls, and treats a dead token as confirmed', async () => {
    const start = await oauth.startAuthorization({
      providerId: 'intercom',
      endpointVariables: { region: 'us' },
      redirectUri: redirect,
    });
    assert.equal(
      start.url.searchParams.has('scope'),
      false,
      'Intercom permissions live on the app',
    );
    const callback = new URL(redirect);
    callback.searchParams.set('code', 'ic-code');
    callback.searchParams.set('state', start.checks.state.reveal());
    const done = await oauth.completeAuthorization({
      providerId: 'intercom',
      endpointVariables: { region: 'us' },
      callbackUrl: callback,
      checks: start.checks,
    });
    assert.equal(done.tokens.expiresAtMs, null);
    assert.equal(done.tokens.refreshToken, null);
    assert.deepEqual(done.tokens.extra, {}, 'the duplicate `token` member is not kept');
    assert.equal(
      await oauth.revoke({
        providerId: 'intercom',
        endpointVariables: { region: 'us' },
        token: done.tokens.accessToken,
        tokenTypeHint: 'access_token',
      }),
      'confirmed',
    );
    assert.equal(intercom.isActive(done.tokens.accessToken.reveal()), false);
    assert.equal(
      await oauth.revoke({
        providerId: 'intercom',
        endpointVariables: { region: 'us' },
        token: done.tokens.accessToken,
        tokenTypeHint: 'access_token',
      }),
      'confirmed',
    );
    assert.equal(intercom.requests(intercom.uninstallPath), 2);
  });
});
