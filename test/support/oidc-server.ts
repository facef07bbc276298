import { generateKeyPairSync, type JsonWebKey } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  saveConsentGrant,
  type GrantConstructor,
  type InteractionDetails,
} from '../../src/sandbox/sandbox-provider.js';
import { withOidcProviderNotices } from '../../src/sandbox/oidc-provider-notices.js';

/**
 * A real authorization server for tests: node-oidc-provider (v9) on a free loopback port.
 *
 * Two modes:
 * - `'oidc'`  an OpenID Provider: discovery at `${issuer}/.well-known/openid-configuration`,
 *             `openid` scope, signed ID tokens, nonce, `authorization_response_iss_parameter_supported`
 *             (RFC 9207 `iss` on every authorization response).
 * - `'oauth'` used as a plain OAuth 2.0 server: the catalogue entry (see {@link OidcServer.catalogueEntry})
 *             has no issuer and names the endpoints by hand, so no discovery happens and no
 *             `openid` scope is requested (no ID token).
 *
 * In both modes: PKCE (S256) is required for every client, refresh tokens are always issued
 * (offline_access not needed), rotation is configurable, revocation (RFC 7009) and introspection
 * (RFC 7662) are enabled, and access tokens are opaque (introspectable) tokens for the resource
 * `urn:linkvault:test-api` with scopes `api:read api:write`.
 *
 * Login and consent are driven without a browser by {@link OidcServer.completeLogin}: the server's
 * interaction URL is answered by this file (login as the given account, grant every requested
 * scope, or deny), through the provider's own `interactionFinished`, so the real authorization
 * endpoint issues the real code/state/iss redirect.
 *
 * Shared by several test suites (OAuth adapter, refresh races, revocation): keep it generic.
 */

/** A registered client. `token_endpoint_auth_method` defaults to client_secret_post. */
export interface OidcTestClient {
  readonly client_id: string;
  readonly client_secret: string;
  readonly redirect_uris: readonly string[];
  readonly token_endpoint_auth_method?: 'client_secret_post' | 'client_secret_basic';
}

export interface StartOidcServerOptions {
  readonly mode: 'oidc' | 'oauth';
  readonly clients: readonly OidcTestClient[];
  /** Rotate the refresh token on every refresh_token grant (default false: RFC 9700 §4.14.2 allows either). */
  readonly rotateRefreshTokens?: boolean;
  /** Access token lifetime (default 3600 s). */
  readonly accessTokenTtlSeconds?: number;
  /** Refresh token lifetime (default 14 days). */
  readonly refreshTokenTtlSeconds?: number;
  /** Merged over this file's `features` (node-oidc-provider configuration). */
  readonly features?: Record<string, unknown>;
  /** Listen port (default: a free port chosen by the OS). */
  readonly port?: number;
}

export interface CompleteLoginOptions {
  /** The account (becomes `sub`) that logs in. */
  readonly accountId: string;
  /** Answer the interaction with `error=access_denied` instead of logging in. */
  readonly deny?: boolean;
}

/** Counters of requests the server received, by kind. */
export interface OidcServerRequestCounts {
  /** Token endpoint hits by grant_type (hits with a missing/unparsable grant_type count as 'unknown'). */
  readonly token: Readonly<Record<string, number>>;
  readonly revocation: number;
  readonly introspection: number;
  readonly discovery: number;
}

export interface OidcServer {
  /** `http://127.0.0.1:<port>` (the issuer identifier: no trailing slash). */
  readonly issuer: string;
  readonly port: number;
  /** Same as issuer; the base URL of every endpoint. */
  readonly url: string;
  /** The node-oidc-provider instance (typed loosely: the package ships no types). */
  readonly provider: OidcProviderInstance;
  readonly mode: 'oidc' | 'oauth';
  /** Scopes a client should ask for in this mode (`openid` first in oidc mode). */
  readonly scopes: readonly string[];
  /** Token endpoint hits by grant_type (e.g. `{authorization_code: 1, refresh_token: 4}`). */
  tokenRequests(): Readonly<Record<string, number>>;
  /** All request counters. */
  requestCounts(): OidcServerRequestCounts;
  /**
   * A snake_case linkvault catalogue entry for this server (validates with
   * LINKVAULT_ALLOW_INSECURE_PROVIDER_URLS=true). oidc mode: issuer set, endpoints from discovery;
   * oauth mode: issuer null, endpoints by hand. `overrides` are shallow-merged over it.
   */
  catalogueEntry(id: string, overrides?: Record<string, unknown>): Record<string, unknown>;
  /** RFC 7662 introspection of any token, authenticated as the first registered client. */
  introspect(token: string): Promise<{ active: boolean } & Record<string, unknown>>;
  /**
   * Follows `authorizationUrl` like a browser (cookies kept), logs in as `accountId`, grants
   * every requested scope, and returns the final redirect to the client's redirect URI (with
   * `code`, `state` and `iss`, or `error`). Throws if the server answers anything unexpected.
   */
  completeLogin(authorizationUrl: URL | string, options: CompleteLoginOptions): Promise<URL>;
  /** Stops the server and drops open connections. */
  close(): Promise<void>;
}

