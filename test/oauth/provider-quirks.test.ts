import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createOAuthClient } from '../../src/oauth/openid-oauth-client.js';
import type { AuthorizationStart, OAuthClient } from '../../src/oauth/oauth-client.js';
import {
  startGitHubStandIn,
  startSalesforceStandIn,
  startSlackStandIn,
  startZohoStandIn,
  type GitHubStandIn,
  type SalesforceStandIn,
  type SlackStandIn,
  type ZohoStandIn,
} from '../support/provider-stand-ins.js';
import { errorWithCode } from '../support/error-with-code.js';
import { createTestCatalogue, shippedEntry } from '../support/test-catalogue.js';

/**
 * Each shipped catalogue entry keeps its own quirk settings (token_response, auth method,
 * capture_metadata, revocation style); only the hosts are pointed at a loopback stand-in.
 */

const CLIENT = { clientId: 'quirk-client', clientSecret: 'quirk-secret' };
const config = { providerTimeoutMs: 2000, allowInsecureProviderUrls: true };

/** The callback a provider would send after the user consents (code issued out of band by the stand-in). */
function callbackFor(
  redirectUri: string,
  start: AuthorizationStart,
  code: string,
  extra: Record<string, string> = {},
): URL {
  const url = new URL(redirectUri);
  url.searchParams.set('code', code);
  url.searchParams.set('state', start.checks.state.reveal());
  for (const [k, v] of Object.entries(extra)) url.searchParams.set(k, v);
  return url;
}

describe('when Salesforce answers without expires_in, then the token set has no expiry and keeps instance_url and id', () => {
  let sf: SalesforceStandIn;
  let oauth: OAuthClient;
  const redirect = 'http://127.0.0.1:1/v1/oauth/callback/salesforce';
  before(async () => {
    sf = await startSalesforceStandIn(CLIENT);
    const entry = shippedEntry('salesforce', {
      authorization_url: `${sf.url}/services/oauth2/authorize`,
      token_url: `${sf.url}${sf.tokenPath}`,
      revocation: {
        style: 'rfc7009',
        url: `${sf.url}${sf.revokePath}`,
        token_type_hint: 'refresh_token',
      },
      template_variables: [],
      privacy: { ...(shippedEntry('salesforce').privacy as object), settings_url: null },
    });
    oauth = createOAuthClient({ catalogue: createTestCatalogue([entry], CLIENT), config });
  });
  after(() => sf.close());

  it('connects, refreshes (no new refresh token) and revokes', async () => {
    const start = await oauth.startAuthorization({
      providerId: 'salesforce',
      endpointVariables: {},
      redirectUri: redirect,
    });
    assert.equal(start.url.searchParams.get('scope'), 'api refresh_token');
    const done = await oauth.completeAuthorization({
      providerId: 'salesforce',
      endpointVariables: {},
      callbackUrl: callbackFor(redirect, start, 'sf-code'),
      checks: start.checks,
    });
    assert.equal(done.tokens.expiresAtMs, null);
    assert.equal(done.tokens.tokenType, 'bearer');
    assert.deepEqual(done.tokens.scopes, ['api', 'refresh_token']);
    assert.equal(done.tokens.extra.instance_url, sf.instanceUrl);
    assert.equal(done.tokens.extra.id, sf.identityUrl);
    assert.equal('signature' in done.tokens.extra, false, 'signature is not kept');
    assert.equal(done.idTokenClaims, null);

    const refreshed = await oauth.refresh({
      providerId: 'salesforce',
      endpointVariables: {},
      refreshToken: done.tokens.refreshToken!,
    });
    assert.equal(refreshed.refreshToken, null);
    assert.equal(refreshed.expiresAtMs, null);

    assert.equal(
      await oauth.revoke({
        providerId: 'salesforce',
        endpointVariables: {},
        token: done.tokens.refreshToken!,
        tokenTypeHint: 'refresh_token',
      }),
      'confirmed',
    );
    assert.equal(sf.isActive(done.tokens.refreshToken!.reveal()), false);
    // Salesforce answers 400 invalid_token for a token it no longer knows: the token is dead, so confirmed.
    assert.equal(
      await oauth.revoke({
        providerId: 'salesforce',
        endpointVariables: {},
        token: done.tokens.refreshToken!,
        tokenTypeHint: 'refresh_token',
      }),
      'confirmed',
    );
  });
});

