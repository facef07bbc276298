import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { loadCatalogue } from '../../../src/providers/catalogue.js';
import { resolveProxyTarget } from '../../../src/links/proxy/proxy-target.js';
import { parseProviderEntry, EntryProblem } from '../../../src/providers/parse-provider-entry.js';
import { BUILTIN_PROVIDERS_FILE, shippedEntry } from '../../support/test-catalogue.js';

/**
 * The catalogue's api_base_url: validated at load like every endpoint (https, a host of api_hosts,
 * no IP literal, query, credentials or template), present on the shipped entries that have a fixed
 * API host, and what the proxy resolves for each shipped provider.
 */

function problemOf(entry: Record<string, unknown>, allowHttp = false): string | null {
  try {
    parseProviderEntry(entry, allowHttp);
    return null;
  } catch (err) {
    if (err instanceof EntryProblem) return err.message;
    throw err;
  }
}

describe('catalogue api_base_url', () => {
  it('when api_base_url is not a fixed https URL on one of api_hosts, then the entry is refused naming why', () => {
    const cases: [unknown, string][] = [
      ['http://api.hubapi.com', 'api_base_url must use https'],
      ['https://127.0.0.1', 'api_base_url must name a host, not an IP address'],
      ['https://[::1]', 'api_base_url must name a host, not an IP address'],
      [
        'https://api.hubapi.com.evil.example',
        'api_base_url host "api.hubapi.com.evil.example" must be one of api_hosts',
      ],
      ['https://api.hubapi.com?x=1', 'api_base_url must not have a query'],
      ['https://u:p@api.hubapi.com', 'api_base_url must not carry credentials'],
      ['https://{host}', 'api_base_url must not use template variables'],
      ['https://api.hubapi.com#f', 'api_base_url must not have a fragment'],
      [42, 'api_base_url must be a string or null'],
    ];
    for (const [value, expected] of cases) {
      const problem = problemOf(shippedEntry('hubspot', { api_base_url: value }));
      assert.ok(problem?.startsWith(expected), `${String(value)}: ${problem}`);
    }
    assert.equal(
      problemOf(shippedEntry('hubspot', { api_base_url: 'https://api.hubapi.com/' })),
      null,
    );
    assert.equal(
      parseProviderEntry(
        shippedEntry('hubspot', { api_base_url: 'https://api.hubapi.com/' }),
        false,
      ).apiBaseUrl,
      'https://api.hubapi.com',
    );
  });

  it('when the shipped catalogue is loaded, then each provider resolves to its API host or needs the link’s captured host', () => {
    const catalogue = loadCatalogue({
      builtinFile: BUILTIN_PROVIDERS_FILE,
      extraFile: null,
      config: { allowInsecureProviderUrls: false, providerCredentialFor: () => null },
    });
    const resolved: Record<string, string> = {};
    for (const id of [
      'hubspot',
      'microsoft',
      'google',
      'slack',
      'github',
      'pipedrive',
      'salesforce',
      'zoho',
      'dynamics365',
    ]) {
      try {
        resolved[id] = resolveProxyTarget(catalogue.get(id)!, {}).href;
      } catch (err) {
        resolved[id] = (err as { code: string }).code;
      }
    }
    assert.deepEqual(resolved, {
      hubspot: 'https://api.hubapi.com/',
      microsoft: 'https://graph.microsoft.com/',
      google: 'https://www.googleapis.com/',
      slack: 'https://slack.com/api',
      github: 'https://api.github.com/',
      pipedrive: 'https://api.pipedrive.com/',
      salesforce: 'proxy_target_refused',
      zoho: 'proxy_target_refused',
      dynamics365: 'proxy_target_refused',
    });
    // Captured hosts: used when inside api_hosts, refused otherwise.
    const sf = catalogue.get('salesforce')!;
    assert.equal(
      resolveProxyTarget(sf, { instance_url: 'https://acme.my.salesforce.com' }).href,
      'https://acme.my.salesforce.com/',
    );
    assert.throws(
      () => resolveProxyTarget(sf, { instance_url: 'https://acme.my.salesforce.com.evil.example' }),
      { code: 'proxy_target_refused' },
    );
    assert.throws(() => resolveProxyTarget(sf, { instance_url: 'http://acme.my.salesforce.com' }), {
      code: 'proxy_target_refused',
    });
    const zoho = catalogue.get('zoho')!;
    assert.equal(
      resolveProxyTarget(zoho, { api_domain: 'https://www.zohoapis.eu' }).href,
      'https://www.zohoapis.eu/',
    );
    assert.throws(() => resolveProxyTarget(zoho, { api_domain: 'https://www.zohoapis.evil' }), {
      code: 'proxy_target_refused',
    });
    const pipedrive = catalogue.get('pipedrive')!;
    assert.equal(
      resolveProxyTarget(pipedrive, { api_domain: 'https://acme.pipedrive.com' }).href,
      'https://acme.pipedrive.com/',
    );
  });
});