/** The members of node-oidc-provider's Provider used here and by tests. */
export interface OidcProviderInstance {
  callback(): (req: IncomingMessage, res: ServerResponse) => void;
  use(middleware: (ctx: KoaContext, next: () => Promise<void>) => Promise<void>): void;
  interactionDetails(req: IncomingMessage, res: ServerResponse): Promise<InteractionDetails>;
  interactionFinished(
    req: IncomingMessage,
    res: ServerResponse,
    result: Record<string, unknown>,
    options?: { mergeWithLastSubmission?: boolean },
  ): Promise<void>;
  on(event: string, listener: (...args: unknown[]) => void): void;
  Grant: GrantConstructor;
  [key: string]: unknown;
}

interface KoaContext {
  path: string;
  method: string;
  status: number;
  oidc?: { params?: Record<string, unknown> };
}

type ProviderConstructor = new (
  issuer: string,
  configuration: Record<string, unknown>,
) => OidcProviderInstance;

/** The resource every access token is for, and its scopes. */
export const TEST_API_RESOURCE = 'urn:linkvault:test-api';
export const TEST_API_SCOPES = ['api:read', 'api:write'] as const;

let signingKey: JsonWebKey | undefined;
function signingJwk(): JsonWebKey {
  // One RSA key per test process (RS256 is the ID token default); generated, never checked in.
  signingKey ??= {
    ...generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }),
    kid: 'test-rs256',
    use: 'sig',
    alg: 'RS256',
  };
  return signingKey;
}

/**
 * oidc-provider prints plain-text notices into the test output (its Node.js version check on
 * import, on Node 20). They are dropped here: the Node.js version is a known, accepted mismatch
 * (package.json engines says >=20), and nothing else it could say at import concerns a test.
 */
const dropNotice = (): void => undefined;

async function loadProvider(): Promise<ProviderConstructor> {
  // oidc-provider ships no type declarations; the members used are typed in this file.
  const mod = await withOidcProviderNotices(
    dropNotice,
    async () => (await import('oidc-provider' as string)) as { default: ProviderConstructor },
  );
  return mod.default;
}

type Payload = Record<string, unknown> & {
  grantId?: string;
  uid?: string;
  userCode?: string;
  consumed?: number;
};

/**
 * A per-server in-memory storage adapter (oidc-provider's bundled one is a process-wide LRU of
 * 1000 entries shared by every instance, which heavy suites could evict from).
 */
function createMemoryAdapter(): new (
  model: string,
) => Record<string, (...args: never[]) => Promise<unknown>> {
  const store = new Map<string, { payload: Payload; expiresAtMs: number }>();
  const live = (key: string): Payload | undefined => {
    const hit = store.get(key);
    if (!hit) return undefined;
    if (hit.expiresAtMs <= Date.now()) {
      store.delete(key);
      return undefined;
    }
    return hit.payload;
  };
  return class MemoryAdapter {
    readonly model: string;
    constructor(model: string) {
      this.model = model;
    }
    key(id: string): string {
      return `${this.model}:${id}`;
    }
    async upsert(id: string, payload: Payload, expiresIn?: number): Promise<void> {
      store.set(this.key(id), {
        payload: { ...payload },
        expiresAtMs: typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity,
      });
    }
    async find(id: string): Promise<Payload | undefined> {
      const p = live(this.key(id));
      return p ? { ...p } : undefined;
    }
    async findByUid(uid: string): Promise<Payload | undefined> {
      for (const [key] of store) {
        if (!key.startsWith(`${this.model}:`)) continue;
        const p = live(key);
        if (p?.uid === uid) return { ...p };
      }
      return undefined;
    }
    async findByUserCode(userCode: string): Promise<Payload | undefined> {
      for (const [key] of store) {
        if (!key.startsWith(`${this.model}:`)) continue;
        const p = live(key);
        if (p?.userCode === userCode) return { ...p };
      }
      return undefined;
    }
    async consume(id: string): Promise<void> {
      const p = live(this.key(id));
      if (p) p.consumed = Math.floor(Date.now() / 1000);
    }
    async destroy(id: string): Promise<void> {
      store.delete(this.key(id));
    }
    async revokeByGrantId(grantId: string): Promise<void> {
      for (const [key, { payload }] of store) if (payload.grantId === grantId) store.delete(key);
    }
  } as unknown as new (model: string) => Record<string, (...args: never[]) => Promise<unknown>>;
}

