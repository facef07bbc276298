import { AsyncLocalStorage } from 'node:async_hooks';
import { timingSafeEqual } from 'node:crypto';
import * as client from 'openid-client';
import type { Config, ProviderCredentials } from '../config.js';
import { LinkvaultError } from '../errors.js';
import type { Catalogue, ProviderEntry, ResolvedEndpoints } from '../providers/catalogue.js';
import { Secret } from '../secret.js';
import type {
  AuthorizationChecks,
  AuthorizationStart,
  CompletedAuthorization,
  EndpointVariables,
  OAuthClient,
  RevocationOutcome,
  TokenSet,
} from './oauth-client.js';

/**
 * The one adapter of the OAuthClient port, and the only file that imports openid-client.
 *
 * Transport: every HTTP request to a provider goes through one `customFetch` wrapper that
 *   - bounds the request with config.providerTimeoutMs (AbortSignal), never retries;
 *   - records what happened on the wire (sent or not, status, Retry-After, RFC 6749 `error`) in a
 *     per-call context (AsyncLocalStorage), so failures are classified from facts, never from
 *     message text;
 *   - caps response bodies (64 KiB for token/revocation endpoints: RFC 9700 §4 "defensive
 *     parsing"; larger answers are refused as invalid_token_response);
 *   - applies the catalogue's token-response quirks (Slack 200 ok:false, GitHub form-encoded
 *     answers and 200+error, missing token_type).
 *
 * Accepted token types: `bearer` (any case). A token response WITHOUT token_type is accepted as
 * bearer (RFC 6749 §5.1 makes it required, but several catalogue providers omit it and every one
 * of them issues Bearer tokens); Slack's `bot`/`user` token types are Slack's names for Bearer
 * tokens and are accepted for Slack only. Anything else (dpop, mac, ...) is invalid_token_response.
 *
 * Issuer (RFC 9207): for OIDC entries the expected issuer is the discovered one; an `iss` in the
 * authorization response must equal it, and is required when the metadata advertises
 * authorization_response_iss_parameter_supported. Plain OAuth 2.0 entries have no issuer
 * identifier: an `iss` they send cannot be checked and is ignored; the mix-up defence for them is
 * the per-provider redirect URI (RFC 9700 §4.4.2.2) that the connect routes use.
 *
 * Plain OAuth 2.0 entries never yield an ID token: one that arrives unasked is dropped unread.
 *
 * extra.maybe_delivered on provider_unavailable: false when the request provably never reached
 * the provider (connection refused, DNS, TLS failure) or the provider said "not now" (429, 503);
 * true for timeouts, connections dropped mid-answer, and other 5xx (the provider may have acted,
 * e.g. rotated the refresh token, before failing).
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
}

/** Cap on token, revocation and custom-revocation answers. */
export const TOKEN_RESPONSE_MAX_BYTES = 64 * 1024;
/** Cap on discovery documents. */
export const DISCOVERY_MAX_BYTES = 512 * 1024;

/** RFC 6749 §4.1.2.1 and OIDC Core §3.1.2.6 authorization error codes; anything else is reported as 'unknown'. */
const AUTHORIZATION_ERROR_CODES = new Set([
  'invalid_request', 'unauthorized_client', 'access_denied', 'unsupported_response_type', 'invalid_scope',
  'server_error', 'temporarily_unavailable', 'interaction_required', 'login_required', 'account_selection_required',
  'consent_required', 'invalid_request_uri', 'invalid_request_object', 'request_not_supported',
  'request_uri_not_supported', 'registration_not_supported',
]);
/** RFC 6749 §5.2 and RFC 7009 §2.2.1 token/revocation endpoint error codes. */
const TOKEN_ERROR_CODES = new Set([
  'invalid_request', 'invalid_client', 'invalid_grant', 'unauthorized_client', 'unsupported_grant_type', 'invalid_scope',
  'unsupported_token_type', 'invalid_token', 'server_error', 'temporarily_unavailable',
]);

