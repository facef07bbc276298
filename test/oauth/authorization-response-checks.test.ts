import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { LinkvaultError } from '../../src/errors.js';
import { createOAuthClient } from '../../src/oauth/openid-oauth-client.js';
import type { AuthorizationStart, OAuthClient } from '../../src/oauth/oauth-client.js';
import { Secret } from '../../src/secret.js';
import { startOidcServer, type OidcServer } from '../support/oidc-server.js';
import { createTestCatalogue } from '../support/test-catalogue.js';

const REDIRECT = 'http://127.0.0.1:1/v1/oauth/callback/test';
const CLIENT = {
  client_id: 'linkvault',
  client_secret: 'linkvault-secret',
  redirect_uris: [REDIRECT],
};
const CREDENTIALS = { clientId: CLIENT.client_id, clientSecret: CLIENT.client_secret };

function isError(code: string, check: (err: LinkvaultError) => void = () => undefined) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof LinkvaultError, `expected LinkvaultError, got ${String(err)}`);
    assert.equal(err.code, code);
    check(err);
    return true;
  };
}

describe('when an authorization response is checked, then state, issuer (RFC 9207) and provider errors are enforced before any exchange', () => {
  let server: OidcServer;
  let other: OidcServer;
  let oauth: OAuthClient;

  before(async () => {
    server = await startOidcServer({ mode: 'oidc', clients: [CLIENT] });
    other = await startOidcServer({ mode: 'oidc', clients: [CLIENT] });
    oauth = createOAuthClient({
      catalogue: createTestCatalogue([server.catalogueEntry('test')], CREDENTIALS),
      config: { providerTimeoutMs: 5000, allowInsecureProviderUrls: true },
    });
  });
  after(async () => {
    await server.close();
    await other.close();
  });

  async function login(): Promise<{ start: AuthorizationStart; callback: URL }> {
    const start = await oauth.startAuthorization({
      providerId: 'test',
      endpointVariables: {},
      redirectUri: REDIRECT,
    });
    return { start, callback: await server.completeLogin(start.url, { accountId: 'alice' }) };
  }

  it('the server advertises iss in authorization responses and sends it', async () => {
    const { callback } = await login();
    assert.equal(callback.searchParams.get('iss'), server.issuer);
  });

  it('rejects an iss naming another server (mix-up) without calling the token endpoint', async () => {
    const { start, callback } = await login();
    callback.searchParams.set('iss', other.issuer);
    await assert.rejects(
      oauth.completeAuthorization({
        providerId: 'test',
        endpointVariables: {},
        callbackUrl: callback,
        checks: start.checks,
      }),
      isError('issuer_mismatch'),
    );
    assert.equal(server.tokenRequests().authorization_code ?? 0, 0);
  });

  it('rejects a response without iss when the metadata advertises it', async () => {
    const { start, callback } = await login();
    callback.searchParams.delete('iss');
    await assert.rejects(
      oauth.completeAuthorization({
        providerId: 'test',
        endpointVariables: {},
        callbackUrl: callback,
        checks: start.checks,
      }),
      isError('issuer_mismatch'),
    );
    assert.equal(server.tokenRequests().authorization_code ?? 0, 0);
  });

  it('rejects a response whose state is not this flow’s', async () => {
    const { start, callback } = await login();
    const checks = { ...start.checks, state: new Secret('someone-elses-state-value-0000000000') };
    await assert.rejects(
      oauth.completeAuthorization({
        providerId: 'test',
        endpointVariables: {},
        callbackUrl: callback,
        checks,
      }),
      isError('invalid_state'),
    );
  });

  it('rejects a tampered PKCE verifier at the token endpoint (invalid_grant → reauth_required)', async () => {
    const { start, callback } = await login();
    const checks = { ...start.checks, codeVerifier: new Secret('x'.repeat(43)) };
    await assert.rejects(
      oauth.completeAuthorization({
        providerId: 'test',
        endpointVariables: {},
        callbackUrl: callback,
        checks,
      }),
      isError('reauth_required'),
    );
  });

  it('rejects an ID token whose nonce is not this flow’s', async () => {
    const { start, callback } = await login();
    const checks = { ...start.checks, nonce: new Secret('not-the-nonce-that-was-sent') };
    await assert.rejects(
      oauth.completeAuthorization({
        providerId: 'test',
        endpointVariables: {},
        callbackUrl: callback,
        checks,
      }),
      isError('invalid_token_response'),
    );
  });

  it('turns error=access_denied into provider_denied with the registered code', async () => {
    const start = await oauth.startAuthorization({
      providerId: 'test',
      endpointVariables: {},
      redirectUri: REDIRECT,
    });
    const callback = await server.completeLogin(start.url, { accountId: 'alice', deny: true });
    assert.equal(callback.searchParams.get('error'), 'access_denied');
    await assert.rejects(
      oauth.completeAuthorization({
        providerId: 'test',
        endpointVariables: {},
        callbackUrl: callback,
        checks: start.checks,
      }),
      isError('provider_denied', (err) => {
        assert.deepEqual(err.extra, { provider_error: 'access_denied' });
        assert.doesNotMatch(err.message, /The test user said no/);
      }),
    );
  });

  it('reports an unregistered error code as unknown, never echoing it', async () => {
    const start = await oauth.startAuthorization({
      providerId: 'test',
      endpointVariables: {},
      redirectUri: REDIRECT,
    });
    const callback = new URL(REDIRECT);
    callback.searchParams.set('error', '<script>alert(1)</script>');
    callback.searchParams.set('state', start.checks.state.reveal());
    callback.searchParams.set('iss', server.issuer);
    await assert.rejects(
      oauth.completeAuthorization({
        providerId: 'test',
        endpointVariables: {},
        callbackUrl: callback,
        checks: start.checks,
      }),
      isError('provider_denied', (err) => {
        assert.deepEqual(err.extra, { provider_error: 'unknown' });
        assert.doesNotMatch(`${err.message} ${err.detail ?? ''}`, /script/);
      }),
    );
  });

  it('checks the issuer before the error: an error response from another server is a mix-up', async () => {
    const start = await oauth.startAuthorization({
      providerId: 'test',
      endpointVariables: {},
      redirectUri: REDIRECT,
    });
    const callback = new URL(REDIRECT);
    callback.searchParams.set('error', 'access_denied');
    callback.searchParams.set('state', start.checks.state.reveal());
    callback.searchParams.set('iss', other.issuer);
    await assert.rejects(
      oauth.completeAuthorization({
        providerId: 'test',
        endpointVariables: {},
        callbackUrl: callback,
        checks: start.checks,
      }),
      isError('issuer_mismatch'),
    );
  });

  it('refuses an unknown or disabled provider', async () => {
    await assert.rejects(
      oauth.startAuthorization({
        providerId: 'nope',
        endpointVariables: {},
        redirectUri: REDIRECT,
      }),
      isError('provider_not_found'),
    );
  });
});
