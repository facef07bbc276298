import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import {
  APP_ORIGIN,
  BUILTIN_CATALOGUE,
  startConnectHarness,
  type ConnectHarness,
} from '../../support/connect-harness.js';
import {
  startGitHubStandIn,
  startSalesforceStandIn,
  startSlackStandIn,
  startZohoStandIn,
  type GitHubStandIn,
  type SalesforceStandIn,
  type SlackStandIn,
  type ZohoStandIn,
} from '../../support/provider-stand-ins.js';

/**
 * Provider quirks through the real callback route: each stand-in answers as the provider documents
 * (provider-facts.md), and the catalogue entry is the built-in one with its hosts pointed at the
 * stand-in. The stand-ins have no authorization page: the test reads `state` from the redirect and
 * returns to the callback as the provider would.
 */

const CLIENT = { clientId: 'lv-client', clientSecret: 'lv-client-secret-0123456789abcdef' };
const builtin = (
  JSON.parse(readFileSync(BUILTIN_CATALOGUE, 'utf8')) as { providers: Record<string, unknown>[] }
).providers;

function entryFrom(
  id: string,
  newId: string,
  overrides: Record<string, unknown>,
): Record<string, unknown> {
  const entry = structuredClone(builtin.find((e) => e.id === id)!);
  delete entry.unconfirmed;
  return { ...entry, id: newId, ...overrides };
}

