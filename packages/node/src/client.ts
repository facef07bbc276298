import { LinkvaultApiError, type ProblemDetails } from './errors.js';
import { ServiceTokenMinter, type ServiceCredentials } from './service-jwt.js';

/**
 * The linkvault client for backend services: it signs its own short-lived service JWTs and calls
 * the /v1 API with typed inputs and answers. `getToken` caches each link's access token until it
 * is near expiry and sends at most one request per link at a time, whatever the number of callers.
 *
 * ```ts
 * const lv = new LinkvaultClient({ baseUrl, serviceId: 'crm-sync', kid: 'k1', key: process.env.LV_SECRET! });
 * const { connect_url } = await lv.createSession({ tenant_id: 'acme', user_id: 'u-42' });
 * const { access_token } = await lv.getToken(linkId);
 * ```
 */

export { LinkvaultApiError, isLinkvaultError } from './errors.js';
export type { LinkvaultErrorCode, ProblemDetails } from './errors.js';
export { ServiceTokenMinter, signServiceJwt } from './service-jwt.js';
export type { ServiceCredentials, ServiceJwtAlg } from './service-jwt.js';
export { signWebhook, verifyWebhook, WebhookVerificationError } from './webhooks.js';
export type {
  VerifyWebhookOptions,
  WebhookEvent,
  WebhookEventData,
  WebhookEventType,
  WebhookHeaders,
} from './webhooks.js';

export type LinkStatus = 'active' | 'needs_reauth' | 'revoked' | 'pending_confirmation';

export interface Link {
  readonly id: string;
  readonly tenant_id: string;
  readonly user_id: string;
  readonly provider_id: string;
  readonly status: LinkStatus;
  readonly granted_scopes: string[];
  readonly metadata: Record<string, string>;
  readonly created_at: string;
  readonly updated_at: string;
  readonly last_refreshed_at: string | null;
  readonly last_used_at: string | null;
}

export interface CreateSessionInput {
  readonly tenant_id: string;
  readonly user_id: string;
  /** Shown on the hosted pages so the person sees whom the connection is for. */
  readonly user_display?: string;
  readonly providers?: readonly string[];
  readonly return_to?: string;
  readonly require_confirmation?: boolean;
}

export interface Session {
  readonly session_token: string;
  readonly expires_at: string;
  readonly connect_url: string;
  readonly manage_url: string;
}

export interface ListLinksFilter {
  readonly tenant_id?: string;
  readonly user_id?: string;
  readonly provider_id?: string;
  readonly status?: 'active' | 'needs_reauth' | 'revoked';
}

export interface AccessToken {
  readonly access_token: string;
  readonly token_type: string;
  readonly expires_at: string | null;
  readonly scopes: string[] | null;
  readonly metadata: Record<string, string>;
}

export interface GetTokenOptions {
  readonly scopes?: readonly string[];
  /** The token must stay valid this long (seconds); also how early the cache lets go of it. */
  readonly minValiditySeconds?: number;
  /** Ask linkvault to refresh now, bypassing the cache. */
  readonly forceRefresh?: boolean;
}

export interface RevocationRecord {
  readonly link_id: string;
  readonly tenant_id: string;
  readonly user_id: string;
  readonly provider_id: string;
  readonly revoked_at: string;
  readonly revoked_by: 'user' | 'service' | 'admin' | 'provider';
  readonly reason: string;
  readonly provider_revocation: {
    readonly status: 'confirmed' | 'unsupported' | 'pending' | 'failed';
    readonly attempts: number;
  };
  readonly guidance: {
    readonly provider_name: string;
    readonly settings_url: string | null;
    readonly instructions: string | null;
    readonly privacy_policy_url: string | null;
  };
}

export interface ProxyRule {
  readonly method: string;
  readonly path: string;
}

export interface CreateGrantInput {
  readonly service_id: string;
  readonly tenant_id?: string | null;
  readonly provider_id?: string | null;
  readonly link_id?: string | null;
  readonly scopes?: readonly string[] | null;
  readonly purpose: string;
  readonly expires_at?: string | null;
  readonly token_release?: boolean;
  readonly proxy?: { readonly allow: readonly ProxyRule[] };
}

