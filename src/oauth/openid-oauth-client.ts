import { AsyncLocalStorage } from 'node:async_hooks';
import * as client from 'openid-client';
import type { Config, ProviderCredentials } from '../config.js';
import { LinkvaultError } from '../errors.js';
import type { Catalogue, ProviderEntry, ResolvedEndpoints } from '../providers/catalogue.js';
import { Secret } from '../secret.js';
import {
  checkCallbackVariables,
  checkIssuer,
  checkProviderError,
  checkRedirectUri,
  checkState,
} from './callback-checks.js';
import { classifyFailure, failureLogFields } from './classify-failure.js';
import type {
  AuthorizationStart,
  CompletedAuthorization,
  OAuthClient,
  RevocationOutcome,
  TokenSet,
} from './oauth-client.js';
import { startProviderCall, type CallKind, type ProviderCall } from './provider-call.js';
import { createProviderFetch } from './provider-fetch.js';
import { dropEchoedRefreshToken, readTokenSet } from './read-token-set.js';
import { revokeByCustomStyle, revokeByRfc7009 } from './revocation-styles.js';

/**
 * The one adapter of the OAuthClient port: openid-client for the protocol, with every provider
 * request sent through the provider fetch (timeouts, size caps, response quirks) inside a
 * ProviderCall whose wire facts classify any failure (classify-failure.ts).
 */

/** Minimal logger (pino-compatible). Never given token material. */
export interface OAuthLog {
  debug(obj: Record<string, unknown>, msg: string): void;
  warn(obj: Record<string, unknown>, msg: string): void;
}

export interface CreateOAuthClientOptions {
  readonly catalogue: Pick<Catalogue, 'get' | 'credentials' | 'endpoints'>;
  readonly config: Pick<Config, 'providerTimeoutMs' | 'allowInsecureProviderUrls'>;
  readonly log?: OAuthLog;
  /** Fetch implementation (defaults to the global fetch). */
  readonly fetch?: typeof fetch;
  /** Discovery documents kept at once (default 1,000); the least recently used goes first. */
  readonly discoveryCacheMaxEntries?: number;
  /** How long a discovery document is kept (default 1 h); providers rotate endpoints and keys. */
  readonly discoveryCacheTtlMs?: number;
  readonly now?: () => number;
}

/** Bounds the discovery cache: a templated issuer ({tenant}) gives a caller-chosen key space. */
export const DEFAULT_DISCOVERY_CACHE_MAX_ENTRIES = 1000;
export const DEFAULT_DISCOVERY_CACHE_TTL_MS = 3_600_000;

interface DiscoveryEntry {
  readonly pending: Promise<client.Configuration>;
  readonly expiresAtMs: number;
}

const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/;

/**
 * Builds the OAuthClient adapter. Discovery documents are fetched once per (provider, resolved
 * issuer), shared by concurrent callers (single flight) and cached, least recently used first out,
 * up to `discoveryCacheMaxEntries` for `discoveryCacheTtlMs`: with a templated issuer the key is
 * partly the end user's choice, so an unbounded cache would grow with every tenant anyone names.
 * A failed discovery is not cached, so the next call tries again.
 */