function listen(server: Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });
}

/** Starts node-oidc-provider on loopback. See the file header for what is configured. */
export async function startOidcServer(options: StartOidcServerOptions): Promise<OidcServer> {
  const Provider = await loadProvider();
  let handler: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => {
    res.statusCode = 503;
    res.end();
  };
  const server = createServer((req, res) => handler(req, res));
  const port = await listen(server, options.port ?? 0);
  const issuer = `http://127.0.0.1:${port}`;
  const scopes = options.mode === 'oidc' ? ['openid', ...TEST_API_SCOPES] : [...TEST_API_SCOPES];

  const tokenCounts: Record<string, number> = {};
  const counts = { revocation: 0, introspection: 0, discovery: 0 };

  const provider = new Provider(issuer, {
    clients: options.clients.map((c) => ({
      client_id: c.client_id,
      client_secret: c.client_secret,
      redirect_uris: [...c.redirect_uris],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: c.token_endpoint_auth_method ?? 'client_secret_post',
    })),
    adapter: createMemoryAdapter(),
    jwks: { keys: [signingJwk()] },
    cookies: { keys: ['linkvault-test-cookie-key'] },
    scopes: [...TEST_API_SCOPES],
    claims: { openid: ['sub'], email: ['email', 'email_verified'] },
    findAccount: async (_ctx: unknown, sub: string) => ({
      accountId: sub,
      claims: async () => ({ sub, email: `${sub}@example.test`, email_verified: true }),
    }),
    // RFC 7636 / RFC 9700 §2.1.1: PKCE for every client, S256 only (the default method list).
    pkce: { required: () => true },
    interactions: {
      url: (_ctx: unknown, interaction: { uid: string }) => `/interaction/${interaction.uid}`,
    },
    issueRefreshToken: async (_ctx: unknown, client: { grantTypeAllowed(t: string): boolean }) =>
      client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: options.rotateRefreshTokens ?? false,
    ttl: {
      AccessToken: options.accessTokenTtlSeconds ?? 3600,
      RefreshToken: options.refreshTokenTtlSeconds ?? 14 * 24 * 3600,
      AuthorizationCode: 60,
      Interaction: 600,
      Session: 600,
      Grant: 14 * 24 * 3600,
      IdToken: 3600,
    },
    features: {
      devInteractions: { enabled: false },
      // Test server: any registered client may revoke or introspect any token.
      revocation: { enabled: true, allowedPolicy: () => true },
      introspection: { enabled: true, allowedPolicy: () => true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => TEST_API_RESOURCE,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: TEST_API_SCOPES.join(' '),
          accessTokenFormat: 'opaque',
          accessTokenTTL: options.accessTokenTtlSeconds ?? 3600,
        }),
      },
      ...options.features,
    },
  });

  provider.use(async (ctx, next) => {
    await next();
    if (ctx.method === 'POST' && ctx.path === '/token') {
      const grantType =
        typeof ctx.oidc?.params?.grant_type === 'string' ? ctx.oidc.params.grant_type : 'unknown';
      tokenCounts[grantType] = (tokenCounts[grantType] ?? 0) + 1;
    } else if (ctx.path === '/token/revocation') counts.revocation += 1;
    else if (ctx.path === '/token/introspection') counts.introspection += 1;
    else if (ctx.path === '/.well-known/openid-configuration') counts.discovery += 1;
  });

  const providerHandler = provider.callback();
  handler = (req, res) => {
    if (req.url?.startsWith('/interaction/')) {
      answerInteraction(provider, req, res).catch((err: unknown) => {
        res.statusCode = 500;
        res.end(String(err));
      });
      return;
    }
    providerHandler(req, res);
  };

  const first = options.clients[0];

  return {
    issuer,
    port,
    url: issuer,
    provider,
    mode: options.mode,
    scopes,
    tokenRequests: () => ({ ...tokenCounts }),
    requestCounts: () => ({ token: { ...tokenCounts }, ...counts }),
    catalogueEntry(id, overrides = {}) {
      const base: Record<string, unknown> = {
        id,
        name: `Test AS ${id}`,
        category: 'test',
        issuer: options.mode === 'oidc' ? issuer : null,
        ...(options.mode === 'oauth'
          ? { authorization_url: `${issuer}/auth`, token_url: `${issuer}/token` }
          : {}),
        revocation: {
          style: 'rfc7009',
          url: options.mode === 'oauth' ? `${issuer}/token/revocation` : null,
          token_type_hint: 'refresh_token',
        },
        scopes: { default: scopes, separator: ' ' },
        pkce: true,
        token_endpoint_auth_method: first?.token_endpoint_auth_method ?? 'client_secret_post',
        authorization_params: {},
        template_variables: [],
        capture_metadata: [],
        api_hosts: ['127.0.0.1'],
        privacy: {
          settings_url: `${issuer}/account`,
          instructions: 'Remove the app in the test server.',
          policy_url: `${issuer}/privacy`,
        },
        account_id:
          options.mode === 'oidc' ? { from: 'id_token_claim', path: 'sub' } : { from: 'none' },
      };
      return { ...base, ...overrides };
    },
    async introspect(token) {
      if (!first) throw new Error('no client registered');
      const response = await fetch(`${issuer}/token/introspection`, {
        method: 'POST',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          authorization: `Basic ${Buffer.from(`${encodeURIComponent(first.client_id)}:${encodeURIComponent(first.client_secret)}`).toString('base64')}`,
        },
        body: new URLSearchParams({ token }),
      });
      if (response.status !== 200) throw new Error(`introspection answered ${response.status}`);
      return (await response.json()) as { active: boolean } & Record<string, unknown>;
    },
    completeLogin: (authorizationUrl, loginOptions) =>
      driveLogin(issuer, authorizationUrl, loginOptions),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Answers the provider's interaction: login as the requested account, consent to everything, or deny. */