/** Slack and GitHub error names → the RFC 6749 code they mean (everything else stays as given, then 'unknown'). */
const PROVIDER_ERROR_ALIASES: Readonly<Record<string, string>> = {
  // Slack oauth.v2.access
  invalid_code: 'invalid_grant',
  code_already_used: 'invalid_grant',
  code_expired: 'invalid_grant',
  bad_redirect_uri: 'invalid_grant',
  invalid_refresh_token: 'invalid_grant',
  token_revoked: 'invalid_grant',
  token_expired: 'invalid_grant',
  invalid_client_id: 'invalid_client',
  bad_client_secret: 'invalid_client',
  invalid_grant_type: 'unsupported_grant_type',
  oauth_authorization_url_mismatch: 'invalid_grant',
  // GitHub
  bad_verification_code: 'invalid_grant',
  bad_refresh_token: 'invalid_grant',
  redirect_uri_mismatch: 'invalid_grant',
  incorrect_client_credentials: 'invalid_client',
  unsupported_grant_type: 'unsupported_grant_type',
};

/** Network failures that happen before any byte of the request could reach the provider. */
const NOT_DELIVERED_CODES = new Set([
  'ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'UND_ERR_CONNECT_TIMEOUT',
  'CERT_HAS_EXPIRED', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'ERR_TLS_CERT_ALTNAME_INVALID', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'ERR_SSL_WRONG_VERSION_NUMBER',
]);

type CallKind = 'discovery' | 'authorization_code' | 'refresh' | 'revoke';

/** What happened on the wire during one port call (filled by the fetch wrapper). */
interface CallContext {
  readonly kind: CallKind;
  readonly entry: ProviderEntry;
  requests: number;
  status: number | null;
  retryAfterSeconds: number | undefined;
  /** RFC 6749 `error` member of an error answer (after quirk mapping). */
  errorCode: string | null;
  tooLarge: boolean;
  /** Set when a request got no HTTP answer: 'refused' = never reached the provider. */
  transport: 'refused' | 'lost' | 'timeout' | null;
}

class ResponseTooLarge extends Error {
  constructor() {
    super('response body over the size cap');
    this.name = 'ResponseTooLarge';
  }
}

/** Parses Retry-After (delta-seconds or HTTP-date, RFC 9110 §10.2.3) into whole seconds ≥ 0. */
export function parseRetryAfter(value: string | null, nowMs: number = Date.now()): number | undefined {
  if (value === null) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Math.min(Number(text), 86_400);
  const at = Date.parse(text);
  if (Number.isNaN(at)) return undefined;
  return Math.min(Math.max(0, Math.ceil((at - nowMs) / 1000)), 86_400);
}

async function readCapped(response: Response, maxBytes: number): Promise<Uint8Array> {
  const declared = Number(response.headers.get('content-length') ?? NaN);
  if (Number.isFinite(declared) && declared > maxBytes) {
    await response.body?.cancel().catch(() => undefined);
    throw new ResponseTooLarge();
  }
  if (!response.body) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw new ResponseTooLarge();
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.byteLength;
  }
  return out;
}

function errorCodeOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

function transportFailure(err: unknown): CallContext['transport'] {
  const name = (err as { name?: unknown } | null)?.name;
  if (name === 'TimeoutError' || name === 'AbortError') return 'timeout';
  for (let e: unknown = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = errorCodeOf(e);
    if (code && NOT_DELIVERED_CODES.has(code)) return 'refused';
    const n = (e as { name?: unknown }).name;
    if (n === 'TimeoutError' || n === 'AbortError') return 'timeout';
  }
  return 'lost';
}

function mapProviderErrorName(name: string): string {
  return PROVIDER_ERROR_ALIASES[name] ?? name;
}

function isJsonObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const NULL_BODY_STATUSES = new Set([101, 204, 205, 304]);

function jsonResponse(status: number, body: Record<string, unknown>, from: Headers): Response {
  const headers = new Headers(from);
  headers.set('content-type', 'application/json');
  headers.delete('content-length');
  headers.delete('content-encoding');
  return new Response(JSON.stringify(body), { status, headers });
}

