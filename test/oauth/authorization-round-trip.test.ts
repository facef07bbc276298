import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { LinkvaultError } from '../../src/errors.js';
import { createOAuthClient } from '../../src/oauth/openid-oauth-client.js';
import type { OAuthClient } from '../../src/oauth/oauth-client.js';
import { startOidcServer, type OidcServer } from '../support/oidc-server.js';
import { createTestCatalogue } from '../support/test-catalogue.js';

const REDIRECT = 'http://127.0.0.1:1/v1/oauth/callback/test';
const CLIENT = {
  client_id: 'linkvault',
  client_secret: 'linkvault-secret',
  redirect_uris: [REDIRECT],
};
const CREDENTIALS = { clientId: CLIENT.client_id, clientSecret: CLIENT.client_secret };

for (const mode of ['oidc', 'oauth'] as const) {
  describe(`when a user connects through a real ${mode} authorization server, then the adapter completes the flow`, () => {
    let server: OidcServer;
    let oauth: OAuthClient;

    before(async () => {
      server = await startOidcServer({ mode, clients: [CLIENT], rotateRefreshTokens: true });
      const catalogue = createTestCatalogue([server.catalogueEntry('test')], CREDENTIALS);
      oauth = createOAuthClient({
        catalogue,
        config: { providerTimeoutMs: 5000, allowInsecureProviderUrls: true },
      });
    });
    after(() => server.close());

    it('sends state, PKCE S256 and (OIDC only) a nonce, and exchanges the code once', async () => {
      const start = await oauth.startAuthorization({
        providerId: 'test',
        endpointVariables: {},
        redirectUri: REDIRECT,
      });
      const q = start.url.searchParams;
      assert.equal(start.url.origin + start.url.pathname, `${server.issuer}/auth`);
      assert.equal(q.get('response_type'), 'code');
      assert.equal(q.get('client_id'), CLIENT.client_id);
      assert.equal(q.get('redirect_uri'), REDIRECT);
      assert.equal(q.get('scope'), server.scopes.join(' '));
      assert.equal(q.get('state'), start.checks.state.reveal());
      assert.ok(
        Buffer.from(start.checks.state.reveal(), 'base64url').length >= 16,
        'state carries at least 128 bits',
      );
      assert.equal(q.get('code_challenge_method'), 'S256');
      const expectedChallenge = createHash('sha256')
        .update(start.checks.codeVerifier!.reveal())
        .digest('base64url');
      assert.equal(q.get('code_challenge'), expectedChallenge);
      if (mode === 'oidc') {
        assert.equal(q.get('nonce'), start.checks.nonce!.reveal());
        assert.equal(start.checks.expectedIssuer, server.issuer);
      } else {
        assert.equal(q.has('nonce'), false);
        assert.equal(start.checks.nonce, null);
        assert.equal(start.checks.expectedIssuer, null);
      }
      assert.equal(start.checks.redirectUri, REDIRECT);

      const callback = await server.completeLogin(start.url, { accountId: 'alice' });
      assert.equal(callback.origin + callback.pathname, REDIRECT);
      const done = await oauth.completeAuthorization({
        providerId: 'test',
        endpointVariables: {},
        callbackUrl: callback,
        checks: start.checks,
      });

      assert.equal(done.tokens.tokenType, 'bearer');
      assert.ok(done.tokens.accessToken.reveal().length > 10);
      assert.ok(done.tokens.refreshToken);
      assert.deepEqual(done.tokens.scopes, ['api:read', 'api:write']);
      assert.ok(
        done.tokens.expiresAtMs !== null &&
          Math.abs(done.tokens.expiresAtMs - (Date.now() + 3600_000)) < 10_000,
      );
      assert.deepEqual(server.tokenRequests(), { authorization_code: 1 });
      const introspection = await server.introspect(done.tokens.accessToken.reveal());
      assert.equal(introspection.active, true);
      assert.equal(introspection.sub, 'alice');
      if (mode === 'oidc') {
        assert.ok(done.tokens.idToken);
        assert.equal(done.idTokenClaims?.sub, 'alice');
        assert.equal(done.idTokenClaims?.nonce, start.checks.nonce!.reveal());
        assert.equal(done.idTokenClaims?.iss, server.issuer);
        assert.equal(done.idTokenClaims?.aud, CLIENT.client_id);
      } else {
        assert.equal(done.tokens.idToken, null);
        assert.equal(done.idTokenClaims, null);
      }
      // Secrets stay wrapped.
      assert.doesNotMatch(JSON.stringify(done), new RegExp(done.tokens.accessToken.reveal()));

      // The same callback replayed: the code is single use at the server (invalid_grant → reauth_required).
      await assert.rejects(
        oauth.completeAuthorization({
          providerId: 'test',
          endpointVariables: {},
          callbackUrl: callback,
          checks: start.checks,
        }),
        (err: unknown) => err instanceof LinkvaultError && err.code === 'reauth_required',
      );
      assert.equal(server.tokenRequests().authorization_code, 2);
    });

    it('refreshes with rotation: a new refresh token comes back and the old one is dead', async () => {
      const start = await oauth.startAuthorization({
        providerId: 'test',
        endpointVariables: {},
        redirectUri: REDIRECT,
      });
      const done = await oauth.completeAuthorization({
        providerId: 'test',
        endpointVariables: {},
        callbackUrl: await server.completeLogin(start.url, { accountId: 'bob' }),
        checks: start.checks,
      });
      const first = done.tokens.refreshToken!;
      const refreshed = await oauth.refresh({
        providerId: 'test',
        endpointVariables: {},
        refreshToken: first,
      });
      assert.ok(refreshed.refreshToken);
      assert.notEqual(refreshed.refreshToken.reveal(), first.reveal());
      assert.notEqual(refreshed.accessToken.reveal(), done.tokens.accessToken.reveal());
      assert.equal((await server.introspect(refreshed.accessToken.reveal())).active, true);
      assert.equal((await server.introspect(first.reveal())).active, false);
      // Reusing the rotated-away token: the server refuses the grant.
      await assert.rejects(
        oauth.refresh({ providerId: 'test', endpointVariables: {}, refreshToken: first }),
        (err: unknown) => err instanceof LinkvaultError && err.code === 'reauth_required',
      );
    });

    it('revokes the refresh token with RFC 7009, after which introspection says inactive', async () => {
      const start = await oauth.startAuthorization({
        providerId: 'test',
        endpointVariables: {},
        redirectUri: REDIRECT,
      });
      const done = await oauth.completeAuthorization({
        providerId: 'test',
        endpointVariables: {},
        callbackUrl: await server.completeLogin(start.url, { accountId: 'carol' }),
        checks: start.checks,
      });
      const before = server.requestCounts().revocation;
      const outcome = await oauth.revoke({
        providerId: 'test',
        endpointVariables: {},
        token: done.tokens.refreshToken!,
        tokenTypeHint: 'refresh_token',
      });
      assert.equal(outcome, 'confirmed');
      assert.equal(server.requestCounts().revocation, before + 1);
      assert.equal((await server.introspect(done.tokens.refreshToken!.reveal())).active, false);
      // RFC 7009 §2.2: revoking an unknown (already revoked) token is still a 200.
      assert.equal(
        await oauth.revoke({
          providerId: 'test',
          endpointVariables: {},
          token: done.tokens.refreshToken!,
          tokenTypeHint: 'refresh_token',
        }),
        'confirmed',
      );
    });
  });
}

