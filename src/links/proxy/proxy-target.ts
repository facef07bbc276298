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
  const { source, from } = chooseSource(entry, metadata);
  return checkTarget(entry, source, from);
}

/** Where the target comes from: the link's captured host when the entry captures one, else api_base_url. */
function chooseSource(
  entry: Pick<ProviderEntry, 'apiBaseUrl' | 'captureMetadata'>,
  metadata: Readonly<Record<string, string>>,
): { source: string | null; from: string } {
  for (const key of API_BASE_METADATA) {
    const value = metadata[key];
    if (entry.captureMetadata.includes(key) && value !== undefined && value !== '')
      return { source: value, from: `link metadata ${key}` };
  }
  return { source: entry.apiBaseUrl, from: 'api_base_url' };
}

function checkTarget(
  entry: Pick<ProviderEntry, 'apiHosts' | 'insecureUrlsAllowed'>,
  source: string | null,
  from: string,
): URL {
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

/** A checked target in the form node:http takes. */
export interface ProxyTarget {
  readonly secure: boolean;
  readonly protocol: string;
  readonly hostname: string;
  readonly port: number | undefined;
  /** The base's path without its trailing slashes ('' for the root): the call's path is appended. */
  readonly basePath: string;
}

/** Targets remembered per catalogue entry (at most this many sources each: captured hosts vary per account). */
const MAX_TARGETS_PER_ENTRY = 10_000;

/**
 * resolveProxyTarget for every call, without parsing and checking the same URL each time: the
 * outcome depends only on the catalogue entry and the source string chosen, so a checked target is
 * remembered per (entry object, source). The source is still chosen from the link's metadata on every
 * call, and an entry replaced in the catalogue is a new key, so a tightened catalogue applies at once.
 * Refusals are not remembered: they are recomputed, with their reason, on every call.
 */
export function createProxyTargets(): (
  entry: Pick<ProviderEntry, 'apiHosts' | 'apiBaseUrl' | 'captureMetadata' | 'insecureUrlsAllowed'>,
  metadata: Readonly<Record<string, string>>,
) => ProxyTarget {
  const byEntry = new WeakMap<object, Map<string, ProxyTarget>>();
  return (entry, metadata) => {
    const { source, from } = chooseSource(entry, metadata);
    let targets = byEntry.get(entry);
    const known = source === null ? undefined : targets?.get(source);
    if (known) return known;
    const url = checkTarget(entry, source, from);
    const target: ProxyTarget = {
      secure: url.protocol === 'https:',
      protocol: url.protocol,
      hostname: url.hostname,
      port: url.port === '' ? undefined : Number(url.port),
      basePath: url.pathname.replace(/\/+$/, ''),
    };
    if (!targets) byEntry.set(entry, (targets = new Map()));
    if (targets.size >= MAX_TARGETS_PER_ENTRY) targets.clear();
    targets.set(source!, target);
    return target;
  };
}