export interface Grant {
  readonly id: string;
  readonly service_id: string;
  readonly tenant_id: string | null;
  readonly provider_id: string | null;
  readonly link_id: string | null;
  readonly scopes: string[] | null;
  readonly purpose: string;
  readonly created_at: string;
  readonly expires_at: string | null;
}

export interface BulkRevocationInput {
  readonly tenant_id: string;
  readonly user_id?: string;
  readonly provider_id?: string;
  readonly reason: string;
}

export interface BulkRevocationStatus {
  readonly job_id: string;
  readonly status: 'running' | 'done';
  readonly total: number;
  readonly revoked: number;
  readonly provider_confirmed: number;
  readonly provider_failed: number;
  readonly provider_unsupported?: number;
}

export interface Provider {
  readonly id: string;
  readonly name: string;
  readonly category: string;
  readonly scopes: { readonly name: string; readonly description: string | null }[];
  readonly privacy: {
    readonly settings_url: string | null;
    readonly instructions: string;
    readonly policy_url: string;
  };
}

export interface AuditEvent {
  readonly seq: string;
  readonly at: string;
  readonly type: string;
  readonly request_id: string | null;
  readonly service_id?: string;
  readonly link_id?: string;
  readonly tenant_id?: string;
  readonly user_id?: string;
  readonly provider_id?: string;
  readonly grant_id?: string;
  readonly data: Record<string, unknown>;
}

export interface AuditQuery {
  readonly link_id?: string;
  readonly service_id?: string;
  readonly tenant_id?: string;
  readonly type?: string;
  readonly after?: string;
  readonly limit?: number;
}

export interface WebhookEndpoint {
  readonly id: string;
  readonly url: string;
  readonly events: string[];
  readonly tenant_id: string | null;
  readonly created_at: string;
  /** Set when linkvault stopped delivering (e.g. the receiver answered 410 Gone). */
  readonly disabled_at?: string | null;
  readonly disabled_reason?: string | null;
}

export interface CreatedWebhookEndpoint extends WebhookEndpoint {
  /** `whsec_…`: shown only in this answer; keep it to verify deliveries (verifyWebhook). */
  readonly secret: string;
}

export interface WebhookDelivery {
  readonly event_id: string;
  readonly type: string;
  readonly status: 'delivered' | 'retrying' | 'failed';
  readonly attempts: number;
  readonly last_status_code: number | null;
  readonly next_attempt_at: string | null;
}

export type ProxyMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

type QueryValue = string | number | boolean;

export interface ProxyRequest {
  readonly method: ProxyMethod;
  /**
   * The API path under the provider's `api_base_url`, e.g. `/crm/v3/objects/contacts`: sent as
   * written (no `?`, `#`, backslash or `.`/`..` segment; a grant's proxy rules must allow it).
   */
  readonly path: string;
  /** Query parameters, appended in order (an array repeats the name). */
  readonly query?:
    URLSearchParams | Readonly<Record<string, QueryValue | readonly QueryValue[] | undefined>>;
  /**
   * The body: a string, bytes, a Blob or a ReadableStream as they are; anything else is sent as
   * JSON (with `content-type: application/json` unless `headers` names one).
   */
  readonly body?: unknown;
  /** Headers for the provider (never `authorization`: linkvault attaches the link's token). */
  readonly headers?: Readonly<Record<string, string>>;
  /** Cancels the call. */
  readonly signal?: AbortSignal;
  /**
   * How long to wait for the answer's headers (default: the client's `timeoutMs`); linkvault cuts a
   * slow provider itself at LINKVAULT_PROXY_TIMEOUT_SECONDS (30 s by default).
   */
  readonly timeoutMs?: number;
}

export interface ProxyResponse {
  /** The provider's status, whatever it is (a 4xx or 5xx of the provider's resolves too). */
  readonly status: number;
  readonly headers: Headers;
  /** linkvault's request id for this call (`linkvault-proxy-request-id`). */
  readonly requestId: string;
  /** The provider's body, streamed (null when there is none); read it once, or use json()/text(). */
  readonly body: ReadableStream<Uint8Array> | null;
  json<T = unknown>(): Promise<T>;
  text(): Promise<string>;
}

/** Marks an answer relayed from the provider; linkvault's own refusals never carry it. */
const PROXY_REQUEST_ID = 'linkvault-proxy-request-id';
/** Methods the proxy may resend after a linkvault 429/503 with Retry-After: never POST or PATCH. */
const IDEMPOTENT: ReadonlySet<ProxyMethod> = new Set(['GET', 'PUT', 'DELETE']);