describe('when the provider does not rotate refresh tokens, then refresh() returns refreshToken null', () => {
  let server: OidcServer;
  before(async () => {
    server = await startOidcServer({
      mode: 'oauth',
      clients: [CLIENT],
      rotateRefreshTokens: false,
    });
  });
  after(() => server.close());

  it('keeps the old refresh token usable', async () => {
    const oauth = createOAuthClient({
      catalogue: createTestCatalogue([server.catalogueEntry('test')], CREDENTIALS),
      config: { providerTimeoutMs: 5000, allowInsecureProviderUrls: true },
    });
    const start = await oauth.startAuthorization({
      providerId: 'test',
      endpointVariables: {},
      redirectUri: REDIRECT,
    });
    const done = await oauth.completeAuthorization({
      providerId: 'test',
      endpointVariables: {},
      callbackUrl: await server.completeLogin(start.url, { accountId: 'dave' }),
      checks: start.checks,
    });
    const refreshed = await oauth.refresh({
      providerId: 'test',
      endpointVariables: {},
      refreshToken: done.tokens.refreshToken!,
    });
    assert.equal(refreshed.refreshToken, null);
    assert.equal((await server.introspect(done.tokens.refreshToken!.reveal())).active, true);
    const again = await oauth.refresh({
      providerId: 'test',
      endpointVariables: {},
      refreshToken: done.tokens.refreshToken!,
    });
    assert.equal(again.tokenType, 'bearer');
    assert.equal(server.tokenRequests().refresh_token, 2);
  });
});