describe('when a provider answers with its documented quirks', () => {
  let sf: SalesforceStandIn;
  let slack: SlackStandIn;
  let gh: GitHubStandIn;
  let zoho: ZohoStandIn;
  let h: ConnectHarness;

  before(async () => {
    [sf, slack, gh, zoho] = await Promise.all([
      startSalesforceStandIn(CLIENT),
      startSlackStandIn(CLIENT),
      startGitHubStandIn(CLIENT),
      startZohoStandIn(CLIENT),
    ]);
    const privacy = {
      settings_url: 'https://example.test/settings',
      instructions: 'test',
      policy_url: 'https://example.test/privacy',
    };
    const extra = (entry: Record<string, unknown>) => ({
      entry,
      credentials: CLIENT,
      allowInsecureUrls: true,
    });
    h = await startConnectHarness({
      providers: () => [
        extra(
          entryFrom('salesforce', 'sf', {
            authorization_url: `${sf.url}/services/oauth2/authorize`,
            token_url: `${sf.url}${sf.tokenPath}`,
            revocation: {
              style: 'rfc7009',
              url: `${sf.url}${sf.revokePath}`,
              token_type_hint: 'refresh_token',
            },
            template_variables: [],
            privacy,
          }),
        ),
        // The same Salesforce answers, but an entry whose API hosts do not include the instance_url's.
        extra(
          entryFrom('salesforce', 'sf-strict', {
            authorization_url: `${sf.url}/services/oauth2/authorize`,
            token_url: `${sf.url}${sf.tokenPath}`,
            revocation: {
              style: 'rfc7009',
              url: `${sf.url}${sf.revokePath}`,
              token_type_hint: 'refresh_token',
            },
            template_variables: [],
            api_hosts: ['*.force.com'],
            privacy,
          }),
        ),
        extra(
          entryFrom('slack', 'slk', {
            authorization_url: `${slack.url}/oauth/v2/authorize`,
            token_url: `${slack.url}${slack.tokenPath}`,
            revocation: {
              style: 'slack_auth_revoke',
              url: `${slack.url}${slack.revokePath}`,
              token_type_hint: 'access_token',
            },
          }),
        ),
        extra(
          entryFrom('github', 'gh', {
            authorization_url: `${gh.url}/login/oauth/authorize`,
            token_url: `${gh.url}${gh.tokenPath}`,
            revocation: {
              style: 'github_grant',
              url: `${gh.url}/applications/{client_id}/grant`,
              token_type_hint: 'access_token',
            },
          }),
        ),
        extra(
          entryFrom('zoho', 'zh', {
            authorization_url: `${zoho.url}/{accountsServer}/oauth/v2/auth`,
            token_url: `${zoho.url}/{accountsServer}/oauth/v2/token`,
            revocation: {
              style: 'rfc7009',
              url: `${zoho.url}/{accountsServer}/oauth/v2/token/revoke`,
              token_type_hint: 'refresh_token',
            },
          }),
        ),
      ],
    });
  });
  after(async () => {
    await h.close();
    await Promise.all([sf.close(), slack.close(), gh.close(), zoho.close()]);
  });

  /** Starts a flow and comes back to the callback with `params` added to the provider's state. */
  async function roundTrip(providerId: string, params: Record<string, string>, tenant: string) {
    const session = await h.createSession({
      tenant_id: tenant,
      user_id: 'u',
      return_to: `${APP_ORIGIN}/done`,
    });
    const flow = await h.startFlow(providerId, session.session_token);
    const state = flow.authorizationUrl.searchParams.get('state')!;
    const query = new URLSearchParams({ ...params, state });
    const answer = await h.callback(`/v1/oauth/callback/${providerId}?${query}`, flow.cookie);
    return { flow, answer };
  }

  function linkIdOf(location: URL | null): string {
    assert.equal(location?.searchParams.get('status'), 'connected', location?.href);
    return location!.searchParams.get('link_id')!;
  }

  test('then Salesforce (no expires_in, instance_url and identity URL) is stored with that metadata and no expiry', async () => {
    const { answer } = await roundTrip('sf', { code: 'sf-code-1' }, 'tenant-sf');
    assert.equal(answer.status, 303);
    const link = (await h.store.getLink(linkIdOf(answer.location)))!;
    assert.deepEqual(link.metadata, { instance_url: sf.instanceUrl, id: sf.identityUrl });
    assert.equal(link.accessTokenExpiresAtMs, null);
    assert.deepEqual(link.grantedScopes, ['api', 'refresh_token']);
    assert.equal(link.providerAccountId, sf.identityUrl);
    assert.equal(sf.requests(sf.tokenPath), 1);
  });

  test("then an instance_url outside the entry's API hosts is invalid_token_response and nothing is stored", async () => {
    const exchanges = sf.requests(sf.tokenPath);
    const { answer } = await roundTrip('sf-strict', { code: 'sf-code-2' }, 'tenant-sf-strict');
    assert.equal(answer.status, 303);
    assert.equal(
      answer.location?.href,
      `${APP_ORIGIN}/done?status=error&error=invalid_token_response&provider=sf-strict`,
    );
    assert.equal(sf.requests(sf.tokenPath) - exchanges, 1);
    assert.equal((await h.store.listLinks({ tenantId: 'tenant-sf-strict' })).length, 0);
  });

  test("then Slack's HTTP 200 ok:false is an error result and nothing is stored; a good answer captures team metadata", async () => {
    slack.failNextWith('invalid_code');
    const failed = await roundTrip('slk', { code: 'slack-code-1' }, 'tenant-slack-bad');
    assert.equal(failed.answer.status, 303);
    assert.equal(
      failed.answer.location?.href,
      `${APP_ORIGIN}/done?status=error&error=authorization_code_rejected&provider=slk`,
    );
    assert.equal((await h.store.listLinks({ tenantId: 'tenant-slack-bad' })).length, 0);

    const { answer } = await roundTrip('slk', { code: 'slack-code-2' }, 'tenant-slack');
    const link = (await h.store.getLink(linkIdOf(answer.location)))!;
    assert.deepEqual(link.metadata, {
      'team.id': slack.teamId,
      'team.name': 'Test Workspace',
      is_enterprise_install: 'false',
      bot_user_id: 'U0BOTTEST',
      app_id: 'A0123TEST',
      'authed_user.id': 'U0123TEST',
    });
    assert.equal(link.providerAccountId, slack.teamId);
    assert.deepEqual(link.grantedScopes, ['channels:read', 'users:read']);
  });

  test('then GitHub is asked for JSON and its answer is stored', async () => {
    const { answer } = await roundTrip('gh', { code: 'gh-code-1' }, 'tenant-gh');
    const link = (await h.store.getLink(linkIdOf(answer.location)))!;
    assert.deepEqual(link.grantedScopes, ['read:user', 'user:email']);
    assert.equal(link.accessTokenExpiresAtMs, null);
    assert.deepEqual(gh.acceptCounts(), { json: 1, other: 0 });
  });

  test("then Zoho's accounts-server from the callback picks the data center for the exchange and is kept on the link", async () => {
    const code = zoho.issueCode('accounts.zoho.eu');
    const { flow, answer } = await roundTrip(
      'zh',
      { code, location: 'eu', 'accounts-server': 'https://accounts.zoho.eu' },
      'tenant-zoho',
    );
    assert.equal(flow.authorizationUrl.pathname, '/accounts.zoho.com/oauth/v2/auth');
    const link = (await h.store.getLink(linkIdOf(answer.location)))!;
    assert.deepEqual(link.endpointVariables, { accountsServer: 'accounts.zoho.eu' });
    assert.deepEqual(link.metadata, { api_domain: 'https://www.zohoapis.eu' });
    assert.equal(zoho.requests('/accounts.zoho.eu/oauth/v2/token'), 1);
    assert.equal(zoho.requests('/accounts.zoho.com/oauth/v2/token'), 0);
  });

  test("then a Zoho accounts-server outside Zoho's domains is refused with zero token requests", async () => {
    const before = zoho.requests();
    for (const server of [
      'https://accounts.evil.example',
      'https://accounts.zoho.eu.evil.example',
      'https://accounts.zoho.eu/../x',
      'http://127.0.0.1:1',
    ]) {
      const { answer } = await roundTrip(
        'zh',
        { code: 'whatever', 'accounts-server': server },
        'tenant-zoho-bad',
      );
      assert.equal(
        answer.location?.href,
        `${APP_ORIGIN}/done?status=error&error=invalid_request&provider=zh`,
        server,
      );
    }
    assert.equal(zoho.requests(), before);
    assert.equal((await h.store.listLinks({ tenantId: 'tenant-zoho-bad' })).length, 0);
  });
});
