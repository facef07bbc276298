import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/**
 * Small real HTTP servers on loopback that reproduce documented provider behaviour where no real
 * server can run in a test (the quirks each provider page in docs/providers/ lists):
 *
 * - {@link startSalesforceStandIn}  token answers without expires_in, with instance_url and id
 * - {@link startSlackStandIn}       oauth.v2.access: HTTP 200 with ok:false on errors, bot token at the
 *                                   top level (token_type "bot"), user token under authed_user; auth.revoke
 * - {@link startGitHubStandIn}      form-encoded token answers unless Accept: application/json, errors as
 *                                   HTTP 200 + error; DELETE /applications/{client_id}/grant
 * - {@link startZohoStandIn}        several data-center accounts servers (path-prefixed), api_domain,
 *                                   DC-bound codes, {"status":"success"} revocation
 * - {@link startIntercomStandIn}    non-expiring tokens without refresh token; POST /auth/uninstall with a Bearer
 * - {@link startTokenEndpointStandIn} a generic RFC 6749 token endpoint with per-request fault
 *                                   injection (timeouts, 5xx, 429 + Retry-After, invalid_grant,
 *                                   invalid_client, "rotate then drop the connection", oversized
 *                                   answers) and a rate-limited RFC 7009 revocation endpoint.
 *
 * Every stand-in counts every request it receives (`requests(path?)`) and checks client
 * credentials the way the provider documents. Tokens are random strings prefixed like the
 * provider's (`xoxb-`, `gho_`, ...). `close()` drops open (and hanging) connections.
 */

export interface StandInClient {
  readonly clientId: string;
  readonly clientSecret: string;
}

interface StandInRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: IncomingMessage['headers'];
  readonly body: string;
  readonly form: URLSearchParams;
}

type Route = (req: StandInRequest, res: ServerResponse) => void | Promise<void>;

interface BaseStandIn {
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  /** Requests received (all, or only those whose path equals `path`). */
  requests(path?: string): number;
  close(): Promise<void>;
}

function token(prefix: string): string {
  return `${prefix}${randomBytes(18).toString('base64url')}`;
}

function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(text);
}

