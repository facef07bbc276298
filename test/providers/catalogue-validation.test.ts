import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { ProviderCredentials } from '../../src/config.js';
import { CatalogueError, loadCatalogue } from '../../src/providers/catalogue.js';
import { LinkvaultError } from '../../src/errors.js';
import { BUILTIN_PROVIDERS_FILE, shippedEntry } from '../support/test-catalogue.js';

const dir = mkdtempSync(join(tmpdir(), 'linkvault-catalogue-test-'));
after(() => rmSync(dir, { recursive: true, force: true }));

let fileNo = 0;
function writeProviders(providers: unknown[], raw?: string): string {
  const file = join(dir, `providers-${++fileNo}.json`);
  writeFileSync(file, raw ?? JSON.stringify({ providers }));
  return file;
}

const noCredentials = (): ProviderCredentials | null => null;

function load(
  providers: unknown[],
  options: { insecure?: boolean; credentials?: (id: string) => ProviderCredentials | null } = {},
) {
  return loadCatalogue({
    builtinFile: writeProviders(providers),
    extraFile: null,
    config: {
      allowInsecureProviderUrls: options.insecure ?? false,
      providerCredentialFor: options.credentials ?? noCredentials,
    },
  });
}

/** A minimal valid plain-OAuth entry. */
function entry(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id: 'acme',
    name: 'Acme CRM',
    category: 'crm',
    issuer: null,
    authorization_url: 'https://auth.acme.test/authorize',
    token_url: 'https://auth.acme.test/token',
    revocation: {
      style: 'rfc7009',
      url: 'https://auth.acme.test/revoke',
      token_type_hint: 'refresh_token',
    },
    scopes: { default: ['read'], separator: ' ' },
    pkce: true,
    token_endpoint_auth_method: 'client_secret_post',
    authorization_params: {},
    template_variables: [],
    capture_metadata: [],
    api_hosts: ['api.acme.test'],
    privacy: {
      settings_url: 'https://acme.test/settings/apps',
      instructions: 'Remove the app.',
      policy_url: 'https://acme.test/privacy',
    },
    ...overrides,
  };
}