describe('when Slack answers HTTP 200 with ok:false, then the Slack error becomes the RFC 6749 error it names', () => {
  let slack: SlackStandIn;
  let oauth: OAuthClient;
  const redirect = 'http://127.0.0.1:1/v1/oauth/callback/slack';
  function slackEntry(url: string): Record<string, unknown> {
    return shippedEntry('slack', {
      authorization_url: `${url}/oauth/v2/authorize`,
      token_url: `${url}/api/oauth.v2.access`,
      revocation: {
        style: 'slack_auth_revoke',
        url: `${url}/api/auth.revoke`,
        token_type_hint: 'access_token',
      },
    });
  }
  before(async () => {
    slack = await startSlackStandIn(CLIENT, { rotation: true });
    oauth = createOAuthClient({
      catalogue: createTestCatalogue([slackEntry(slack.url)], CLIENT),
      config,
    });
  });
  after(() => slack.close());

  async function connect(code: string) {
    const start = await oauth.startAuthorization({
      providerId: 'slack',
      endpointVariables: {},
      redirectUri: redirect,
    });
    return {
      start,
      done: await oauth.completeAuthorization({
        providerId: 'slack',
        endpointVariables: {},
        callbackUrl: callbackFor(redirect, start, code),
        checks: start.checks,
      }),
    };
  }

  it('accepts the bot token (token_type bot) and keeps only non-secret installation metadata', async () => {
    const { start, done } = await connect('slack-code-1');
    assert.equal(start.url.searchParams.get('scope'), 'channels:read,users:read');
    assert.equal(done.tokens.tokenType, 'bearer');
    assert.match(done.tokens.accessToken.reveal(), /^xoxb-/);
    assert.ok(done.tokens.refreshToken);
    assert.deepEqual(done.tokens.scopes, ['channels:read', 'users:read']);
    assert.deepEqual(done.tokens.extra.team, { id: slack.teamId, name: 'Test Workspace' });
    assert.deepEqual(
      done.tokens.extra.authed_user,
      { id: 'U0123TEST', scope: 'search:read' },
      'the user token is not carried along',
    );
    assert.equal('incoming_webhook' in done.tokens.extra, false, 'a webhook URL is a credential');
    assert.doesNotMatch(JSON.stringify(done.tokens.extra), /xox[bpe]-/);
  });

  it('invalid_code → reauth_required; bad_client_secret → provider_misconfigured; ratelimited → provider_unavailable', async () => {
    await assert.rejects(connect('slack-code-1'), errorWithCode('reauth_required'));
    slack.failNextWith('bad_client_secret');
    await assert.rejects(connect('slack-code-2'), errorWithCode('provider_misconfigured'));
    slack.failNextWith('ratelimited');
    await assert.rejects(connect('slack-code-3'), errorWithCode('provider_unavailable'));
    slack.failNextWith('some_new_slack_error');
    await assert.rejects(
      connect('slack-code-4'),
      errorWithCode('provider_error', (err) => assert.equal(err.extra?.provider_error, 'unknown')),
    );
  });

  it('refreshes with rotation and refuses the old refresh token afterwards', async () => {
    const { done } = await connect('slack-code-5');
    const refreshed = await oauth.refresh({
      providerId: 'slack',
      endpointVariables: {},
      refreshToken: done.tokens.refreshToken!,
    });
    assert.ok(refreshed.refreshToken);
    assert.ok(refreshed.expiresAtMs !== null && refreshed.expiresAtMs > Date.now() + 43_000_000);
    await assert.rejects(
      oauth.refresh({
        providerId: 'slack',
        endpointVariables: {},
        refreshToken: done.tokens.refreshToken!,
      }),
      errorWithCode('reauth_required'),
    );
  });

  it('revokes with auth.revoke (token as a Bearer); an already dead token is confirmed too', async () => {
    const { done } = await connect('slack-code-6');
    const token = done.tokens.accessToken;
    assert.equal(slack.isActive(token.reveal()), true);
    assert.equal(
      await oauth.revoke({
        providerId: 'slack',
        endpointVariables: {},
        token,
        tokenTypeHint: 'access_token',
      }),
      'confirmed',
    );
    assert.equal(slack.isActive(token.reveal()), false);
    assert.equal(
      await oauth.revoke({
        providerId: 'slack',
        endpointVariables: {},
        token,
        tokenTypeHint: 'access_token',
      }),
      'confirmed',
    );
    assert.equal(slack.requests(slack.revokePath), 2);
  });
});