function basicCredentials(req: StandInRequest): { id: string; secret: string } | null {
  const header = req.headers.authorization;
  if (!header?.startsWith('Basic ')) return null;
  const decoded = Buffer.from(header.slice(6), 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return null;
  return {
    id: decodeURIComponent(decoded.slice(0, colon)),
    secret: decodeURIComponent(decoded.slice(colon + 1)),
  };
}

/** RFC 6749 §2.3.1 client authentication, either method. */
function clientMatches(req: StandInRequest, client: StandInClient): boolean {
  const basic = basicCredentials(req);
  const id = basic?.id ?? req.form.get('client_id');
  const secret = basic?.secret ?? req.form.get('client_secret');
  return id === client.clientId && secret === client.clientSecret;
}

function bearer(req: StandInRequest): string | null {
  const header = req.headers.authorization;
  return header?.startsWith('Bearer ') ? header.slice(7) : null;
}

async function startStandIn(
  routes: (url: () => string) => Record<string, Route>,
): Promise<BaseStandIn & { sockets: Set<Socket> }> {
  const counts = new Map<string, number>();
  let total = 0;
  const sockets = new Set<Socket>();
  let table: Record<string, Route> = {};
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = new URL(req.url ?? '/', 'http://stand-in').pathname;
      total += 1;
      counts.set(path, (counts.get(path) ?? 0) + 1);
      const body = Buffer.concat(chunks).toString('utf8');
      const contentType = req.headers['content-type'] ?? '';
      const request: StandInRequest = {
        method: req.method ?? 'GET',
        path,
        headers: req.headers,
        body,
        form: contentType.includes('application/x-www-form-urlencoded')
          ? new URLSearchParams(body)
          : new URLSearchParams(),
      };
      const route =
        table[`${request.method} ${path}`] ??
        Object.entries(table).find(([k]) => matchPattern(k, request.method, path))?.[1];
      if (!route) {
        sendJson(res, 404, { message: 'Not Found' });
        return;
      }
      Promise.resolve(route(request, res)).catch((err: unknown) => {
        if (!res.headersSent) sendJson(res, 500, { message: String(err) });
      });
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as AddressInfo).port;
  const url = `http://127.0.0.1:${port}`;
  table = routes(() => url);
  return {
    url,
    port,
    sockets,
    requests: (path) => (path === undefined ? total : (counts.get(path) ?? 0)),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}

/** `"DELETE /applications/:id/grant"` style keys: `:x` matches one path segment. */
function matchPattern(key: string, method: string, path: string): boolean {
  const [m, pattern] = key.split(' ');
  if (m !== method || !pattern?.includes(':')) return false;
  const a = pattern.split('/');
  const b = path.split('/');
  return a.length === b.length && a.every((seg, i) => seg.startsWith(':') || seg === b[i]);
}

// ------------------------------------------------------------------------------------- Salesforce

export interface SalesforceStandIn extends BaseStandIn {
  /** Paths as Salesforce has them under a login host. */
  readonly tokenPath: '/services/oauth2/token';
  readonly revokePath: '/services/oauth2/revoke';
  /** The instance_url and id (identity URL) every token answer carries. */
  readonly instanceUrl: string;
  readonly identityUrl: string;
  isActive(token: string): boolean;
}

/**
 * Salesforce's token endpoint: answers carry instance_url, id, issued_at, signature, scope and
 * token_type, and NO expires_in; refresh answers carry no new refresh token. Codes are single use
 * (invalid_grant on reuse); wrong client credentials → 400 invalid_client. Revocation: 200, or
 * 400 invalid_token for an unknown token (as Salesforce documents).
 */
export async function startSalesforceStandIn(client: StandInClient): Promise<SalesforceStandIn> {
  const usedCodes = new Set<string>();
  const refreshTokens = new Set<string>();
  const accessTokens = new Set<string>();
  const instanceUrl = 'https://acme.my.salesforce.com';
  const identityUrl = 'https://login.salesforce.com/id/00D000000000001EAA/005000000000001AAA';
  const answer = (res: ServerResponse, withRefresh: boolean): void => {
    const access = token('00D!');
    accessTokens.add(access);
    const body: Record<string, unknown> = {
      access_token: access,
      instance_url: instanceUrl,
      id: identityUrl,
      token_type: 'Bearer',
      issued_at: String(Date.now()),
      signature: randomBytes(32).toString('base64'),
      scope: 'api refresh_token',
    };
    if (withRefresh) {
      const refresh = token('5Aep');
      refreshTokens.add(refresh);
      body.refresh_token = refresh;
    }
    sendJson(res, 200, body);
  };
  const base = await startStandIn(() => ({
    'POST /services/oauth2/token': (req, res) => {
      if (!clientMatches(req, client))
        return sendJson(res, 400, {
          error: 'invalid_client',
          error_description: 'invalid client credentials',
        });
      const grant = req.form.get('grant_type');
      if (grant === 'authorization_code') {
        const code = req.form.get('code') ?? '';
        if (!code || usedCodes.has(code))
          return sendJson(res, 400, {
            error: 'invalid_grant',
            error_description: 'authentication failure',
          });
        usedCodes.add(code);
        return answer(res, true);
      }
      if (grant === 'refresh_token') {
        if (!refreshTokens.has(req.form.get('refresh_token') ?? ''))
          return sendJson(res, 400, {
            error: 'invalid_grant',
            error_description: 'expired access/refresh token',
          });
        return answer(res, false);
      }
      return sendJson(res, 400, { error: 'unsupported_grant_type' });
    },
    'POST /services/oauth2/revoke': (req, res) => {
      const t = req.form.get('token') ?? '';
      if (refreshTokens.delete(t) || accessTokens.delete(t)) {
        res.writeHead(200).end();
        return;
      }
      sendJson(res, 400, { error: 'invalid_token', error_description: 'invalid token' });
    },
  }));
  return {
    ...base,
    tokenPath: '/services/oauth2/token',
    revokePath: '/services/oauth2/revoke',
    instanceUrl,
    identityUrl,
    isActive: (t) => refreshTokens.has(t) || accessTokens.has(t),
  };
}

// ------------------------------------------------------------------------------------------ Slack

export interface SlackStandIn extends BaseStandIn {
  readonly tokenPath: '/api/oauth.v2.access';
  readonly revokePath: '/api/auth.revoke';
  readonly teamId: string;
  isActive(token: string): boolean;
  /** Makes the next oauth.v2.access answer ok:false with this Slack error name. */
  failNextWith(error: string): void;
}

/**
 * Slack's oauth.v2.access (always HTTP 200; errors are `{ok:false, error}` with Slack's names:
 * invalid_code, invalid_client_id, bad_client_secret, invalid_refresh_token, ...). Basic client
 * auth. With `rotation`, answers carry refresh_token + expires_in 43200 and a refresh revokes the
 * old refresh token; without it tokens never expire. auth.revoke takes the token as a Bearer.
 */
export async function startSlackStandIn(
  client: StandInClient,
  options: { rotation?: boolean } = {},
): Promise<SlackStandIn> {
  const usedCodes = new Set<string>();
  const active = new Set<string>();
  const refreshTokens = new Set<string>();
  const teamId = 'T0123TEST';
  let nextError: string | null = null;
  const installation = (): Record<string, unknown> => {
    const bot = token('xoxb-');
    const user = token('xoxp-');
    active.add(bot);
    active.add(user);
    const body: Record<string, unknown> = {
      ok: true,
      app_id: 'A0123TEST',
      authed_user: {
        id: 'U0123TEST',
        scope: 'search:read',
        access_token: user,
        token_type: 'user',
      },
      scope: 'channels:read,users:read',
      token_type: 'bot',
      access_token: bot,
      bot_user_id: 'U0BOTTEST',
      team: { id: teamId, name: 'Test Workspace' },
      enterprise: null,
      is_enterprise_install: false,
      incoming_webhook: {
        channel: '#general',
        channel_id: 'C0123',
        configuration_url: 'https://test.slack.com/services/B1',
        url: 'https://hooks.slack.com/services/T0/B1/secret',
      },
    };
    if (options.rotation) {
      const refresh = token('xoxe-1-');
      refreshTokens.add(refresh);
      body.refresh_token = refresh;
      body.expires_in = 43200;
    }
    return body;
  };
  const base = await startStandIn(() => ({
    'POST /api/oauth.v2.access': (req, res) => {
      if (nextError !== null) {
        const error = nextError;
        nextError = null;
        return sendJson(res, 200, { ok: false, error });
      }
      const basic = basicCredentials(req);
      const id = basic?.id ?? req.form.get('client_id');
      const secret = basic?.secret ?? req.form.get('client_secret');
      if (id !== client.clientId)
        return sendJson(res, 200, { ok: false, error: 'invalid_client_id' });
      if (secret !== client.clientSecret)
        return sendJson(res, 200, { ok: false, error: 'bad_client_secret' });
      const grant = req.form.get('grant_type') ?? 'authorization_code';
      if (grant === 'authorization_code') {
        const code = req.form.get('code') ?? '';
        if (!code || usedCodes.has(code))
          return sendJson(res, 200, { ok: false, error: 'invalid_code' });
        usedCodes.add(code);
        return sendJson(res, 200, installation());
      }
      if (grant === 'refresh_token') {
        const old = req.form.get('refresh_token') ?? '';
        if (!refreshTokens.delete(old))
          return sendJson(res, 200, { ok: false, error: 'invalid_refresh_token' });
        return sendJson(res, 200, installation());
      }
      return sendJson(res, 200, { ok: false, error: 'invalid_grant_type' });
    },
    'POST /api/auth.revoke': (req, res) => {
      const t = bearer(req);
      if (t === null) return sendJson(res, 200, { ok: false, error: 'not_authed' });
      if (!active.delete(t)) return sendJson(res, 200, { ok: false, error: 'invalid_auth' });
      sendJson(res, 200, { ok: true, revoked: true });
    },
  }));
  return {
    ...base,
    tokenPath: '/api/oauth.v2.access',
    revokePath: '/api/auth.revoke',
    teamId,
    isActive: (t) => active.has(t),
    failNextWith: (error) => {
      nextError = error;
    },
  };
}

// ----------------------------------------------------------------------------------------- GitHub

export interface GitHubStandIn extends BaseStandIn {
  readonly tokenPath: '/login/oauth/access_token';
  /** `/applications/{client_id}/grant` */
  readonly grantPath: string;
  isActive(token: string): boolean;
  /** Token requests that asked for JSON (Accept: application/json) vs. not. */
  acceptCounts(): { json: number; other: number };
}

/**
 * GitHub's OAuth token endpoint: `access_token=...&scope=...&token_type=bearer` form-encoded unless
 * the request's Accept asks for JSON; errors (bad_verification_code, incorrect_client_credentials)
 * come back as HTTP 200 with an `error` member, in whichever format was asked. Client credentials in
 * the body. DELETE /applications/{client_id}/grant with Basic auth and JSON {access_token}: 204,
 * 404 for an unknown token, 401 for bad credentials.
 */
export async function startGitHubStandIn(client: StandInClient): Promise<GitHubStandIn> {
  const usedCodes = new Set<string>();
  const active = new Set<string>();
  const accepts = { json: 0, other: 0 };
  const answer = (req: StandInRequest, res: ServerResponse, body: Record<string, string>): void => {
    if ((req.headers.accept ?? '').includes('application/json')) {
      sendJson(res, 200, body);
    } else {
      res.writeHead(200, { 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' });
      res.end(new URLSearchParams(body).toString());
    }
  };
  const grantPath = `/applications/${client.clientId}/grant`;
  const base = await startStandIn(() => ({
    'POST /login/oauth/access_token': (req, res) => {
      if ((req.headers.accept ?? '').includes('application/json')) accepts.json += 1;
      else accepts.other += 1;
      if (
        req.form.get('client_id') !== client.clientId ||
        req.form.get('client_secret') !== client.clientSecret
      ) {
        return answer(req, res, {
          error: 'incorrect_client_credentials',
          error_description: 'The client_id and/or client_secret passed are incorrect.',
        });
      }
      const code = req.form.get('code') ?? '';
      if (!code || usedCodes.has(code)) {
        return answer(req, res, {
          error: 'bad_verification_code',
          error_description: 'The code passed is incorrect or expired.',
        });
      }
      usedCodes.add(code);
      const access = token('gho_');
      active.add(access);
      answer(req, res, {
        access_token: access,
        scope: 'read:user,user:email',
        token_type: 'bearer',
      });
    },
    [`DELETE ${grantPath}`]: (req, res) => {
      const basic = basicCredentials(req);
      if (basic?.id !== client.clientId || basic.secret !== client.clientSecret)
        return sendJson(res, 401, { message: 'Bad credentials' });
      let accessToken: unknown;
      try {
        accessToken = (JSON.parse(req.body) as { access_token?: unknown }).access_token;
      } catch {
        return sendJson(res, 422, { message: 'Problems parsing JSON' });
      }
      if (typeof accessToken !== 'string' || !active.delete(accessToken))
        return sendJson(res, 404, { message: 'Not Found' });
      res.writeHead(204).end();
    },
  }));
  return {
    ...base,
    tokenPath: '/login/oauth/access_token',
    grantPath,
    isActive: (t) => active.has(t),
    acceptCounts: () => ({ ...accepts }),
  };
}

// ------------------------------------------------------------------------------------------- Zoho

export interface ZohoStandIn extends BaseStandIn {
  /** Data centers served, each under `/<accounts host>/...` (e.g. `/accounts.zoho.eu/oauth/v2/token`). */
  readonly accountsHosts: readonly string[];
  /** A code valid only at `accountsHost` (Zoho codes are bound to the user's data center). */
  issueCode(accountsHost: string): string;
  /** The api_domain a data center's token answers carry. */
  apiDomain(accountsHost: string): string;
  isActive(token: string): boolean;
}

/**
 * Zoho's multi-DC accounts servers behind one port, path-prefixed by the accounts host so that a
 * catalogue entry can template the host into the path. Token answers carry api_domain (per DC),
 * token_type Bearer, expires_in 3600; refresh answers carry no refresh token; a code or refresh
 * token used at another DC's server is invalid (invalid_code / invalid_grant, HTTP 200 as
 * Zoho does for invalid_code). Revocation answers {"status":"success"}.
 */
export async function startZohoStandIn(
  client: StandInClient,
  accountsHosts: readonly string[] = ['accounts.zoho.com', 'accounts.zoho.eu'],
): Promise<ZohoStandIn> {
  const codes = new Map<string, string>(); // code → dc
  const refresh = new Map<string, string>(); // token → dc
  const access = new Set<string>();
  const apiDomain = (dc: string): string =>
    `https://www.zohoapis.${dc.replace(/^accounts\.zoho\./, '')}`;
  const routes: Record<string, Route> = {};
  for (const dc of accountsHosts) {
    routes[`POST /${dc}/oauth/v2/token`] = (req, res) => {
      if (!clientMatches(req, client)) return sendJson(res, 401, { error: 'invalid_client' });
      const grant = req.form.get('grant_type');
      const at = token('1000.');
      if (grant === 'authorization_code') {
        const code = req.form.get('code') ?? '';
        if (codes.get(code) !== dc) return sendJson(res, 400, { error: 'invalid_code' });
        codes.delete(code);
        const rt = token('1000.r.');
        refresh.set(rt, dc);
        access.add(at);
        return sendJson(res, 200, {
          access_token: at,
          refresh_token: rt,
          scope: 'ZohoCRM.modules.READ',
          api_domain: apiDomain(dc),
          token_type: 'Bearer',
          expires_in: 3600,
        });
      }
      if (grant === 'refresh_token') {
        if (refresh.get(req.form.get('refresh_token') ?? '') !== dc)
          return sendJson(res, 400, { error: 'invalid_grant' });
        access.add(at);
        return sendJson(res, 200, {
          access_token: at,
          scope: 'ZohoCRM.modules.READ',
          api_domain: apiDomain(dc),
          token_type: 'Bearer',
          expires_in: 3600,
        });
      }
      return sendJson(res, 400, { error: 'unsupported_grant_type' });
    };
    routes[`POST /${dc}/oauth/v2/token/revoke`] = (req, res) => {
      const t =
        req.form.get('token') ?? new URL(`http://x${req.path}`).searchParams.get('token') ?? '';
      refresh.delete(t);
      access.delete(t);
      sendJson(res, 200, { status: 'success' });
    };
  }
  const base = await startStandIn(() => routes);
  return {
    ...base,
    accountsHosts,
    issueCode: (dc) => {
      const code = token('1000.c.');
      codes.set(code, dc);
      return code;
    },
    apiDomain,
    isActive: (t) => refresh.has(t) || access.has(t),
  };
}

// --------------------------------------------------------------------------------------- Intercom

export interface IntercomStandIn extends BaseStandIn {
  readonly tokenPath: '/auth/eagle/token';
  readonly uninstallPath: '/auth/uninstall';
  isActive(token: string): boolean;
}

/**
 * Intercom: the token endpoint answers `{token, access_token, token_type: "Bearer"}` (no expiry, no
 * refresh token); POST /auth/uninstall with the access token as a Bearer uninstalls the app (200),
 * 401 for a token it does not know.
 */
export async function startIntercomStandIn(client: StandInClient): Promise<IntercomStandIn> {
  const usedCodes = new Set<string>();
  const active = new Set<string>();
  const base = await startStandIn(() => ({
    'POST /auth/eagle/token': (req, res) => {
      if (!clientMatches(req, client)) return sendJson(res, 401, { error: 'invalid_client' });
      const code = req.form.get('code') ?? '';
      if (!code || usedCodes.has(code)) return sendJson(res, 400, { error: 'invalid_grant' });
      usedCodes.add(code);
      const t = token('dG9rOm');
      active.add(t);
      sendJson(res, 200, { token: t, access_token: t, token_type: 'Bearer' });
    },
    'POST /auth/uninstall': (req, res) => {
      const t = bearer(req);
      if (t === null || !active.delete(t))
        return sendJson(res, 401, {
          type: 'error.list',
          errors: [{ code: 'unauthorized', message: 'Access Token Invalid' }],
        });
      sendJson(res, 200, {});
    },
  }));
  return {
    ...base,
    tokenPath: '/auth/eagle/token',
    uninstallPath: '/auth/uninstall',
    isActive: (t) => active.has(t),
  };
}

// ------------------------------------------------------------------- generic faulty token endpoint

/**
 * What the token endpoint does with one request.
 * - normal            RFC 6749 answer (rotating the refresh token when `rotate`), after `delayMs`
 * - hang              never answers (the caller's timeout fires); dropped on close()
 * - status            answers `status` with a JSON body `{error: 'server_error'}` (or `body`), and Retry-After when given
 * - error             RFC 6749 §5.2 error (`invalid_grant`, `invalid_client`, ...), 400 (401 for invalid_client)
 * - rotate_then_drop  performs the refresh (the old refresh token dies, a new one is live) and then
 *                     destroys the connection without answering: the rotated token is lost in transit
 * - oversized         a 2xx answer of `bytes` bytes (default 200 KiB)
 */
export type TokenEndpointBehaviour =
  | { readonly kind: 'normal'; readonly delayMs?: number }
  | { readonly kind: 'hang' }
  | {
      readonly kind: 'status';
      readonly status: number;
      readonly retryAfter?: string;
      readonly body?: string;
    }
  | { readonly kind: 'error'; readonly error: string; readonly status?: number }
  | { readonly kind: 'rotate_then_drop' }
  | { readonly kind: 'oversized'; readonly bytes?: number };

export type RevocationBehaviour =
  | { readonly kind: 'normal' }
  | { readonly kind: 'status'; readonly status: number; readonly retryAfter?: string }
  | { readonly kind: 'hang' };

export interface TokenEndpointStandIn extends BaseStandIn {
  readonly tokenUrl: string;
  readonly revocationUrl: string;
  readonly client: StandInClient;
  /** Makes `token` a valid refresh token (as if issued earlier). */
  addRefreshToken(token: string): void;
  /** Queues behaviours for the next token requests, in order; when the queue is empty, `normal` applies. */
  queue(...behaviours: TokenEndpointBehaviour[]): void;
  /** Sets the behaviour used when the queue is empty (default `{kind: 'normal'}`). */
  setDefault(behaviour: TokenEndpointBehaviour): void;
  /** Token requests by grant_type. */
  tokenRequests(): Readonly<Record<string, number>>;
  /** Refresh tokens currently valid. */
  liveRefreshTokens(): string[];
  /** True for a live refresh token or unexpired access token. */
  isActive(token: string): boolean;
  /** RFC 7009 endpoint: at most `perSecond` requests per wall-clock second, then 429 + Retry-After: 1 (null = unlimited). */
  setRevocationRateLimit(perSecond: number | null): void;
  setRevocationBehaviour(behaviour: RevocationBehaviour): void;
  /** Members added to every successful token answer from now on (Pipedrive's api_domain, Salesforce's instance_url, ...). */
  setAnswerExtra(extra: Readonly<Record<string, unknown>>): void;
  /** Revocation requests received (rate-limited ones included) and tokens actually revoked. */
  revocationCounts(): { requests: number; rateLimited: number; revoked: number };
}

export interface TokenEndpointStandInOptions {
  readonly client?: StandInClient;
  /** Issue a new refresh token on every refresh and invalidate the old one (default true). */
  readonly rotate?: boolean;
  /** expires_in of issued access tokens (default 3600). */
  readonly expiresInSeconds?: number;
}

/**
 * A generic RFC 6749 token endpoint (`/token`, both grant types, client_secret_post or basic) and
 * RFC 7009 revocation endpoint (`/revoke`) with fault injection, for refresh and revocation tests.
 * The catalogue entry for it: authorization_url `${url}/authorize` (never served), token_url
 * `${url}/token`, revocation `${url}/revoke`.
 */
export async function startTokenEndpointStandIn(
  options: TokenEndpointStandInOptions = {},
): Promise<TokenEndpointStandIn> {
  const client = options.client ?? { clientId: 'stand-in-client', clientSecret: 'stand-in-secret' };
  const rotate = options.rotate ?? true;
  const expiresIn = options.expiresInSeconds ?? 3600;
  const refreshTokens = new Set<string>();
  const accessTokens = new Map<string, number>(); // token → expiresAtMs
  const usedCodes = new Set<string>();
  const pending: TokenEndpointBehaviour[] = [];
  let fallback: TokenEndpointBehaviour = { kind: 'normal' };
  const grants: Record<string, number> = {};
  let revocationLimit: number | null = null;
  let revocationBehaviour: RevocationBehaviour = { kind: 'normal' };
  const revocation = { requests: 0, rateLimited: 0, revoked: 0 };
  let windowSecond = 0;
  let windowCount = 0;
  let answerExtra: Readonly<Record<string, unknown>> = {};

  const issue = (withRefresh: boolean): Record<string, unknown> => {
    const at = token('at_');
    accessTokens.set(at, Date.now() + expiresIn * 1000);
    const body: Record<string, unknown> = {
      ...answerExtra,
      access_token: at,
      token_type: 'Bearer',
      expires_in: expiresIn,
      scope: 'api:read',
    };
    if (withRefresh) {
      const rt = token('rt_');
      refreshTokens.add(rt);
      body.refresh_token = rt;
    }
    return body;
  };

  /** Validates the grant and applies its side effects; returns the answer (status, body). */
  const perform = (req: StandInRequest): [number, Record<string, unknown>] => {
    if (!clientMatches(req, client)) return [401, { error: 'invalid_client' }];
    const grant = req.form.get('grant_type');
    if (grant === 'authorization_code') {
      const code = req.form.get('code') ?? '';
      if (!code || usedCodes.has(code)) return [400, { error: 'invalid_grant' }];
      usedCodes.add(code);
      return [200, issue(true)];
    }
    if (grant === 'refresh_token') {
      const old = req.form.get('refresh_token') ?? '';
      if (!refreshTokens.has(old)) return [400, { error: 'invalid_grant' }];
      if (rotate) refreshTokens.delete(old);
      return [200, issue(rotate)];
    }
    return [400, { error: 'unsupported_grant_type' }];
  };

  const base = await startStandIn(() => ({
    'POST /token': async (req, res) => {
      const grant = req.form.get('grant_type') ?? 'unknown';
      grants[grant] = (grants[grant] ?? 0) + 1;
      const behaviour = pending.shift() ?? fallback;
      switch (behaviour.kind) {
        case 'hang':
          return; // never answered; close() destroys the socket
        case 'status':
          res.writeHead(behaviour.status, {
            'content-type': behaviour.body === undefined ? 'application/json' : 'text/html',
            ...(behaviour.retryAfter === undefined ? {} : { 'retry-after': behaviour.retryAfter }),
          });
          res.end(
            behaviour.body ??
              JSON.stringify({
                error: behaviour.status >= 500 ? 'server_error' : 'temporarily_unavailable',
              }),
          );
          return;
        case 'error':
          return sendJson(
            res,
            behaviour.status ?? (behaviour.error === 'invalid_client' ? 401 : 400),
            { error: behaviour.error },
          );
        case 'rotate_then_drop': {
          perform(req); // the provider did the work...
          res.socket?.destroy(); // ...and the answer never arrives
          return;
        }
        case 'oversized': {
          const [status, body] = perform(req);
          const padded = { ...body, padding: 'x'.repeat(behaviour.bytes ?? 200 * 1024) };
          return sendJson(res, status, padded);
        }
        case 'normal': {
          if (behaviour.delayMs) await new Promise((r) => setTimeout(r, behaviour.delayMs));
          const [status, body] = perform(req);
          return sendJson(res, status, body);
        }
      }
    },
    'POST /revoke': (req, res) => {
      revocation.requests += 1;
      const second = Math.floor(Date.now() / 1000);
      if (second !== windowSecond) {
        windowSecond = second;
        windowCount = 0;
      }
      windowCount += 1;
      if (revocationLimit !== null && windowCount > revocationLimit) {
        revocation.rateLimited += 1;
        return sendJson(res, 429, { error: 'slow_down' }, { 'retry-after': '1' });
      }
      if (revocationBehaviour.kind === 'hang') return;
      if (revocationBehaviour.kind === 'status') {
        res.writeHead(
          revocationBehaviour.status,
          revocationBehaviour.retryAfter === undefined
            ? {}
            : { 'retry-after': revocationBehaviour.retryAfter },
        );
        res.end();
        return;
      }
      if (!clientMatches(req, client)) return sendJson(res, 401, { error: 'invalid_client' });
      const t = req.form.get('token') ?? '';
      // RFC 7009 §2.2: 200 whether or not the token was valid.
      if (refreshTokens.delete(t) || accessTokens.delete(t)) revocation.revoked += 1;
      res.writeHead(200).end();
    },
  }));

  return {
    ...base,
    tokenUrl: `${base.url}/token`,
    revocationUrl: `${base.url}/revoke`,
    client,
    addRefreshToken: (t) => {
      refreshTokens.add(t);
    },
    queue: (...behaviours) => {
      pending.push(...behaviours);
    },
    setDefault: (behaviour) => {
      fallback = behaviour;
    },
    tokenRequests: () => ({ ...grants }),
    liveRefreshTokens: () => [...refreshTokens],
    isActive: (t) => refreshTokens.has(t) || (accessTokens.get(t) ?? 0) > Date.now(),
    setRevocationRateLimit: (perSecond) => {
      revocationLimit = perSecond;
    },
    setRevocationBehaviour: (behaviour) => {
      revocationBehaviour = behaviour;
    },
    setAnswerExtra: (extra) => {
      answerExtra = { ...extra };
    },
    revocationCounts: () => ({ ...revocation }),
  };
}