export interface LinkvaultClientOptions extends ServiceCredentials {
  /** linkvault's base URL, e.g. `https://vault.example.com`. */
  readonly baseUrl: string;
  /** How long before expiry a cached access token is let go (default 60 s). */
  readonly tokenRefreshLeadSeconds?: number;
  /** Retries of a 429/503 answer that carries Retry-After, for reads and token requests (default 2). */
  readonly maxRetries?: number;
  /** Longest Retry-After honoured by waiting (default 30 s); a longer one is raised at once. */
  readonly maxRetryAfterSeconds?: number;
  /** Per-request timeout (default 10 s). */
  readonly timeoutMs?: number;
  /** The fetch to use (default: the global fetch). */
  readonly fetch?: typeof fetch;
  /**
   * The token cache's clock (ms since the epoch), for tests. Service JWTs are always dated by the
   * real clock: linkvault checks their iat and exp against its own.
   */
  readonly now?: () => number;
  /** How to wait before a retry, for tests. */
  readonly sleep?: (ms: number) => Promise<void>;
}

interface CachedToken {
  readonly token: AccessToken;
  /** When the cache lets go of it (expiry minus the lead); null: not cached. */
  readonly freshUntilMs: number;
}

type Method = 'GET' | 'POST' | 'DELETE';

const defaultSleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export class LinkvaultClient {
  readonly #baseUrl: string;
  readonly #minter: ServiceTokenMinter;
  readonly #fetch: typeof fetch;
  readonly #now: () => number;
  readonly #sleep: (ms: number) => Promise<void>;
  readonly #leadMs: number;
  readonly #maxRetries: number;
  readonly #maxRetryAfterSeconds: number;
  readonly #timeoutMs: number;
  readonly #tokens = new Map<string, CachedToken>();
  readonly #inFlight = new Map<string, Promise<AccessToken>>();

  constructor(options: LinkvaultClientOptions) {
    const url = new URL(options.baseUrl);
    if (url.search || url.hash)
      throw new TypeError('linkvault: baseUrl takes no query or fragment');
    this.#baseUrl = url.href.replace(/\/$/, '');
    this.#now = options.now ?? Date.now;
    this.#minter = new ServiceTokenMinter(options);
    this.#fetch = options.fetch ?? fetch;
    this.#sleep = options.sleep ?? defaultSleep;
    this.#leadMs = (options.tokenRefreshLeadSeconds ?? 60) * 1000;
    this.#maxRetries = options.maxRetries ?? 2;
    this.#maxRetryAfterSeconds = options.maxRetryAfterSeconds ?? 30;
    this.#timeoutMs = options.timeoutMs ?? 10_000;
  }

  // Sessions

  /** POST /v1/sessions (role `sessions`). */
  createSession(input: CreateSessionInput): Promise<Session> {
    return this.#call('POST', '/v1/sessions', { body: input });
  }

  /** POST /v1/confirmations/{id} (role `sessions`): confirms a held link for its user. */
  confirmConnection(
    confirmationId: string,
    input: { readonly tenant_id: string; readonly user_id: string },
  ): Promise<Link> {
    return this.#call('POST', `/v1/confirmations/${segment(confirmationId)}`, { body: input });
  }

  // Providers

  /** GET /v1/providers. */
  async listProviders(): Promise<Provider[]> {
    return (await this.#call<{ providers: Provider[] }>('GET', '/v1/providers', { retry: true }))
      .providers;
  }

  // Links

  /** GET /v1/links (role `links:read`). */
  async listLinks(filter: ListLinksFilter = {}): Promise<Link[]> {
    return (
      await this.#call<{ links: Link[] }>('GET', `/v1/links${query(filter)}`, { retry: true })
    ).links;
  }

  /** GET /v1/links/{id} (role `links:read`). */
  getLink(linkId: string): Promise<Link> {
    return this.#call('GET', `/v1/links/${segment(linkId)}`, { retry: true });
  }

  /** DELETE /v1/links/{id} (role `links:revoke`); drops the cached token. */
  async revokeLink(
    linkId: string,
    options: { readonly reason?: string } = {},
  ): Promise<RevocationRecord> {
    this.invalidateToken(linkId);
    try {
      return await this.#call('DELETE', `/v1/links/${segment(linkId)}`, {
        ...(options.reason === undefined ? {} : { body: { reason: options.reason } }),
      });
    } finally {
      this.invalidateToken(linkId);
    }
  }

  /** GET /v1/links/{id}/revocation (role `links:read`). */
  getRevocation(linkId: string): Promise<RevocationRecord> {
    return this.#call('GET', `/v1/links/${segment(linkId)}/revocation`, { retry: true });
  }

  // Tokens

  /**
   * POST /v1/links/{id}/token (role `tokens` and a grant), cached: the answer is reused until
   * `tokenRefreshLeadSeconds` (or `minValiditySeconds`, if longer) before its expiry, and
   * concurrent callers for the same link and scopes share one request. A 429/503 with
   * Retry-After is retried after waiting that long. A 409 or 410 drops the cached token.
   */
  getToken(linkId: string, options: GetTokenOptions = {}): Promise<AccessToken> {
    const scopes = options.scopes ? [...new Set(options.scopes)].sort() : null;
    const key = `${linkId} ${scopes?.join(' ') ?? '*'}`;
    const leadMs = Math.max(this.#leadMs, (options.minValiditySeconds ?? 0) * 1000);
    if (!options.forceRefresh) {
      const cached = this.#tokens.get(key);
      if (cached && this.#now() < cached.freshUntilMs - (leadMs - this.#leadMs))
        return Promise.resolve(cached.token);
    }
    const flightKey = options.forceRefresh ? `${key} force` : key;
    const running = this.#inFlight.get(flightKey);
    if (running) return running;
    const body: Record<string, unknown> = {};
    if (scopes) body.scopes = scopes;
    if (options.minValiditySeconds !== undefined)
      body.min_validity_seconds = options.minValiditySeconds;
    if (options.forceRefresh) body.force_refresh = true;
    const request = (async () => {
      try {
        const token = await this.#call<AccessToken>('POST', `/v1/links/${segment(linkId)}/token`, {
          body,
          retry: true,
        });
        const expiresAtMs = token.expires_at === null ? Number.NaN : Date.parse(token.expires_at);
        if (Number.isFinite(expiresAtMs))
          this.#tokens.set(key, { token, freshUntilMs: expiresAtMs - this.#leadMs });
        else this.#tokens.delete(key);
        return token;
      } catch (err) {
        if (
          err instanceof LinkvaultApiError &&
          (err.status === 409 || err.status === 410 || err.status === 403 || err.status === 404)
        )
          this.invalidateToken(linkId);
        throw err;
      } finally {
        this.#inFlight.delete(flightKey);
      }
    })();
    this.#inFlight.set(flightKey, request);
    return request;
  }

  /** Forgets the cached tokens of a link (e.g. after the provider refused one). */
  invalidateToken(linkId: string): void {
    for (const key of this.#tokens.keys())
      if (key.startsWith(`${linkId} `)) this.#tokens.delete(key);
  }

  // Proxy

  /**
   * `METHOD /v1/links/{id}/proxy/{path}` (role `proxy` and a grant whose proxy rules allow the
   * call): linkvault calls the provider's API with the link's token, which this service never
   * sees. Any answer relayed from the provider resolves, its 4xx and 5xx included; linkvault's own
   * refusals (proxy_not_allowed, proxy_target_refused, proxy_timeout, link_not_found, ...) reject
   * with LinkvaultApiError. A linkvault 429/503 with Retry-After is retried like a read for GET,
   * PUT and DELETE with a body that can be sent again; POST and PATCH are never resent.
   * `timeoutMs` (the call's, else the client's) bounds the wait for the answer's headers, not the
   * body's streaming.
   */
  async proxy(linkId: string, request: ProxyRequest): Promise<ProxyResponse> {
    const method = request.method;
    if (!['GET', 'POST', 'PUT', 'PATCH', 'DELETE'].includes(method))
      throw new TypeError(
        `linkvault: the proxy takes GET, POST, PUT, PATCH or DELETE, not ${method}`,
      );
    const url = `${this.#baseUrl}/v1/links/${segment(linkId)}/proxy${proxyPath(request.path)}${proxyQuery(request.query)}`;
    const headers = new Headers(request.headers);
    if (headers.has('authorization'))
      throw new TypeError('linkvault: the proxy attaches the token; send no authorization header');
    let body: RequestInit['body'] = null;
    if (request.body !== undefined && request.body !== null) {
      const raw = request.body;
      if (
        typeof raw === 'string' ||
        raw instanceof Uint8Array ||
        raw instanceof ArrayBuffer ||
        raw instanceof Blob ||
        raw instanceof ReadableStream ||
        raw instanceof URLSearchParams
      )
        body = raw as RequestInit['body'];
      else {
        body = JSON.stringify(raw);
        if (!headers.has('content-type')) headers.set('content-type', 'application/json');
      }
    }
    // A stream is read by the first attempt: it cannot be sent twice.
    const retry = IDEMPOTENT.has(method) && !(body instanceof ReadableStream);
    for (let attempt = 0; ; attempt++) {
      headers.set('authorization', `Bearer ${this.#minter.token()}`);
      const timeout = new AbortController();
      const timer = setTimeout(
        () => timeout.abort(new DOMException('linkvault: proxy call timed out', 'TimeoutError')),
        request.timeoutMs ?? this.#timeoutMs,
      );
      const signal = request.signal
        ? AbortSignal.any([request.signal, timeout.signal])
        : timeout.signal;
      let response: Response;
      try {
        response = await this.#fetch(url, {
          method,
          headers,
          body,
          redirect: 'manual',
          signal,
          ...(body instanceof ReadableStream ? { duplex: 'half' } : {}),
        } as RequestInit);
      } finally {
        clearTimeout(timer);
      }
      const requestId = response.headers.get(PROXY_REQUEST_ID);
      if (requestId !== null)
        return {
          status: response.status,
          headers: response.headers,
          requestId,
          body: response.body,
          json: <T>() => response.json() as Promise<T>,
          text: () => response.text(),
        };
      const error = apiErrorOf(response, await response.text());
      const wait = error.retryAfterSeconds;
      if (
        retry &&
        (error.status === 429 || error.status === 503) &&
        wait !== null &&
        wait <= this.#maxRetryAfterSeconds &&
        attempt < this.#maxRetries
      ) {
        await this.#sleep(wait * 1000);
        continue;
      }
      throw error;
    }
  }

  // Grants

  /** POST /v1/grants (role `admin`). */
  createGrant(input: CreateGrantInput): Promise<Grant> {
    return this.#call('POST', '/v1/grants', { body: input });
  }

  /** GET /v1/grants (role `admin`). */
  async listGrants(serviceId?: string): Promise<Grant[]> {
    return (
      await this.#call<{ grants: Grant[] }>(
        'GET',
        `/v1/grants${query({ service_id: serviceId })}`,
        { retry: true },
      )
    ).grants;
  }

  /** DELETE /v1/grants/{id} (role `admin`). */
  async deleteGrant(grantId: string): Promise<void> {
    await this.#call('DELETE', `/v1/grants/${segment(grantId)}`);
  }

  // Revocations

  /** POST /v1/revocations (role `admin`): bulk revocation; a user's erasure is tenant_id + user_id. */
  startBulkRevocation(input: BulkRevocationInput): Promise<{ job_id: string; matched: number }> {
    return this.#call('POST', '/v1/revocations', { body: input });
  }

  /** GET /v1/revocations/{job_id} (role `admin`). */
  getBulkRevocation(jobId: string): Promise<BulkRevocationStatus> {
    return this.#call('GET', `/v1/revocations/${segment(jobId)}`, { retry: true });
  }

  // Audit

  /** GET /v1/audit (role `admin`): events oldest first after the cursor `after`. */
  listAudit(q: AuditQuery = {}): Promise<{ events: AuditEvent[]; next: string | null }> {
    return this.#call('GET', `/v1/audit${query(q)}`, { retry: true });
  }

  // Webhook endpoints

  /** POST /v1/webhook-endpoints (role `admin`); the answer's `secret` is shown only once. */
  createWebhookEndpoint(input: {
    readonly url: string;
    readonly events?: readonly string[];
    readonly tenant_id?: string;
  }): Promise<CreatedWebhookEndpoint> {
    return this.#call('POST', '/v1/webhook-endpoints', { body: input });
  }

  /** GET /v1/webhook-endpoints (role `admin`; no secrets). */
  async listWebhookEndpoints(): Promise<WebhookEndpoint[]> {
    const answer = await this.#call<{
      endpoints?: WebhookEndpoint[];
      webhook_endpoints?: WebhookEndpoint[];
    }>('GET', '/v1/webhook-endpoints', { retry: true });
    return answer.endpoints ?? answer.webhook_endpoints ?? [];
  }

  /** DELETE /v1/webhook-endpoints/{id} (role `admin`). */
  async deleteWebhookEndpoint(endpointId: string): Promise<void> {
    await this.#call('DELETE', `/v1/webhook-endpoints/${segment(endpointId)}`);
  }

  /** GET /v1/webhook-endpoints/{id}/deliveries (role `admin`). */
  async listWebhookDeliveries(endpointId: string): Promise<WebhookDelivery[]> {
    return (
      await this.#call<{ deliveries: WebhookDelivery[] }>(
        'GET',
        `/v1/webhook-endpoints/${segment(endpointId)}/deliveries`,
        { retry: true },
      )
    ).deliveries;
  }

  // Transport

  async #call<T>(
    method: Method,
    path: string,
    options: { readonly body?: unknown; readonly retry?: boolean } = {},
  ): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = {
        authorization: `Bearer ${this.#minter.token()}`,
        accept: 'application/json',
      };
      if (options.body !== undefined) headers['content-type'] = 'application/json';
      const response = await this.#fetch(`${this.#baseUrl}${path}`, {
        method,
        headers,
        ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }),
        redirect: 'manual',
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
      const text = await response.text();
      if (response.ok) return (text === '' ? undefined : JSON.parse(text)) as T;
      const error = apiErrorOf(response, text);
      const wait = error.retryAfterSeconds;
      if (
        options.retry &&
        (error.status === 429 || error.status === 503) &&
        wait !== null &&
        wait <= this.#maxRetryAfterSeconds &&
        attempt < this.#maxRetries
      ) {
        // Never earlier than the server asked (RFC 9110 §10.2.3).
        await this.#sleep(wait * 1000);
        continue;
      }
      throw error;
    }
  }
}

