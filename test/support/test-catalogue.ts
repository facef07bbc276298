import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { ProviderCredentials } from '../../src/config.js';
import { loadCatalogue, type Catalogue } from '../../src/providers/catalogue.js';

/** Path of the shipped catalogue. */
export const BUILTIN_PROVIDERS_FILE = resolve(import.meta.dirname, '../../config/providers.json');

/** A raw (snake_case) entry of the shipped catalogue, deep-copied, with `overrides` shallow-merged over it. */
export function shippedEntry(
  id: string,
  overrides: Record<string, unknown> = {},
): Record<string, unknown> {
  const file = JSON.parse(readFileSync(BUILTIN_PROVIDERS_FILE, 'utf8')) as {
    providers: Record<string, unknown>[];
  };
  const entry = file.providers.find((p) => p.id === id);
  if (!entry) throw new Error(`no shipped provider ${id}`);
  return { ...structuredClone(entry), ...overrides };
}

/**
 * A catalogue made of `entries` only (written to a temp file, loaded through loadCatalogue, file
 * removed), with http:// endpoints allowed and every entry enabled with `credentials`
 * (or per id from `credentialsById`).
 */
export function createTestCatalogue(
  entries: readonly Record<string, unknown>[],
  credentials: ProviderCredentials | Readonly<Record<string, ProviderCredentials>> = {
    clientId: 'test-client',
    clientSecret: 'test-secret',
  },
): Catalogue {
  const dir = mkdtempSync(join(tmpdir(), 'linkvault-catalogue-'));
  try {
    const file = join(dir, 'providers.json');
    writeFileSync(file, JSON.stringify({ providers: entries }));
    const byId = (id: string): ProviderCredentials | null =>
      'clientId' in credentials
        ? (credentials as ProviderCredentials)
        : ((credentials as Record<string, ProviderCredentials>)[id] ?? null);
    return loadCatalogue({
      builtinFile: file,
      extraFile: null,
      config: { allowInsecureProviderUrls: true, providerCredentialFor: byId },
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * A raw (snake_case) catalogue entry for a loopback test provider at `baseUrl`: /authorize,
 * /token, RFC 7009 revocation at /revoke (the paths of provider-stand-ins.ts's token endpoint
 * stand-in), PKCE, client_secret_post, scope `api:read`, named `Provider <id>` with guidance under
 * https://<id>.example. `overrides` are shallow-merged over it.
 */
export function testProviderEntry(
  id: string,
  baseUrl: string,
  overrides: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    id,
    name: `Provider ${id}`,
    category: 'test',
    issuer: null,
    authorization_url: `${baseUrl}/authorize`,
    token_url: `${baseUrl}/token`,
    revocation: { style: 'rfc7009', url: `${baseUrl}/revoke`, token_type_hint: 'refresh_token' },
    scopes: { default: ['api:read'], separator: ' ' },
    pkce: true,
    token_endpoint_auth_method: 'client_secret_post',
    authorization_params: {},
    template_variables: [],
    capture_metadata: [],
    api_hosts: ['127.0.0.1'],
    privacy: {
      settings_url: `https://${id}.example/settings/connected-apps`,
      instructions: `Open ${id}'s connected apps page and remove the app to stop all sharing.`,
      policy_url: `https://${id}.example/privacy`,
    },
    ...overrides,
  };
}