describe('when GitHub would answer form-encoded, then the adapter asks for JSON and handles 200-with-error answers', () => {
  let gh: GitHubStandIn;
  let oauth: OAuthClient;
  const redirect = 'http://127.0.0.1:1/v1/oauth/callback/github';
  function githubEntry(url: string): Record<string, unknown> {
    return shippedEntry('github', {
      authorization_url: `${url}/login/oauth/authorize`,
      token_url: `${url}/login/oauth/access_token`,
      revocation: {
        style: 'github_grant',
        url: `${url}/applications/{client_id}/grant`,
        token_type_hint: 'access_token',
      },
    });
  }
  before(async () => {
    gh = await startGitHubStandIn(CLIENT);
    oauth = createOAuthClient({
      catalogue: createTestCatalogue([githubEntry(gh.url)], CLIENT),
      config,
    });
  });
  after(() => gh.close());

  async function connect(code: string) {
    const start = await oauth.startAuthorization({
      providerId: 'github',
      endpointVariables: {},
      redirectUri: redirect,
    });
    return oauth.completeAuthorization({
      providerId: 'github',
      endpointVariables: {},
      callbackUrl: callbackFor(redirect, start, code),
      checks: start.checks,
    });
  }

  it('the stand-in really answers form-encoded without Accept: application/json', async () => {
    const response = await fetch(`${gh.url}${gh.tokenPath}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        client_id: CLIENT.clientId,
        client_secret: CLIENT.clientSecret,
        code: 'gh-raw',
      }),
    });
    assert.match(response.headers.get('content-type') ?? '', /application\/x-www-form-urlencoded/);
    assert.match(await response.text(), /^access_token=gho_/);
  });

  it('connects (JSON asked for), with no expiry and no refresh token', async () => {
    const before = gh.acceptCounts();
    const done = await connect('gh-code-1');
    assert.deepEqual(gh.acceptCounts(), { json: before.json + 1, other: before.other });
    assert.match(done.tokens.accessToken.reveal(), /^gho_/);
    assert.equal(done.tokens.refreshToken, null);
    assert.equal(done.tokens.expiresAtMs, null);
    assert.deepEqual(done.tokens.scopes, ['read:user', 'user:email']);
  });

  it('bad_verification_code (HTTP 200) → reauth_required; incorrect_client_credentials → provider_misconfigured', async () => {
    await assert.rejects(connect('gh-code-1'), errorWithCode('reauth_required'));
    const wrong = createOAuthClient({
      catalogue: createTestCatalogue([githubEntry(gh.url)], {
        clientId: CLIENT.clientId,
        clientSecret: 'wrong',
      }),
      config,
    });
    const start = await wrong.startAuthorization({
      providerId: 'github',
      endpointVariables: {},
      redirectUri: redirect,
    });
    await assert.rejects(
      wrong.completeAuthorization({
        providerId: 'github',
        endpointVariables: {},
        callbackUrl: callbackFor(redirect, start, 'gh-code-2'),
        checks: start.checks,
      }),
      errorWithCode('provider_misconfigured'),
    );
  });

  it('revokes the grant with DELETE /applications/{client_id}/grant (Basic auth, token in the body, never the URL)', async () => {
    const done = await connect('gh-code-3');
    assert.equal(
      await oauth.revoke({
        providerId: 'github',
        endpointVariables: {},
        token: done.tokens.accessToken,
        tokenTypeHint: 'access_token',
      }),
      'confirmed',
    );
    assert.equal(gh.isActive(done.tokens.accessToken.reveal()), false);
    assert.equal(gh.requests(gh.grantPath), 1);
    // A second revoke: GitHub answers 404, which could also mean wrong credentials: not confirmed.
    await assert.rejects(
      oauth.revoke({
        providerId: 'github',
        endpointVariables: {},
        token: done.tokens.accessToken,
        tokenTypeHint: 'access_token',
      }),
      errorWithCode('provider_error'),
    );
  });
});

describe('when Zoho sends the user back with accounts-server, then the exchange, refresh and revoke go to that data center', () => {
  let zoho: ZohoStandIn;
  let oauth: OAuthClient;
  const redirect = 'http://127.0.0.1:1/v1/oauth/callback/zoho';
  before(async () => {
    zoho = await startZohoStandIn(CLIENT);
    // The stand-in serves every DC on one port, path-prefixed by the accounts host.
    const entry = shippedEntry('zoho', {
      authorization_url: `${zoho.url}/{accountsServer}/oauth/v2/auth`,
      token_url: `${zoho.url}/{accountsServer}/oauth/v2/token`,
      revocation: {
        style: 'rfc7009',
        url: `${zoho.url}/{accountsServer}/oauth/v2/token/revoke`,
        token_type_hint: 'refresh_token',
      },
    });
    const catalogue = createTestCatalogue([entry], CLIENT);
    oauth = createOAuthClient({ catalogue, config });
    catalogueRef = catalogue;
  });
  after(() => zoho.close());
  let catalogueRef: ReturnType<typeof createTestCatalogue>;

  it('starts at the default DC, then exchanges at the callback’s DC and captures api_domain', async () => {
    const sessionVars = catalogueRef.resolveVariables('zoho', 'session', {});
    assert.deepEqual(sessionVars, { accountsServer: 'accounts.zoho.com' });
    const start = await oauth.startAuthorization({
      providerId: 'zoho',
      endpointVariables: sessionVars,
      redirectUri: redirect,
    });
    assert.equal(start.url.pathname, '/accounts.zoho.com/oauth/v2/auth');
    assert.equal(
      start.url.searchParams.get('scope'),
      'ZohoCRM.modules.READ,ZohoCRM.settings.READ,ZohoCRM.users.READ,ZohoCRM.org.READ',
    );
    assert.equal(start.url.searchParams.get('access_type'), 'offline');

    const callback = callbackFor(redirect, start, zoho.issueCode('accounts.zoho.eu'), {
      location: 'eu',
      'accounts-server': 'https://accounts.zoho.eu',
    });

    // A caller that forgets to merge the callback's accounts server is stopped before any exchange.
    await assert.rejects(
      oauth.completeAuthorization({
        providerId: 'zoho',
        endpointVariables: sessionVars,
        callbackUrl: callback,
        checks: start.checks,
      }),
      errorWithCode('invalid_request', (err) =>
        assert.equal(err.extra?.parameter, 'accounts-server'),
      ),
    );
    assert.equal(zoho.requests(), 0);

    const vars = {
      ...sessionVars,
      ...catalogueRef.resolveVariables(
        'zoho',
        'callback',
        Object.fromEntries(callback.searchParams),
      ),
    };
    assert.deepEqual(vars, { accountsServer: 'accounts.zoho.eu' });
    const done = await oauth.completeAuthorization({
      providerId: 'zoho',
      endpointVariables: vars,
      callbackUrl: callback,
      checks: start.checks,
    });
    assert.equal(done.tokens.extra.api_domain, 'https://www.zohoapis.eu');
    assert.equal(zoho.requests('/accounts.zoho.eu/oauth/v2/token'), 1);
    assert.equal(zoho.requests('/accounts.zoho.com/oauth/v2/token'), 0);

    const refreshed = await oauth.refresh({
      providerId: 'zoho',
      endpointVariables: vars,
      refreshToken: done.tokens.refreshToken!,
    });
    assert.equal(refreshed.refreshToken, null);
    assert.equal(refreshed.extra.api_domain, 'https://www.zohoapis.eu');
    // The refresh token is bound to its DC: the US server does not know it.
    await assert.rejects(
      oauth.refresh({
        providerId: 'zoho',
        endpointVariables: sessionVars,
        refreshToken: done.tokens.refreshToken!,
      }),
      errorWithCode('reauth_required'),
    );

    assert.equal(
      await oauth.revoke({
        providerId: 'zoho',
        endpointVariables: vars,
        token: done.tokens.refreshToken!,
        tokenTypeHint: 'refresh_token',
      }),
      'confirmed',
    );
    assert.equal(zoho.isActive(done.tokens.refreshToken!.reveal()), false);
  });

  it('refuses an accounts-server that is not Zoho’s', async () => {
    assert.throws(
      () =>
        catalogueRef.resolveVariables('zoho', 'callback', {
          'accounts-server': 'https://accounts.zoho.evil.test',
        }),
      errorWithCode('invalid_request', (err) =>
        assert.equal(err.extra?.parameter, 'accounts-server'),
      ),
    );
  });
});
