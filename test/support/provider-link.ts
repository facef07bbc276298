import { join } from 'node:path';
import type { Vault } from '../../src/keys/vault.js';
import { loadCatalogue, type Catalogue } from '../../src/providers/catalogue.js';
import { sealTokenSet } from '../../src/links/sealing/token-vault.js';
import type { OAuthClient } from '../../src/oauth/oauth-client.js';
import { createOAuthClient } from '../../src/oauth/openid-oauth-client.js';
import type { Store } from '../../src/store/store.js';
import type { LinkRecord } from '../../src/links/link.js';

/**
 * Links backed by a real authorization server, for token-release tests: a catalogue holding
 * the server's entry, the real OAuth adapter, and a link whose tokens came from a real
 * authorization-code flow at that server (startAuthorization → login → completeAuthorization),
 * sealed and saved through the store.
 */

const BUILTIN_CATALOGUE = join(import.meta.dirname, '../../config/providers.json');
/** Registered with the test server; never visited (completeLogin stops at the first hop off the issuer). */
export const TEST_REDIRECT_URI = 'http://127.0.0.1:9/v1/oauth/callback/acme';

export interface TestOAuth {
  readonly catalogue: Catalogue;
  readonly oauth: OAuthClient;
}

/** A catalogue with `entry` (a provider's snake_case catalogue entry) and the real adapter over it. */
export function createTestOAuth(options: {
  entry: Record<string, unknown>;
  clientId: string;
  clientSecret: string;
  providerTimeoutMs?: number;
}): TestOAuth {
  const catalogue = loadCatalogue({
    builtinFile: BUILTIN_CATALOGUE,
    extraFile: null,
    config: {
      allowInsecureProviderUrls: false,
      providerCredentialFor: () => null,
      providersFile: null,
    },
    extraEntries: [
      {
        entry: options.entry,
        credentials: { clientId: options.clientId, clientSecret: options.clientSecret },
        allowInsecureUrls: true,
      },
    ],
  });
  const oauth = createOAuthClient({
    catalogue,
    config: {
      providerTimeoutMs: options.providerTimeoutMs ?? 5000,
      allowInsecureProviderUrls: false,
    },
  });
  return { catalogue, oauth };
}

export interface ConnectViaProviderOptions {
  readonly oauth: OAuthClient;
  /** Logs in at the authorization server like a browser and returns the redirect back to us. */
  readonly completeLogin: (url: URL, options: { accountId: string }) => Promise<URL>;
  readonly store: Pick<Store, 'saveLink'>;
  readonly vault: Vault;
  readonly providerId: string;
  readonly linkId: string;
  readonly tenantId?: string;
  readonly userId?: string;
  readonly accountId?: string;
  /** Overrides the stored expiry of the access token (e.g. in the past, to make it due). */
  readonly accessTokenExpiresAtMs?: number | null;
  readonly redirectUri?: string;
  /** The link's createdAtMs (default now); earlier makes a due token look not "just issued". */
  readonly connectedAtMs?: number;
}

/** Runs a real authorization-code flow at the provider and stores the resulting link. */
export async function connectViaProvider(o: ConnectViaProviderOptions): Promise<LinkRecord> {
  const redirectUri = o.redirectUri ?? TEST_REDIRECT_URI;
  const start = await o.oauth.startAuthorization({
    providerId: o.providerId,
    endpointVariables: {},
    redirectUri,
  });
  const callbackUrl = await o.completeLogin(start.url, { accountId: o.accountId ?? 'user-1' });
  const done = await o.oauth.completeAuthorization({
    providerId: o.providerId,
    endpointVariables: {},
    callbackUrl,
    checks: start.checks,
  });
  const at = Date.now();
  const expiresAtMs =
    o.accessTokenExpiresAtMs === undefined ? done.tokens.expiresAtMs : o.accessTokenExpiresAtMs;
  const link: LinkRecord = {
    id: o.linkId,
    tenantId: o.tenantId ?? 'tenant-a',
    userId: o.userId ?? 'user-1',
    providerId: o.providerId,
    status: 'active',
    version: 0,
    providerAccountId: o.accountId ?? 'user-1',
    grantedScopes: done.tokens.scopes ?? [],
    metadata: {},
    endpointVariables: {},
    tokens: null,
    accessTokenExpiresAtMs: expiresAtMs,
    createdAtMs: o.connectedAtMs ?? at,
    updatedAtMs: at,
    lastRefreshedAtMs: null,
    lastUsedAtMs: null,
  };
  const sealed = await sealTokenSet(o.vault, link, { ...done.tokens, expiresAtMs }, null);
  const saved = await o.store.saveLink({ ...link, tokens: sealed }, null);
  if (!saved) throw new Error(`connectViaProvider: link ${o.linkId} exists`);
  return saved;
}
