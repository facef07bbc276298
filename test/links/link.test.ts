import assert from 'node:assert/strict';
import { test } from 'node:test';
import { toLinkJson, type LinkRecord } from '../../src/links/link.js';

test('when a link carries linkvault bookkeeping in its metadata, then the public view shows only the provider metadata', () => {
  const link: LinkRecord = {
    id: 'lnk_1',
    tenantId: 'acme',
    userId: 'ada',
    providerId: 'pipedrive',
    status: 'active',
    version: 3,
    providerAccountId: 'acct-1',
    grantedScopes: ['read'],
    metadata: {
      api_domain: 'https://acme.pipedrive.com',
      'linkvault.refresh_uncertain_since': '1700000000000',
      'linkvault.refresh_failures': '2',
      'linkvault.refresh_retry_at_ms': '1700000004000',
    },
    endpointVariables: { accounts_server: 'accounts.zoho.eu' },
    tokens: null,
    accessTokenExpiresAtMs: null,
    createdAtMs: 0,
    updatedAtMs: 0,
    lastRefreshedAtMs: null,
    lastUsedAtMs: null,
  };
  assert.deepEqual(toLinkJson(link).metadata, { api_domain: 'https://acme.pipedrive.com' });
});