/** Members of a token response that are never copied into TokenSet.extra (credential-looking, or already modelled). */
const MODELLED_MEMBERS = new Set(['access_token', 'refresh_token', 'id_token', 'token_type', 'expires_in', 'scope', 'ok']);
const SECRET_LOOKING = /token|secret|password|code|verifier|signature|webhook/i;

function nonSecretMembers(value: Record<string, unknown>, top: boolean): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    if ((top && MODELLED_MEMBERS.has(key)) || SECRET_LOOKING.test(key)) continue;
    if (isJsonObject(v)) out[key] = nonSecretMembers(v, false);
    else if (Array.isArray(v)) out[key] = v.filter((x) => !isJsonObject(x) && !Array.isArray(x));
    else out[key] = v;
  }
  return out;
}

/** Reads `exp` from a JWT access token (monday OAuth 2.1), for refresh scheduling only: never trusted for security. */
function jwtExpiryMs(token: string): number | null {
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    const payload: unknown = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8'));
    const exp = isJsonObject(payload) ? payload.exp : undefined;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : null;
  } catch {
    return null;
  }
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** A cause that can be logged: the library's error name/code and fixed message, never its attached bodies. */
function safeCause(err: unknown): Error {
  if (err instanceof LinkvaultError) return err;
  const name = (err as { name?: unknown } | null)?.name;
  const code = errorCodeOf(err);
  const message = err instanceof Error ? err.message : String(err);
  const e = new Error(`${typeof name === 'string' ? name : 'Error'}${code ? ` [${code}]` : ''}: ${message}`);
  e.name = 'ProviderCallError';
  return e;
}

const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/;

/**
 * Builds the OAuthClient adapter. Discovery documents are fetched once per (provider, resolved
 * issuer), shared by concurrent callers (single flight) and cached for the life of the process;
 * a failed discovery is not cached, so the next call tries again.
 */
