import { isIP } from 'node:net';
import { LinkvaultError } from '../../errors.js';
import type { ProviderEntry } from '../../providers/catalogue.js';

/**
 * Where the proxy may send a link's token: only to the catalogue's idea of the provider's API.
 * The link's captured host (Salesforce `instance_url`, Zoho and Pipedrive `api_domain`) comes
 * first when the entry captures one, else the entry's `api_base_url`. Whatever the source, the
 * host must be one of the entry's `api_hosts`, a name (never an IP literal), reached over https
 * (http only where the entry allows insecure URLs: LINKVAULT_ALLOW_INSECURE_PROVIDER_URLS in
 * development), with no credentials, query or fragment. RFC 9700 §4.9: a token is sent only to
 * the resource it is meant for; metadata written at connect time is re-checked on every call, so a
 * catalogue tightened later applies to old links too.
 */

/** Captured metadata members that name the API base of one account, in order of preference. */
export const API_BASE_METADATA = ['instance_url', 'api_domain'] as const;

function refuse(detail: string): LinkvaultError {
  return new LinkvaultError('proxy_target_refused', { detail });
}

/** True when `host` is one of the entry's API hosts (`*.example.com`: any subdomain of example.com). */
export function isApiHost(entry: Pick<ProviderEntry, 'apiHosts'>, host: string): boolean {
  const h = host.toLowerCase();
  return entry.apiHosts.some((pattern) =>
    pattern.startsWith('*.')
      ? h.endsWith(pattern.slice(1)) && h.length > pattern.length - 1
      : h === pattern,
  );
}

/** The API base for `entry` and the link's `metadata`; rejects proxy_target_refused. */
export function resolveProxyTarget(
  entry: Pick<ProviderEntry, 'apiHosts' | 'apiBaseUrl' | 'captureMetadata' | 'insecureUrlsAllowed'>,
  metadata: Readonly<Record<string, string>>,
): URL {
  let source: string | null = null;
  let from = 'api_base_url';
  for (const key of API_BASE_METADATA) {
    const value = metadata[key];
    if (entry.captureMetadata.includes(key) && value !== undefined && value !== '') {
      source = value;
      from = `link metadata ${key}`;
      break;
    }
  }
  source ??= entry.apiBaseUrl;
  if (source === null)
    throw refuse('The provider has no api_base_url in the catalogue and the link captured no host');
  let url: URL;
  try {
    url = new URL(source);
  } catch {
    throw refuse(`The ${from} is not a URL`);
  }
  const schemeOk =
    url.protocol === 'https:' || (url.protocol === 'http:' && entry.insecureUrlsAllowed);
  if (!schemeOk) throw refuse(`The ${from} does not use https`);
  if (url.username !== '' || url.password !== '') throw refuse(`The ${from} carries credentials`);
  if (url.search !== '' || url.hash !== '') throw refuse(`The ${from} has a query or fragment`);
  if (isIP(url.hostname.replace(/^\[|\]$/g, '')) !== 0)
    throw refuse(`The ${from} names an IP address, not a host`);
  if (!isApiHost(entry, url.hostname))
    throw refuse(`The ${from} host is not one of the provider's api_hosts`);
  return url;
}
