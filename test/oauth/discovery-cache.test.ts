import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LinkvaultError } from '../../src/errors.js';
import { createOAuthClient } from '../../src/oauth/openid-oauth-client.js';
import { freePort } from '../support/free-port.js';
import { startOidcServer } from '../support/oidc-server.js';
import { createTestCatalogue } from '../support/test-catalogue.js';

const REDIRECT = 'http://127.0.0.1:1/v1/oauth/callback/test';
const CLIENT = {
  client_id: 'linkvault',
  client_secret: 'linkvault-secret',
  redirect_uris: [REDIRECT],
};
const CREDENTIALS = { clientId: CLIENT.client_id, clientSecret: CLIENT.client_secret };
const config = { providerTimeoutMs: 3000, allowInsecureProviderUrls: true };

describe('when an OIDC provider is used many times, then its discovery document is fetched once', () => {
  it('shares one fetch among concurrent first calls and reuses it later', async () => {
    const server = await startOidcServer({ mode: 'oidc', clients: [CLIENT] });
    try {
      const oauth = createOAuthClient({
        catalogue: createTestCatalogue([server.catalogueEntry('test')], CREDENTIALS),
        config,
      });
      const starts = await Promise.all(
        Array.from({ length: 20 }, () =>
          oauth.startAuthorization({
            providerId: 'test',
            endpointVariables: {},
            redirectUri: REDIRECT,
          }),
        ),
      );
      assert.equal(
        new Set(starts.map((s) => s.checks.state.reveal())).size,
        20,
        'fresh state every time',
      );
      const done = await oauth.completeAuthorization({
        providerId: 'test',
        endpointVariables: {},
        callbackUrl: await server.completeLogin(starts[0]!.url, { accountId: 'alice' }),
        checks: starts[0]!.checks,
      });
      await Promise.all(
        Array.from({ length: 5 }, () =>
          oauth.refresh({
            providerId: 'test',
            endpointVariables: {},
            refreshToken: done.tokens.refreshToken!,
          }),
        ),
      );
      await oauth.revoke({
        providerId: 'test',
        endpointVariables: {},
        token: done.tokens.refreshToken!,
        tokenTypeHint: 'refresh_token',
      });
      assert.equal(server.requestCounts().discovery, 1);
    } finally {
      await server.close();
    }
  });

  it('does not cache a failed discovery: the next call tries again', async () => {
    const port = await freePort();
    const issuer = `http://127.0.0.1:${port}`;
    const entry = {
      id: 'test',
      name: 'Late AS',
      category: 'test',
      issuer,
      revocation: { style: 'rfc7009', url: null, token_type_hint: 'refresh_token' },
      scopes: { default: ['openid'], separator: ' ' },
      pkce: true,
      token_endpoint_auth_method: 'client_secret_post',
      authorization_params: {},
      template_variables: [],
      capture_metadata: [],
      api_hosts: ['127.0.0.1'],
      privacy: {
        settings_url: null,
        instructions: 'Remove the app.',
        policy_url: 'https://example.test/privacy',
      },
    };
    const oauth = createOAuthClient({
      catalogue: createTestCatalogue([entry], CREDENTIALS),
      config,
    });
    await assert.rejects(
      oauth.startAuthorization({
        providerId: 'test',
        endpointVariables: {},
        redirectUri: REDIRECT,
      }),
      (err: unknown) =>
        err instanceof LinkvaultError &&
        err.code === 'provider_unavailable' &&
        err.extra?.maybe_delivered === false,
    );
    const server = await startOidcServer({ mode: 'oidc', clients: [CLIENT], port });
    try {
      const start = await oauth.startAuthorization({
        providerId: 'test',
        endpointVariables: {},
        redirectUri: REDIRECT,
      });
      assert.equal(start.checks.expectedIssuer, issuer);
      await oauth.startAuthorization({
        providerId: 'test',
        endpointVariables: {},
        redirectUri: REDIRECT,
      });
      assert.equal(server.requestCounts().discovery, 1);
    } finally {
      await server.close();
    }
  });

  it('a catalogue issuer with no discovery document is provider_misconfigured', async () => {
    const server = await startOidcServer({ mode: 'oidc', clients: [CLIENT] });
    try {
      const entry = server.catalogueEntry('test', { issuer: `${server.issuer}/not-an-issuer` });
      const oauth = createOAuthClient({
        catalogue: createTestCatalogue([entry], CREDENTIALS),
        config,
      });
      await assert.rejects(
        oauth.startAuthorization({
          providerId: 'test',
          endpointVariables: {},
          redirectUri: REDIRECT,
        }),
        (err: unknown) => err instanceof LinkvaultError && err.code === 'provider_misconfigured',
      );
    } finally {
      await server.close();
    }
  });
});