export function createOAuthClient(options: CreateOAuthClientOptions): OAuthClient {
  const { catalogue, config, log } = options;
  const fetchImpl = options.fetch ?? globalThis.fetch;
  const timeoutMs = config.providerTimeoutMs;
  const calls = new AsyncLocalStorage<CallContext>();
  const discovered = new Map<string, Promise<client.Configuration>>();

  // ---------------------------------------------------------------- transport

  const providerFetch: client.CustomFetch = async (url, init) => {
    const ctx = calls.getStore();
    if (!ctx) throw new Error('provider request outside a port call');
    const entry = ctx.entry;
    const headers: Record<string, string> = { ...init.headers };
    // GitHub answers form-encoded unless asked for JSON.
    if (entry.tokenResponse === 'github') headers.accept = 'application/json';
    const ownTimeout = AbortSignal.timeout(timeoutMs);
    const signal = init.signal ? AbortSignal.any([init.signal, ownTimeout]) : ownTimeout;
    ctx.requests += 1;
    let response: Response;
    try {
      response = await fetchImpl(url, { ...init, headers, signal } as RequestInit);
    } catch (err) {
      ctx.transport = transportFailure(err);
      throw err;
    }
    ctx.status = response.status;
    ctx.retryAfterSeconds = parseRetryAfter(response.headers.get('retry-after'));
    let bytes: Uint8Array;
    try {
      bytes = await readCapped(response, ctx.kind === 'discovery' ? DISCOVERY_MAX_BYTES : TOKEN_RESPONSE_MAX_BYTES);
    } catch (err) {
      if (err instanceof ResponseTooLarge) ctx.tooLarge = true;
      else ctx.transport = transportFailure(err) === 'timeout' ? 'timeout' : 'lost';
      throw err;
    }
    if (ctx.kind === 'discovery') return new Response(NULL_BODY_STATUSES.has(response.status) ? null : bytes, response);
    return applyQuirks(ctx, response, bytes);
  };

  /** Rewrites a token/revocation endpoint answer into RFC 6749 shape according to the entry's quirks. */
  function applyQuirks(ctx: CallContext, response: Response, bytes: Uint8Array): Response {
    const { entry } = ctx;
    const status = response.status;
    // RFC 7009 §2.2: the content of a successful revocation answer is ignored; some providers answer 204.
    if (ctx.kind === 'revoke' && entry.revocation.style === 'rfc7009' && status >= 200 && status < 300) return new Response(null, { status: 200 });
    if (NULL_BODY_STATUSES.has(status)) return new Response(null, response);
    const contentType = (response.headers.get('content-type') ?? '').toLowerCase();
    const text = new TextDecoder().decode(bytes);
    let json: Record<string, unknown> | null = null;
    if (contentType.includes('json')) {
      try {
        const parsed: unknown = JSON.parse(text);
        if (isJsonObject(parsed)) json = parsed;
      } catch {
        json = null;
      }
    } else if (entry.tokenResponse === 'github' && contentType.includes('application/x-www-form-urlencoded')) {
      json = Object.fromEntries(new URLSearchParams(text));
    }
    if (json === null) return new Response(bytes, response);

    if (status >= 400 && typeof json.error === 'string') {
      json = { ...json, error: mapProviderErrorName(json.error) };
      ctx.errorCode = json.error as string;
      return jsonResponse(status, json, response.headers);
    }
    if (ctx.kind === 'authorization_code' || ctx.kind === 'refresh') {
      // Slack: every answer is HTTP 200; errors are ok:false with Slack's own error name.
      if (entry.tokenResponse === 'slack' && json.ok === false) {
        const name = typeof json.error === 'string' ? json.error : 'unknown';
        if (name === 'ratelimited') {
          ctx.status = 429;
          return jsonResponse(429, { error: 'temporarily_unavailable' }, response.headers);
        }
        ctx.errorCode = mapProviderErrorName(name);
        ctx.status = 400;
        return jsonResponse(400, { error: ctx.errorCode }, response.headers);
      }
      // GitHub: errors may come back as HTTP 200 with an `error` member.
      if (status < 300 && typeof json.error === 'string' && json.access_token === undefined) {
        ctx.errorCode = mapProviderErrorName(json.error);
        ctx.status = 400;
        return jsonResponse(400, { error: ctx.errorCode }, response.headers);
      }
      if (status < 300 && json.access_token !== undefined) {
        json = { ...json };
        if (json.token_type === undefined) json.token_type = 'Bearer';
        if (entry.tokenResponse === 'slack' && (json.token_type === 'bot' || json.token_type === 'user')) json.token_type = 'Bearer';
        if (entry.issuer === null) delete json.id_token;
        return jsonResponse(status, json, response.headers);
      }
    }
    return jsonResponse(status, json, response.headers);
  }

  // ---------------------------------------------------------------- classification

  function unavailable(ctx: CallContext, cause: unknown, detail: string, maybeDelivered: boolean): LinkvaultError {
    return new LinkvaultError('provider_unavailable', {
      detail,
      cause: safeCause(cause),
      ...(ctx.retryAfterSeconds === undefined ? {} : { retryAfterSeconds: ctx.retryAfterSeconds }),
      extra: { maybe_delivered: maybeDelivered, provider_id: ctx.entry.id },
    });
  }

  /** The port's classification (oauth-client.ts header), from wire facts and RFC 6749 codes only. */
  function classify(err: unknown, ctx: CallContext): LinkvaultError {
    if (err instanceof LinkvaultError) return err;
    const provider = ctx.entry.name;
    const bodyError = err instanceof client.ResponseBodyError ? err.error : null;
    const code = bodyError ?? ctx.errorCode;
    const status = ctx.status;
    let result: LinkvaultError;
    if (ctx.tooLarge) {
      result = new LinkvaultError(ctx.kind === 'discovery' ? 'provider_misconfigured' : 'invalid_token_response', {
        detail: `${provider} answered with an oversized body`,
        cause: new Error(`response body over the ${ctx.kind === 'discovery' ? DISCOVERY_MAX_BYTES : TOKEN_RESPONSE_MAX_BYTES}-byte cap`),
      });
    } else if (ctx.transport !== null) {
      // RFC 9700 §4.14: a refresh that reached the provider may have rotated the refresh token.
      result = unavailable(ctx, err, ctx.transport === 'timeout' ? `${provider} did not answer in time` : `${provider} could not be reached`, ctx.transport !== 'refused');
    } else if (status === 429) {
      result = unavailable(ctx, err, `${provider} is rate limiting`, false);
    } else if (status !== null && status >= 500) {
      result = unavailable(ctx, err, `${provider} answered ${status}`, status !== 503);
    } else if (code === 'invalid_grant' && ctx.kind !== 'discovery') {
      result = new LinkvaultError('reauth_required', { detail: `${provider} no longer accepts this grant`, cause: safeCause(err) });
    } else if (code === 'invalid_client' || code === 'unauthorized_client' || (status === 401 && code === null)) {
      result = new LinkvaultError('provider_misconfigured', { detail: `${provider} rejected our client configuration`, cause: safeCause(err) });
    } else if (ctx.kind === 'discovery') {
      result = new LinkvaultError('provider_misconfigured', { detail: `${provider} discovery failed`, cause: safeCause(err) });
    } else if (code !== null || (status !== null && status >= 400)) {
      result = new LinkvaultError('provider_error', {
        detail: `${provider} answered with an error`,
        cause: safeCause(err),
        extra: { provider_error: code !== null && TOKEN_ERROR_CODES.has(code) ? code : 'unknown', ...(status === null ? {} : { provider_status: status }) },
      });
    } else if (status !== null && status < 300 && (ctx.kind === 'authorization_code' || ctx.kind === 'refresh')) {
      // A 2xx answer openid-client refused: missing/odd members, bad ID token (iss, aud, exp, nonce), token type.
      result = new LinkvaultError('invalid_token_response', { detail: `${provider} returned an unacceptable token response`, cause: safeCause(err) });
    } else if (errorCodeOf(err) === 'OAUTH_TIMEOUT' || errorCodeOf(err) === 'OAUTH_ABORT') {
      result = unavailable(ctx, err, `${provider} did not answer in time`, ctx.requests > 0);
    } else if (status !== null) {
      result = new LinkvaultError('provider_error', { detail: `${provider} answered unexpectedly`, cause: safeCause(err), extra: { provider_error: 'unknown', provider_status: status } });
    } else {
      result = new LinkvaultError('internal_error', { detail: 'OAuth call failed before reaching the provider', cause: safeCause(err) });
    }
    log?.warn(
      {
        provider_id: ctx.entry.id,
        call: ctx.kind,
        status,
        // Provider-chosen text reaches the log only when it looks like an error code.
        provider_error: code === null ? null : /^[A-Za-z0-9_.-]{1,64}$/.test(code) ? code : 'unrecognised',
        code: result.code,
        transport: ctx.transport,
        library_code: errorCodeOf(err) ?? null,
      },
      'provider call failed',
    );
    return result;
  }

  async function withCall<T>(kind: CallKind, entry: ProviderEntry, fn: (ctx: CallContext) => Promise<T>): Promise<T> {
    const ctx: CallContext = { kind, entry, requests: 0, status: null, retryAfterSeconds: undefined, errorCode: null, tooLarge: false, transport: null };
    try {
      return await calls.run(ctx, () => fn(ctx));
    } catch (err) {
      throw classify(err, ctx);
    }
  }

  // ---------------------------------------------------------------- configuration

  function lookup(providerId: string): { entry: ProviderEntry; credentials: ProviderCredentials } {
    const entry = catalogue.get(providerId);
    const credentials = entry ? catalogue.credentials(providerId) : null;
    if (!entry || !credentials) throw new LinkvaultError('provider_not_found', { detail: 'No such provider, or it is not enabled' });
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
    if (entry.insecureUrlsAllowed || config.allowInsecureProviderUrls) client.allowInsecureRequests(cfg);
    return cfg;
  }

  function discover(entry: ProviderEntry, credentials: ProviderCredentials, issuer: string): Promise<client.Configuration> {
    const key = `${entry.id}\n${issuer}`;
    let pending = discovered.get(key);
    if (!pending) {
      pending = withCall('discovery', entry, () =>
        client.discovery(new URL(issuer), credentials.clientId, { client_secret: credentials.clientSecret }, clientAuth(entry, credentials), {
          [client.customFetch]: providerFetch,
          timeout: timeoutMs / 1000,
          ...(entry.insecureUrlsAllowed || config.allowInsecureProviderUrls ? { execute: [client.allowInsecureRequests] } : {}),
        }),
      ).then(
        (cfg) => {
          log?.debug({ provider_id: entry.id }, 'provider discovery fetched');
          return prepare(cfg, entry);
        },
        (err: unknown) => {
          // Not cached: the next call tries again.
          discovered.delete(key);
          throw err;
        },
      );
      discovered.set(key, pending);
    }
    return pending;
  }

  /** The openid-client Configuration for one provider and one link's endpoint variables. */
  async function configurationFor(entry: ProviderEntry, credentials: ProviderCredentials, endpoints: ResolvedEndpoints): Promise<client.Configuration> {
    if (endpoints.authorizationUrl === null || endpoints.tokenUrl === null) {
      return discover(entry, credentials, endpoints.issuer!);
    }
    const server: client.ServerMetadata = {
      // Plain OAuth 2.0 has no issuer identifier; openid-client needs one: the token endpoint's
      // origin stands in. It is never compared with anything the provider sends (see the header).
      issuer: endpoints.issuer ?? new URL(endpoints.tokenUrl).origin,
      authorization_endpoint: endpoints.authorizationUrl,
      token_endpoint: endpoints.tokenUrl,
      ...(endpoints.revocationUrl !== null && entry.revocation.style === 'rfc7009' ? { revocation_endpoint: endpoints.revocationUrl } : {}),
    };
    return prepare(new client.Configuration(server, credentials.clientId, { client_secret: credentials.clientSecret }, clientAuth(entry, credentials)), entry);
  }

  function joinScopes(entry: ProviderEntry, scopes: readonly string[]): string | null {
    for (const s of scopes) {
      if (!SCOPE_TOKEN.test(s) || (entry.scopes.separator === ',' && s.includes(','))) {
        throw new LinkvaultError('invalid_request', { detail: 'A requested scope is not a valid scope token', extra: { parameter: 'scopes' } });
      }
    }
    return scopes.length === 0 ? null : scopes.join(entry.scopes.separator);
  }

  // ---------------------------------------------------------------- token sets

  function toTokenSet(entry: ProviderEntry, response: client.TokenEndpointResponse): TokenSet {
    const tokenType = String(response.token_type ?? '').toLowerCase();
    if (tokenType !== 'bearer') {
      throw new LinkvaultError('invalid_token_response', { detail: `${entry.name} issued a token type other than Bearer` });
    }
    if (typeof response.access_token !== 'string' || response.access_token.length === 0) {
      throw new LinkvaultError('invalid_token_response', { detail: `${entry.name} returned no access token` });
    }
    let expiresAtMs: number | null = null;
    if (typeof response.expires_in === 'number' && Number.isFinite(response.expires_in) && response.expires_in > 0) {
      expiresAtMs = Date.now() + response.expires_in * 1000;
    } else if (entry.tokenResponse === 'jwt_expiry') {
      expiresAtMs = jwtExpiryMs(response.access_token);
    }
    const scopes = typeof response.scope === 'string' ? response.scope.split(/[\s,]+/).filter(Boolean) : null;
    return Object.freeze({
      accessToken: new Secret(response.access_token),
      refreshToken: typeof response.refresh_token === 'string' && response.refresh_token.length > 0 ? new Secret(response.refresh_token) : null,
      idToken: entry.issuer !== null && typeof response.id_token === 'string' ? new Secret(response.id_token) : null,
      tokenType,
      expiresAtMs,
      scopes: scopes ? Object.freeze(scopes) : null,
      extra: Object.freeze(nonSecretMembers({ ...response } as Record<string, unknown>, true)),
    });
  }

  // ---------------------------------------------------------------- revocation styles

  async function revokeCustom(entry: ProviderEntry, credentials: ProviderCredentials, url: string, token: Secret): Promise<RevocationOutcome> {
    return withCall('revoke', entry, async (ctx): Promise<RevocationOutcome> => {
      const headers: Record<string, string> = {};
      let method = 'POST';
      let body: string | undefined;
      switch (entry.revocation.style) {
        case 'github_grant':
          // GitHub REST "Delete an app authorization": Basic client auth, the token in the JSON body (never the URL).
          method = 'DELETE';
          headers.authorization = `Basic ${Buffer.from(`${credentials.clientId}:${credentials.clientSecret}`).toString('base64')}`;
          headers.accept = 'application/vnd.github+json';
          headers['content-type'] = 'application/json';
          headers['x-github-api-version'] = '2022-11-28';
          body = JSON.stringify({ access_token: token.reveal() });
          break;
        case 'slack_auth_revoke':
          headers.authorization = `Bearer ${token.reveal()}`;
          headers['content-type'] = 'application/x-www-form-urlencoded';
          body = '';
          break;
        case 'intercom_uninstall':
          headers.authorization = `Bearer ${token.reveal()}`;
          headers.accept = 'application/json';
          headers['content-type'] = 'application/json';
          body = '{}';
          break;
        default:
          throw new LinkvaultError('internal_error', { detail: `no revocation implementation for style ${entry.revocation.style}` });
      }
      const response = await providerFetch(url, { method, headers, body, redirect: 'manual' });
      const status = response.status;
      if (entry.revocation.style === 'slack_auth_revoke' && status === 200) {
        const json: unknown = await response.json().catch(() => null);
        if (isJsonObject(json) && json.ok === true) return 'confirmed';
        const error = isJsonObject(json) && typeof json.error === 'string' ? json.error : 'unknown';
        // A token Slack no longer knows is as revoked as it gets (RFC 7009 §2.2 treats it the same way).
        if (error === 'invalid_auth' || error === 'token_revoked' || error === 'token_expired' || error === 'account_inactive') return 'confirmed';
        if (error === 'ratelimited') ctx.status = 429;
        else ctx.errorCode = 'unknown';
        throw new Error(`slack auth.revoke answered ok:false`);
      }
      if (status >= 200 && status < 300) return 'confirmed';
      // A Bearer-authenticated revocation refused with 401: the token is already dead.
      if (status === 401 && entry.revocation.style === 'intercom_uninstall') return 'confirmed';
      throw new Error(`revocation answered HTTP ${status}`);
    });
  }

  // ---------------------------------------------------------------- the port

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

      const params: Record<string, string> = { ...entry.authorizationParams, redirect_uri: request.redirectUri, response_type: 'code', state };
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
      checkIssuer(entry, cfg, params, checks);
      checkProviderError(entry, params);
      if (!params.get('code')) throw new LinkvaultError('invalid_request', { detail: 'The authorization response has no code', extra: { parameter: 'code' } });

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
      const tokens = toTokenSet(entry, result);
      const claims = entry.issuer !== null && typeof result.id_token === 'string' ? (result.claims() ?? null) : null;
      if (oidcExpected && claims === null) throw new LinkvaultError('invalid_token_response', { detail: `${entry.name} returned no ID token` });
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
      const result = await withCall('refresh', entry, () => client.refreshTokenGrant(cfg, request.refreshToken.reveal(), parameters));
      const tokens = toTokenSet(entry, result);
      // The port's contract: refreshToken is null when the provider did not rotate (some echo the old one back).
      if (tokens.refreshToken !== null && safeEqual(tokens.refreshToken.reveal(), request.refreshToken.reveal())) {
        return Object.freeze({ ...tokens, refreshToken: null });
      }
      return tokens;
    },

    async revoke(request): Promise<RevocationOutcome> {
      const { entry, credentials } = lookup(request.providerId);
      if (entry.revocation.style === 'none') return 'unsupported';
      const endpoints = catalogue.endpoints(entry.id, request.endpointVariables);
      if (entry.revocation.style !== 'rfc7009') {
        return revokeCustom(entry, credentials, endpoints.revocationUrl!, request.token);
      }
      let cfg = await configurationFor(entry, credentials, endpoints);
      if (endpoints.revocationUrl !== null && cfg.serverMetadata().revocation_endpoint !== endpoints.revocationUrl) {
        // A discovered provider whose catalogue entry names its own revocation URL.
        const as = cfg.serverMetadata();
        cfg = prepare(
          new client.Configuration(
            { issuer: as.issuer, token_endpoint: as.token_endpoint!, revocation_endpoint: endpoints.revocationUrl },
            credentials.clientId,
            { client_secret: credentials.clientSecret },
            clientAuth(entry, credentials),
          ),
          entry,
        );
      }
      if (!cfg.serverMetadata().revocation_endpoint) {
        throw new LinkvaultError('provider_misconfigured', { detail: `${entry.name} publishes no revocation endpoint` });
      }
      try {
        await withCall('revoke', entry, () => client.tokenRevocation(cfg, request.token.reveal(), { token_type_hint: request.tokenTypeHint }));
        return 'confirmed';
      } catch (err) {
        // RFC 7009 §2.2 says an invalid token gets 200; Salesforce and Zoho answer 400 invalid_token instead.
        if (err instanceof LinkvaultError && err.code === 'provider_error' && err.extra?.provider_error === 'invalid_token') return 'confirmed';
        throw err;
      }
    },
  };

  // ---------------------------------------------------------------- callback checks

  function checkRedirectUri(redirectUri: string): void {
    let parsed: URL;
    try {
      parsed = new URL(redirectUri);
    } catch {
      throw new LinkvaultError('internal_error', { detail: 'redirect URI is not an absolute URL' });
    }
    if ((parsed.protocol !== 'https:' && parsed.protocol !== 'http:') || parsed.hash || parsed.search) {
      throw new LinkvaultError('internal_error', { detail: 'redirect URI must be an http(s) URL without query or fragment' });
    }
  }

  function checkState(params: URLSearchParams, checks: AuthorizationChecks): void {
    const state = params.get('state');
    if (state === null || params.getAll('state').length !== 1 || !safeEqual(state, checks.state.reveal())) {
      throw new LinkvaultError('invalid_state', { detail: 'The authorization response state does not match this flow' });
    }
  }

  /** Callback-supplied variables (Zoho accounts-server) must be the ones the caller merged in. */
  function checkCallbackVariables(entry: ProviderEntry, params: URLSearchParams, variables: EndpointVariables): void {
    for (const v of entry.templateVariables) {
      if (v.callbackParameter === null || !params.has(v.callbackParameter)) continue;
      const given = params.get(v.callbackParameter)!.trim().toLowerCase().replace(/^https:\/\//, '').replace(/\/$/, '');
      if (variables[v.name]?.toLowerCase() !== given) {
        throw new LinkvaultError('invalid_request', {
          detail: `${v.callbackParameter} from the callback was not applied (resolve it with the catalogue and merge it into the endpoint variables)`,
          extra: { parameter: v.callbackParameter },
        });
      }
    }
  }

  /** RFC 9207 §2.4: compare `iss` before using anything else in the response, errors included. */
  function checkIssuer(entry: ProviderEntry, cfg: client.Configuration, params: URLSearchParams, checks: AuthorizationChecks): void {
    if (checks.expectedIssuer === null) return;
    const metadata = cfg.serverMetadata();
    const iss = params.getAll('iss');
    if (iss.length > 1) throw new LinkvaultError('issuer_mismatch', { detail: 'The authorization response carries more than one iss' });
    const given = iss[0];
    if (given === undefined) {
      if (metadata.authorization_response_iss_parameter_supported === true) {
        throw new LinkvaultError('issuer_mismatch', { detail: `${entry.name} advertises iss in authorization responses, but this one has none` });
      }
      return;
    }
    if (given !== checks.expectedIssuer || given !== metadata.issuer) {
      throw new LinkvaultError('issuer_mismatch', { detail: `The authorization response was not issued by ${entry.name}` });
    }
  }

  function checkProviderError(entry: ProviderEntry, params: URLSearchParams): void {
    const error = params.get('error');
    if (error === null) return;
    // Never echo the provider's text: only a registered code, else 'unknown'.
    const code = AUTHORIZATION_ERROR_CODES.has(error) ? error : 'unknown';
    throw new LinkvaultError('provider_denied', { detail: `${entry.name} answered the authorization request with an error`, extra: { provider_error: code } });
  }

  return Object.freeze(oauth);
}