export function createOAuthClient(options: CreateOAuthClientOptions): OAuthClient {
  const { catalogue, config, log } = options;
  const timeoutMs = config.providerTimeoutMs;
  const calls = new AsyncLocalStorage<ProviderCall>();
  const now = options.now ?? Date.now;
  const discoveryMaxEntries =
    options.discoveryCacheMaxEntries ?? DEFAULT_DISCOVERY_CACHE_MAX_ENTRIES;
  const discoveryTtlMs = options.discoveryCacheTtlMs ?? DEFAULT_DISCOVERY_CACHE_TTL_MS;
  // Map keeps insertion order: re-inserting on every hit makes the first key the least recently used.
  const discovered = new Map<string, DiscoveryEntry>();
  const providerFetch = createProviderFetch({
    fetch: options.fetch ?? globalThis.fetch,
    timeoutMs,
    currentCall: () => calls.getStore(),
  });

  /**
   * Provider calls in flight. On Node 20 an AsyncLocalStorage that has run once keeps async hooks
   * on for every promise of the process (measured: ~7 µs more CPU per token release, which makes no
   * provider call), so it is disabled again whenever no provider call is in flight.
   */
  let inFlight = 0;

  async function withCall<T>(
    kind: CallKind,
    entry: ProviderEntry,
    fn: (call: ProviderCall) => Promise<T>,
  ): Promise<T> {
    const call = startProviderCall(kind, entry);
    inFlight++;
    try {
      return await calls.run(call, () => fn(call));
    } catch (err) {
      if (err instanceof LinkvaultError) throw err;
      const result = classifyFailure(err, call);
      log?.warn(failureLogFields(err, call, result), 'provider call failed');
      throw result;
    } finally {
      if (--inFlight === 0) calls.disable();
    }
  }

  function lookup(providerId: string): { entry: ProviderEntry; credentials: ProviderCredentials } {
    const entry = catalogue.get(providerId);
    const credentials = entry ? catalogue.credentials(providerId) : null;
    if (!entry || !credentials)
      throw new LinkvaultError('provider_not_found', {
        detail: 'No such provider, or it is not enabled',
      });
    return { entry, credentials };
  }

  function clientAuth(entry: ProviderEntry, credentials: ProviderCredentials): client.ClientAuth {
    return entry.tokenEndpointAuthMethod === 'client_secret_basic'
      ? client.ClientSecretBasic(credentials.clientSecret)
      : client.ClientSecretPost(credentials.clientSecret);
  }

  function prepare(cfg: client.Configuration, entry: ProviderEntry): client.Configuration {
    cfg[client.customFetch] = providerFetch;
    cfg.timeout = timeoutMs / 1000;
    // Loud on purpose: only LINKVAULT_ALLOW_INSECURE_PROVIDER_URLS (never in production) or the sandbox gets here.
    if (entry.insecureUrlsAllowed || config.allowInsecureProviderUrls)
      client.allowInsecureRequests(cfg);
    return cfg;
  }

  function discover(
    entry: ProviderEntry,
    credentials: ProviderCredentials,
    issuer: string,
  ): Promise<client.Configuration> {
    const key = `${entry.id}\n${issuer}`;
    const nowMs = now();
    const cached = discovered.get(key);
    discovered.delete(key);
    if (cached && cached.expiresAtMs > nowMs) {
      discovered.set(key, cached);
      return cached.pending;
    }
    const pending = withCall('discovery', entry, () =>
      client.discovery(
        new URL(issuer),
        credentials.clientId,
        { client_secret: credentials.clientSecret },
        clientAuth(entry, credentials),
        {
          [client.customFetch]: providerFetch,
          timeout: timeoutMs / 1000,
          ...(entry.insecureUrlsAllowed || config.allowInsecureProviderUrls
            ? { execute: [client.allowInsecureRequests] }
            : {}),
        },
      ),
    ).then(
      (cfg) => {
        log?.debug({ provider_id: entry.id }, 'provider discovery fetched');
        return prepare(cfg, entry);
      },
      (err: unknown) => {
        // Not cached: the next call tries again (unless another call has replaced it since).
        if (discovered.get(key)?.pending === pending) discovered.delete(key);
        throw err;
      },
    );
    discovered.set(key, { pending, expiresAtMs: nowMs + discoveryTtlMs });
    while (discovered.size > discoveryMaxEntries)
      discovered.delete(discovered.keys().next().value!);
    return pending;
  }

  /** The openid-client Configuration for one provider and one link's endpoint variables. */
  async function configurationFor(
    entry: ProviderEntry,
    credentials: ProviderCredentials,
    endpoints: ResolvedEndpoints,
  ): Promise<client.Configuration> {
    if (endpoints.authorizationUrl === null || endpoints.tokenUrl === null) {
      return discover(entry, credentials, endpoints.issuer!);
    }
    const server: client.ServerMetadata = {
      // Plain OAuth 2.0 has no issuer identifier; openid-client needs one: the token endpoint's
      // origin stands in. It is never compared with anything the provider sends (callback-checks.ts).
      issuer: endpoints.issuer ?? new URL(endpoints.tokenUrl).origin,
      authorization_endpoint: endpoints.authorizationUrl,
      token_endpoint: endpoints.tokenUrl,
      ...(endpoints.revocationUrl !== null && entry.revocation.style === 'rfc7009'
        ? { revocation_endpoint: endpoints.revocationUrl }
        : {}),
    };
    return prepare(
      new client.Configuration(
        server,
        credentials.clientId,
        { client_secret: credentials.clientSecret },
        clientAuth(entry, credentials),
      ),
      entry,
    );
  }

  function joinScopes(entry: ProviderEntry, scopes: readonly string[]): string | null {
    for (const s of scopes) {
      if (!SCOPE_TOKEN.test(s) || (entry.scopes.separator === ',' && s.includes(','))) {
        throw new LinkvaultError('invalid_request', {
          detail: 'A requested scope is not a valid scope token',
          extra: { parameter: 'scopes' },
        });
      }
    }
    return scopes.length === 0 ? null : scopes.join(entry.scopes.separator);
  }

  const oauth: OAuthClient = {
    async startAuthorization(request): Promise<AuthorizationStart> {
      const { entry, credentials } = lookup(request.providerId);
      const endpoints = catalogue.endpoints(entry.id, request.endpointVariables);
      checkRedirectUri(request.redirectUri);
      const cfg = await configurationFor(entry, credentials, endpoints);
      const scopes = request.scopes ?? endpoints.defaultScopes;
      const scope = joinScopes(entry, scopes);

      const state = client.randomState(); // 256 bits (RFC 9700 §4.7: CSRF protection)
      const codeVerifier = entry.pkce ? client.randomPKCECodeVerifier() : null;
      const oidc = entry.issuer !== null;
      const nonce = oidc && scopes.includes('openid') ? client.randomNonce() : null;

      const params: Record<string, string> = {
        ...entry.authorizationParams,
        redirect_uri: request.redirectUri,
        response_type: 'code',
        state,
      };
      if (scope !== null) params.scope = scope;
      if (codeVerifier !== null) {
        // RFC 9700 §2.1.1: PKCE S256 on every flow that supports it.
        params.code_challenge = await client.calculatePKCECodeChallenge(codeVerifier);
        params.code_challenge_method = 'S256';
      }
      if (nonce !== null) params.nonce = nonce;
      const url = client.buildAuthorizationUrl(cfg, params);
      return {
        url,
        checks: Object.freeze({
          state: new Secret(state),
          codeVerifier: codeVerifier === null ? null : new Secret(codeVerifier),
          nonce: nonce === null ? null : new Secret(nonce),
          expectedIssuer: oidc ? cfg.serverMetadata().issuer : null,
          redirectUri: request.redirectUri,
        }),
      };
    },

    async completeAuthorization(request): Promise<CompletedAuthorization> {
      const { entry, credentials } = lookup(request.providerId);
      const { checks } = request;
      const params = request.callbackUrl.searchParams;
      checkState(params, checks);
      checkCallbackVariables(entry, params, request.endpointVariables);
      const endpoints = catalogue.endpoints(entry.id, request.endpointVariables);
      const cfg = await configurationFor(entry, credentials, endpoints);
      checkIssuer(entry, cfg.serverMetadata(), params, checks);
      checkProviderError(entry, params);
      if (!params.get('code'))
        throw new LinkvaultError('invalid_request', {
          detail: 'The authorization response has no code',
          extra: { parameter: 'code' },
        });

      // The redirect URI sent to the token endpoint is the one sent at the start, never one
      // derived from the incoming request (RFC 6749 §4.1.3).
      const currentUrl = new URL(checks.redirectUri);
      for (const [k, v] of params) {
        if (k === 'iss' && checks.expectedIssuer === null) continue;
        currentUrl.searchParams.append(k, v);
      }
      const oidcExpected = checks.nonce !== null;
      const result = await withCall('authorization_code', entry, () =>
        // Exactly once: openid-client does not retry (no DPoP), and neither do we (RFC 6749 §4.1.2: codes are single use).
        client.authorizationCodeGrant(cfg, currentUrl, {
          expectedState: checks.state.reveal(),
          ...(checks.codeVerifier ? { pkceCodeVerifier: checks.codeVerifier.reveal() } : {}),
          ...(oidcExpected ? { expectedNonce: checks.nonce!.reveal() } : {}),
        }),
      );
      const tokens = readTokenSet(entry, result);
      const claims =
        entry.issuer !== null && typeof result.id_token === 'string'
          ? (result.claims() ?? null)
          : null;
      if (oidcExpected && claims === null)
        throw new LinkvaultError('invalid_token_response', {
          detail: `${entry.name} returned no ID token`,
        });
      return { tokens, idTokenClaims: claims ? Object.freeze({ ...claims }) : null };
    },

    async refresh(request): Promise<TokenSet> {
      const { entry, credentials } = lookup(request.providerId);
      const endpoints = catalogue.endpoints(entry.id, request.endpointVariables);
      const cfg = await configurationFor(entry, credentials, endpoints);
      const parameters: Record<string, string> = {};
      if (request.scopes) {
        const scope = joinScopes(entry, request.scopes);
        if (scope !== null) parameters.scope = scope;
      }
      // Never retried: the provider may rotate the refresh token on the first attempt (RFC 9700 §4.14.2).
      const result = await withCall('refresh', entry, () =>
        client.refreshTokenGrant(cfg, request.refreshToken.reveal(), parameters),
      );
      return dropEchoedRefreshToken(readTokenSet(entry, result), request.refreshToken);
    },

    async revoke(request): Promise<RevocationOutcome> {
      const { entry, credentials } = lookup(request.providerId);
      if (entry.revocation.style === 'none') return 'unsupported';
      const endpoints = catalogue.endpoints(entry.id, request.endpointVariables);
      if (entry.revocation.style !== 'rfc7009') {
        const url = endpoints.revocationUrl!;
        return withCall('revoke', entry, (call) =>
          revokeByCustomStyle(
            { entry, credentials, token: request.token },
            url,
            providerFetch,
            call,
          ),
        );
      }
      let cfg = await configurationFor(entry, credentials, endpoints);
      if (
        endpoints.revocationUrl !== null &&
        cfg.serverMetadata().revocation_endpoint !== endpoints.revocationUrl
      ) {
        // A discovered provider whose catalogue entry names its own revocation URL.
        const as = cfg.serverMetadata();
        cfg = prepare(
          new client.Configuration(
            {
              issuer: as.issuer,
              token_endpoint: as.token_endpoint!,
              revocation_endpoint: endpoints.revocationUrl,
            },
            credentials.clientId,
            { client_secret: credentials.clientSecret },
            clientAuth(entry, credentials),
          ),
          entry,
        );
      }
      return revokeByRfc7009({ entry, token: request.token }, cfg, request.tokenTypeHint, (call) =>
        withCall('revoke', entry, call),
      );
    },
  };

  return Object.freeze(oauth);
}