function refusal(
  providers: unknown[],
  pattern: RegExp,
  options: { insecure?: boolean } = {},
): void {
  assert.throws(
    () => load(providers, options),
    (err: unknown) => {
      assert.ok(err instanceof CatalogueError, `expected CatalogueError, got ${String(err)}`);
      assert.equal(err.message.includes('\n'), false, 'one line');
      assert.match(err.message, /providers-\d+\.json: (provider "[^"]+"|providers\[\d+\]|file): /);
      assert.match(err.message, pattern);
      return true;
    },
  );
}

describe('when the catalogue has an invalid entry, then loading refuses with one line naming file, entry and problem', () => {
  it('refuses an unknown field', () =>
    refusal([entry({ colour: 'blue' })], /provider "acme": unknown field "colour"/));
  it('refuses an unknown nested field', () =>
    refusal(
      [entry({ scopes: { default: [], separator: ' ', extra: 1 } })],
      /unknown field "scopes\.extra"/,
    ));
  it('refuses a missing privacy block', () => {
    const e = entry();
    delete e.privacy;
    refusal([e], /provider "acme": missing privacy block/);
  });
  it('refuses a privacy block without instructions', () =>
    refusal(
      [entry({ privacy: { settings_url: null, policy_url: 'https://acme.test/privacy' } })],
      /privacy\.instructions must be a non-empty string/,
    ));
  it('refuses http endpoints without the insecure switch', () =>
    refusal([entry({ token_url: 'http://auth.acme.test/token' })], /token_url must use https/));
  it('accepts http endpoints with the insecure switch', () => {
    const c = load([entry({ token_url: 'http://127.0.0.1:9/token' })], { insecure: true });
    assert.equal(c.get('acme')?.tokenUrl, 'http://127.0.0.1:9/token');
    assert.equal(c.get('acme')?.insecureUrlsAllowed, true);
  });
  it('refuses a URL that is not absolute', () =>
    refusal(
      [entry({ authorization_url: '/authorize' })],
      /authorization_url is not an absolute URL/,
    ));
  it('refuses a URL with credentials', () =>
    refusal(
      [entry({ token_url: 'https://u:p@auth.acme.test/token' })],
      /token_url must not carry credentials/,
    ));
  it('refuses a duplicate id', () => refusal([entry(), entry()], /provider "acme": duplicate id/));
  it('refuses a bad id', () =>
    refusal([entry({ id: 'Acme CRM' })], /id "Acme CRM" must be lower-case/));
  it('refuses an undeclared template variable', () =>
    refusal(
      [entry({ token_url: 'https://{host}/token' })],
      /token_url uses undeclared template variable "\{host\}"/,
    ));
  it('refuses a template variable with an invalid pattern', () =>
    refusal(
      [
        entry({
          token_url: 'https://{host}/token',
          template_variables: [
            { name: 'host', description: 'h', pattern: '([a-z', session_parameter: 'host' },
          ],
        }),
      ],
      /pattern is not a valid regular expression/,
    ));
  it('refuses a template variable whose default does not match its pattern', () =>
    refusal(
      [
        entry({
          token_url: 'https://{host}/token',
          template_variables: [
            {
              name: 'host',
              description: 'h',
              pattern: 'a\\.acme\\.test',
              default: 'evil.test',
              session_parameter: 'host',
            },
          ],
        }),
      ],
      /default does not match/,
    ));
  it('refuses a template variable that is never used', () =>
    refusal(
      [
        entry({
          template_variables: [
            {
              name: 'host',
              description: 'h',
              pattern: 'a\\.acme\\.test',
              session_parameter: 'host',
            },
          ],
        }),
      ],
      /"host" is declared but never used/,
    ));
  it('refuses a template variable with no source', () =>
    refusal(
      [
        entry({
          token_url: 'https://{host}/token',
          template_variables: [{ name: 'host', description: 'h', pattern: 'x' }],
        }),
      ],
      /needs a session_parameter or a callback_parameter/,
    ));
  it('refuses a template variable with both pattern and values', () =>
    refusal(
      [
        entry({
          token_url: 'https://{host}/token',
          template_variables: [
            {
              name: 'host',
              description: 'h',
              pattern: 'x',
              values: { x: 'x' },
              session_parameter: 'h',
            },
          ],
        }),
      ],
      /exactly one of pattern or values/,
    ));
  it('refuses an unknown revocation style', () =>
    refusal(
      [entry({ revocation: { style: 'carrier_pigeon', url: null } })],
      /revocation\.style "carrier_pigeon"/,
    ));
  it('refuses a revocation url with style none', () =>
    refusal(
      [entry({ revocation: { style: 'none', url: 'https://auth.acme.test/revoke' } })],
      /must be null when style is none/,
    ));
  it('refuses a missing endpoint without an issuer', () => {
    const e = entry();
    delete e.token_url;
    refusal([e], /authorization_url and token_url are required when issuer is null/);
  });
  it('refuses authorization params that linkvault sets itself', () =>
    refusal([entry({ authorization_params: { state: 'x' } })], /must not set "state"/));
  it('refuses capturing a credential-looking member', () =>
    refusal(
      [entry({ capture_metadata: ['authed_user.access_token'] })],
      /looks like a credential/,
    ));
  it('refuses a bad token_response quirk', () =>
    refusal([entry({ token_response: 'xml' })], /token_response must be one of/));
  it('refuses a file that is not {providers: [...]}', () => {
    const file = writeProviders([], '[]');
    assert.throws(
      () =>
        loadCatalogue({
          builtinFile: file,
          extraFile: null,
          config: { allowInsecureProviderUrls: false, providerCredentialFor: noCredentials },
        }),
      /providers-\d+\.json: file: must be \{"providers": \[ \.\.\. \]\}/,
    );
  });
  it('refuses a file that is not JSON', () => {
    const file = writeProviders([], '{nope');
    assert.throws(
      () =>
        loadCatalogue({
          builtinFile: file,
          extraFile: null,
          config: { allowInsecureProviderUrls: false, providerCredentialFor: noCredentials },
        }),
      /file: cannot read as JSON/,
    );
  });
});

describe('when LINKVAULT_PROVIDERS_FILE names an existing id, then its entry replaces the built-in one whole', () => {
  it('replaces by id and appends new ids', () => {
    const builtin = writeProviders([entry(), entry({ id: 'other', name: 'Other' })]);
    const extra = writeProviders([
      entry({ name: 'Acme (self-hosted)', token_url: 'https://acme.internal.test/token' }),
      entry({ id: 'third', name: 'Third' }),
    ]);
    const c = loadCatalogue({
      builtinFile: builtin,
      extraFile: extra,
      config: {
        allowInsecureProviderUrls: false,
        providerCredentialFor: () => ({ clientId: 'a', clientSecret: 'b' }),
      },
    });
    assert.equal(c.get('acme')?.name, 'Acme (self-hosted)');
    assert.equal(c.get('acme')?.tokenUrl, 'https://acme.internal.test/token');
    assert.deepEqual(
      c.enabled().map((e) => e.id),
      ['acme', 'other', 'third'],
    );
  });
  it('reads the extra file from config.providersFile when extraFile is not given', () => {
    const builtin = writeProviders([entry()]);
    const extra = writeProviders([entry({ name: 'From config' })]);
    const c = loadCatalogue({
      builtinFile: builtin,
      config: {
        allowInsecureProviderUrls: false,
        providerCredentialFor: noCredentials,
        providersFile: extra,
      },
    });
    assert.equal(c.get('acme')?.name, 'From config');
  });
  it('names the extra file when it is invalid', () => {
    const builtin = writeProviders([entry()]);
    const extra = writeProviders([entry({ pkce: 'yes' })]);
    assert.throws(
      () =>
        loadCatalogue({
          builtinFile: builtin,
          extraFile: extra,
          config: { allowInsecureProviderUrls: false, providerCredentialFor: noCredentials },
        }),
      new RegExp(`${extra.replaceAll('/', '\\/')}: provider "acme": pkce must be true or false`),
    );
  });
  it('registers extra entries in code with their own credentials, refusing a duplicate id', () => {
    const builtin = writeProviders([entry()]);
    const sandbox = entry({
      id: 'sandbox',
      name: 'Sandbox CRM',
      token_url: 'http://localhost:3000/sandbox/token',
      authorization_url: 'http://localhost:3000/sandbox/authorize',
      revocation: { style: 'none', url: null },
    });
    const c = loadCatalogue({
      builtinFile: builtin,
      extraFile: null,
      config: { allowInsecureProviderUrls: false, providerCredentialFor: noCredentials },
      extraEntries: [
        {
          entry: sandbox,
          credentials: { clientId: 'sb', clientSecret: 'sbs' },
          allowInsecureUrls: true,
        },
      ],
    });
    assert.deepEqual(c.credentials('sandbox'), { clientId: 'sb', clientSecret: 'sbs' });
    assert.equal(c.isEnabled('sandbox'), true);
    assert.equal(c.isEnabled('acme'), false);
    assert.throws(
      () =>
        loadCatalogue({
          builtinFile: builtin,
          extraFile: null,
          config: { allowInsecureProviderUrls: false, providerCredentialFor: noCredentials },
          extraEntries: [{ entry: entry(), credentials: { clientId: 'x', clientSecret: 'y' } }],
        }),
      /extra entries: provider "acme": duplicate id/,
    );
  });
});

describe('when the shipped config/providers.json is loaded, then it validates', () => {
  const raw = JSON.parse(readFileSync(BUILTIN_PROVIDERS_FILE, 'utf8')) as {
    providers: Record<string, unknown>[];
  };
  const catalogue = loadCatalogue({
    builtinFile: BUILTIN_PROVIDERS_FILE,
    extraFile: null,
    config: {
      allowInsecureProviderUrls: false,
      providerCredentialFor: () => ({ clientId: 'id', clientSecret: 'secret' }),
    },
  });

  it('has every required provider', () => {
    for (const id of [
      'salesforce',
      'hubspot',
      'zoho',
      'pipedrive',
      'microsoft',
      'dynamics365',
      'google',
      'slack',
      'github',
      'attio',
      'close',
      'monday',
      'intercom',
      'copper',
    ]) {
      assert.ok(catalogue.get(id), `missing ${id}`);
    }
  });
  it('gives every entry a privacy block with instructions and an https policy URL', () => {
    for (const e of raw.providers) {
      const privacy = e.privacy as Record<string, unknown>;
      assert.ok(privacy, `${String(e.id)} has no privacy block`);
      assert.ok(
        typeof privacy.instructions === 'string' && privacy.instructions.length > 20,
        `${String(e.id)} instructions`,
      );
      assert.match(String(privacy.policy_url), /^https:\/\//);
      assert.ok('settings_url' in privacy);
    }
  });
  it('records unconfirmed facts as a list on the entries that have them', () => {
    for (const e of raw.providers)
      assert.ok(Array.isArray(e.unconfirmed), `${String(e.id)} has no unconfirmed list`);
  });
  it('uses HubSpot 2026-03 endpoints and monday OAuth 2.1 endpoints', () => {
    assert.equal(catalogue.get('hubspot')?.tokenUrl, 'https://api.hubapi.com/oauth/2026-03/token');
    assert.equal(
      catalogue.get('hubspot')?.revocation.url,
      'https://api.hubapi.com/oauth/2026-03/token/revoke',
    );
    assert.equal(catalogue.get('monday')?.tokenUrl, 'https://auth.monday.com/oauth_ms/oauth/token');
    assert.equal(
      catalogue.get('monday')?.revocation.url,
      'https://auth.monday.com/oauth_ms/oauth/revoke',
    );
  });
  it('shows the public view without endpoints or secrets', () => {
    const view = catalogue.publicView(catalogue.get('google')!);
    assert.deepEqual(view, {
      id: 'google',
      name: 'Google',
      category: 'identity',
      scopes: [
        { name: 'openid', description: 'Sign you in with Google' },
        { name: 'email', description: 'See your email address' },
        { name: 'profile', description: 'See your basic profile (name, picture)' },
      ],
      privacy: {
        settings_url: 'https://myaccount.google.com/connections',
        instructions: catalogue.get('google')!.privacy.instructions,
        policy_url: 'https://policies.google.com/privacy',
      },
    });
  });
  it('resolves a templated privacy settings URL from the link variables, or null when one is missing', () => {
    assert.equal(
      catalogue.privacy('zoho', { accountsServer: 'accounts.zoho.eu' }).settings_url,
      'https://accounts.zoho.eu/home#sessions/userconnectedapps',
    );
    assert.equal(catalogue.privacy('dynamics365', {}).settings_url, 'https://myapps.microsoft.com');
  });
  it('the shipped entries survive a round trip through the merge file', () => {
    const extra = writeProviders([shippedEntry('github', { name: 'GitHub Enterprise' })]);
    const c = loadCatalogue({
      builtinFile: BUILTIN_PROVIDERS_FILE,
      extraFile: extra,
      config: { allowInsecureProviderUrls: false, providerCredentialFor: noCredentials },
    });
    assert.equal(c.get('github')?.name, 'GitHub Enterprise');
  });
});

describe('when template variable values arrive, then each is checked against its anchored pattern', () => {
  const catalogue = loadCatalogue({
    builtinFile: BUILTIN_PROVIDERS_FILE,
    extraFile: null,
    config: {
      allowInsecureProviderUrls: false,
      providerCredentialFor: () => ({ clientId: 'id', clientSecret: 'secret' }),
    },
  });

  function rejects(
    id: string,
    source: 'session' | 'callback',
    values: Record<string, string>,
    parameter: string,
  ): void {
    assert.throws(
      () => catalogue.resolveVariables(id, source, values),
      (err: unknown) =>
        err instanceof LinkvaultError &&
        err.code === 'invalid_request' &&
        err.extra?.parameter === parameter &&
        !err.message.includes(Object.values(values)[0]!),
    );
  }

  it('accepts the Salesforce login hosts and My Domain hosts, and nothing else', () => {
    assert.deepEqual(catalogue.resolveVariables('salesforce', 'session', {}), {
      instanceDomain: 'login.salesforce.com',
    });
    assert.deepEqual(
      catalogue.resolveVariables('salesforce', 'session', {
        instance_domain: 'test.salesforce.com',
      }),
      { instanceDomain: 'test.salesforce.com' },
    );
    assert.deepEqual(
      catalogue.resolveVariables('salesforce', 'session', {
        instance_domain: 'https://Acme--UAT.sandbox.my.salesforce.com/',
      }),
      { instanceDomain: 'acme--uat.sandbox.my.salesforce.com' },
    );
    for (const bad of [
      'evil.test',
      'login.salesforce.com.evil.test',
      'my.salesforce.com',
      'login.salesforce.com/path',
      'evil.test#.my.salesforce.com',
      'login.salesforce.com:444',
    ]) {
      rejects('salesforce', 'session', { instance_domain: bad }, 'instance_domain');
    }
  });
  it('accepts only Zoho accounts servers from the callback, and returns only callback variables', () => {
    assert.deepEqual(
      catalogue.resolveVariables('zoho', 'callback', {
        'accounts-server': 'https://accounts.zoho.eu',
        location: 'eu',
      }),
      { accountsServer: 'accounts.zoho.eu' },
    );
    assert.deepEqual(
      catalogue.resolveVariables('zoho', 'callback', {
        'accounts-server': 'https://accounts.zohocloud.ca',
      }),
      { accountsServer: 'accounts.zohocloud.ca' },
    );
    assert.deepEqual(catalogue.resolveVariables('zoho', 'callback', {}), {});
    for (const bad of [
      'https://accounts.zoho.evil.test',
      'https://evil.test/accounts.zoho.eu',
      'http://accounts.zoho.eu',
      'https://accounts.zoho.eu:8443',
    ]) {
      rejects('zoho', 'callback', { 'accounts-server': bad }, 'accounts-server');
    }
  });
  it('accepts Microsoft tenants: common, organizations, consumers, a GUID or a domain', () => {
    for (const tenant of [
      'common',
      'organizations',
      'consumers',
      '72f988bf-86f1-41af-91ab-2d7cd011db47',
      'contoso.onmicrosoft.com',
    ]) {
      assert.deepEqual(catalogue.resolveVariables('microsoft', 'session', { tenant }), { tenant });
    }
    for (const bad of ['../common', 'common/v2.0', 'a b', 'x'])
      rejects('microsoft', 'session', { tenant: bad }, 'tenant');
  });
  it('requires a variable that has no default', () => {
    assert.throws(
      () => catalogue.resolveVariables('dynamics365', 'session', {}),
      (err: unknown) =>
        err instanceof LinkvaultError &&
        err.code === 'invalid_request' &&
        err.extra?.parameter === 'org_host',
    );
  });
  it('maps a closed value set to its URL text (Intercom regions)', () => {
    const vars = catalogue.resolveVariables('intercom', 'session', { region: 'eu' });
    assert.deepEqual(vars, { region: 'eu' });
    assert.equal(
      catalogue.endpoints('intercom', vars).tokenUrl,
      'https://api.eu.intercom.io/auth/eagle/token',
    );
    assert.equal(
      catalogue.endpoints('intercom', { region: 'us' }).tokenUrl,
      'https://api.intercom.io/auth/eagle/token',
    );
    rejects('intercom', 'session', { region: 'mars' }, 'region');
  });
  it('re-validates stored variables when endpoints are built, and substitutes the client id', () => {
    assert.throws(
      () => catalogue.endpoints('salesforce', { instanceDomain: 'evil.test' }),
      (err: unknown) => err instanceof LinkvaultError && err.code === 'invalid_request',
    );
    assert.equal(
      catalogue.endpoints('github', {}).revocationUrl,
      'https://api.github.com/applications/id/grant',
    );
    assert.deepEqual(
      catalogue.endpoints('dynamics365', { tenant: 'common', orgHost: 'contoso.crm4.dynamics.com' })
        .defaultScopes,
      [
        'https://contoso.crm4.dynamics.com/user_impersonation',
        'offline_access',
        'openid',
        'profile',
      ],
    );
  });
  it('answers provider_not_found for an unknown provider', () => {
    assert.throws(
      () => catalogue.resolveVariables('nope', 'session', {}),
      (err: unknown) => err instanceof LinkvaultError && err.code === 'provider_not_found',
    );
  });
});