async function answerInteraction(
  provider: OidcProviderInstance,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const details = await provider.interactionDetails(req, res);
  const accountId = req.headers['x-test-account'];
  let result: Record<string, unknown>;
  if (req.headers['x-test-deny'] === '1') {
    result = { error: 'access_denied', error_description: 'The test user said no' };
  } else if (details.prompt.name === 'login') {
    if (typeof accountId !== 'string' || accountId === '')
      throw new Error('x-test-account header missing');
    result = { login: { accountId } };
  } else if (details.prompt.name === 'consent') {
    result = {
      consent: {
        grantId: await saveConsentGrant(provider.Grant, details, details.session!.accountId!),
      },
    };
  } else {
    throw new Error(`unexpected prompt ${details.prompt.name}`);
  }
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
}

/** Follows redirects by hand (keeping cookies) until one leaves the issuer: that is the callback. */
async function driveLogin(
  issuer: string,
  authorizationUrl: URL | string,
  options: CompleteLoginOptions,
): Promise<URL> {
  const cookies = new Map<string, string>();
  let next = new URL(authorizationUrl);
  for (let hop = 0; hop < 10; hop++) {
    if (next.origin !== issuer) return next;
    const headers: Record<string, string> = { 'x-test-account': options.accountId };
    if (options.deny) headers['x-test-deny'] = '1';
    if (cookies.size > 0) headers.cookie = [...cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    const response = await fetch(next, { redirect: 'manual', headers });
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(';');
      const eq = pair!.indexOf('=');
      cookies.set(pair!.slice(0, eq).trim(), pair!.slice(eq + 1).trim());
    }
    const location = response.headers.get('location');
    await response.arrayBuffer();
    if (response.status < 300 || response.status >= 400 || !location) {
      throw new Error(`authorization server answered ${response.status} at ${next.pathname}`);
    }
    next = new URL(location, next);
  }
  throw new Error('too many redirects while logging in');
}