function apiErrorOf(response: Response, text: string): LinkvaultApiError {
  let problem: ProblemDetails | null = null;
  if (/json/.test(response.headers.get('content-type') ?? '')) {
    try {
      const parsed = JSON.parse(text) as unknown;
      if (parsed && typeof parsed === 'object') problem = parsed as ProblemDetails;
    } catch {
      problem = null;
    }
  }
  const retryAfter = response.headers.get('retry-after');
  return new LinkvaultApiError({
    status: response.status,
    problem,
    requestId: response.headers.get('x-request-id'),
    retryAfterSeconds: retryAfter !== null && /^\d+$/.test(retryAfter) ? Number(retryAfter) : null,
  });
}

/** A path segment: encoded, so an id can never change the route. */
function segment(value: string): string {
  if (typeof value !== 'string' || value === '')
    throw new TypeError('linkvault: an id is required');
  return encodeURIComponent(value);
}

/**
 * The proxied path, checked so that it stays under `/proxy/`: fetch resolves `.`/`..` segments
 * (`%2e` spellings included) and reads `\\` as `/`, which would send the call to another route.
 */
function proxyPath(path: string): string {
  if (typeof path !== 'string' || !path.startsWith('/'))
    throw new TypeError('linkvault: the proxy path starts with /');
  if (/[?#\\]/.test(path))
    throw new TypeError('linkvault: the proxy path takes no ?, # or \\ (use query for parameters)');
  if (path.split('/').some((s) => /^(?:\.|%2e){1,2}$/i.test(s)))
    throw new TypeError('linkvault: the proxy path takes no . or .. segment');
  return path;
}

function proxyQuery(values: ProxyRequest['query']): string {
  if (values === undefined) return '';
  const params = new URLSearchParams();
  if (values instanceof URLSearchParams) for (const [n, v] of values) params.append(n, v);
  else
    for (const [name, value] of Object.entries(values))
      if (value !== undefined)
        for (const v of Array.isArray(value) ? value : [value]) params.append(name, String(v));
  const text = params.toString();
  return text === '' ? '' : `?${text}`;
}

function query(values: object): string {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(values) as [string, unknown][])
    if (value !== undefined) params.set(name, String(value));
  const text = params.toString();
  return text === '' ? '' : `?${text}`;
}
