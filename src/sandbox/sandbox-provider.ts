import { generateKeyPairSync, randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import express, { Router, type Request, type RequestHandler, type Response } from 'express';
import type { Logger } from 'pino';
import type { ProviderCredentials } from '../config.js';
import { ROUTE_LABEL } from '../http/observe-requests.js';
import { escapeHtml } from '../web/safe-html.js';
import { noticeReason, withOidcProviderNotices } from './oidc-provider-notices.js';

/**
 * The built-in "Sandbox CRM": a real OpenID Provider (node-oidc-provider) mounted inside linkvault
 * at `${publicUrl}/sandbox`, so that a fresh checkout can connect an account end to end with no
 * third-party app registration. Outside production only: config.ts refuses LINKVAULT_SANDBOX in
 * production, and main.ts builds this only when config.sandbox is on.
 *
 * What it is: OIDC with discovery, PKCE S256 required, RFC 9207 `iss` in authorization responses,
 * refresh tokens always issued and rotated on every use (RFC 9700 §4.14.2), RFC 7009 revocation and
 * RFC 7662 introspection. Access tokens are opaque tokens for the resource `${publicUrl}/sandbox/api`
 * with scopes `contacts.read contacts.write`.
 *
 * What it is not: durable. Its client (id + secret), signing key, grants and tokens live in memory
 * and are regenerated at every start, so sandbox links stop refreshing after a restart (the token
 * route then answers reauth_required and the user reconnects). That is the honest behaviour for a
 * throwaway provider, and it keeps any sandbox secret off disk.
 *
 * Login and consent are two tiny server-rendered forms (no script, no inline style, CSP
 * `default-src 'none'; form-action 'self'`): any username logs in, and a consent button grants
 * the requested scopes. oidc-provider's devInteractions pages are not used: they inline styles
 * and load web fonts, which the service's CSP forbids.
 */

export interface SandboxProviderOptions {
  /** linkvault's public URL (config.publicUrl, no trailing slash). */
  readonly publicUrl: string;
  readonly log: Logger;
  /** Origins a sign-in may end on (config.returnUrlAllowlist): allowed as form-action targets. */
  readonly returnOrigins?: readonly string[];
}

export interface SandboxProvider {
  /** The catalogue entry (raw snake_case, as loadCatalogue's extraEntries take it). */
  readonly entry: Record<string, unknown>;
  /** The client credentials generated for this process. */
  readonly credentials: ProviderCredentials;
  /** The sandbox is served over the public URL's scheme, http in local development. */
  readonly allowInsecureUrls: boolean;
  /** Express router declaring full paths under /sandbox (mount it with the other feature routers). */
  readonly router: Router;
  /** The issuer identifier (`${publicUrl}/sandbox`). */
  readonly issuer: string;
  close(): Promise<void>;
}

export const SANDBOX_PROVIDER_ID = 'sandbox';
export const SANDBOX_MOUNT_PATH = '/sandbox';
export const SANDBOX_SCOPES = ['contacts.read', 'contacts.write'] as const;
const USERNAME = /^[A-Za-z0-9._@+-]{1,64}$/;
/**
 * The login and consent pages' CSP. Chromium applies form-action to every redirect a form post
 * leads to, and the consent post ends (through the callback) on the host application's return_to,
 * so those origins are allowed as form targets too.
 */
function pageCsp(formActionOrigins: readonly string[]): string {
  const targets = ["'self'", ...formActionOrigins].join(' ');
  return `default-src 'none'; form-action ${targets}; base-uri 'none'; frame-ancestors 'none'`;
}

/** The members of node-oidc-provider's Provider used here (the package ships no types). */
interface OidcProvider {
  callback(): (req: IncomingMessage, res: ServerResponse) => void;
  interactionDetails(req: IncomingMessage, res: ServerResponse): Promise<InteractionDetails>;
  interactionFinished(
    req: IncomingMessage,
    res: ServerResponse,
    result: Record<string, unknown>,
    options?: { mergeWithLastSubmission?: boolean },
  ): Promise<void>;
  on(event: string, listener: (...args: unknown[]) => void): void;
  proxy: boolean;
  Grant: GrantConstructor;
  Client: { find(id: string): Promise<{ clientName?: string } | undefined> };
  AccessToken: { find(value: string): Promise<SandboxAccessToken | undefined> };
}

/** The fields of an access token the sandbox API reads (oidc-provider's AccessToken model). */
interface SandboxAccessToken {
  accountId?: string;
  grantId?: string;
  scope?: string;
  aud?: string | string[];
}

export interface InteractionDetails {
  uid: string;
  prompt: { name: string; details: Record<string, unknown> };
  params: Record<string, unknown>;
  session?: { accountId?: string };
  grantId?: string;
}

export interface GrantInstance {
  addOIDCScope(scope: string): void;
  addOIDCClaims(claims: string[]): void;
  addResourceScope(resource: string, scope: string): void;
  save(): Promise<string>;
}

export interface GrantConstructor {
  new (init: { accountId: string; clientId: string }): GrantInstance;
  find(id: string): Promise<GrantInstance | undefined>;
}

/**
 * Saves the grant a consent prompt asks for (the interaction's existing grant, or a new one) with
 * every missing OIDC scope, claim and resource scope added; returns the grant id for interactionFinished.
 */
export async function saveConsentGrant(
  Grant: GrantConstructor,
  details: InteractionDetails,
  accountId: string,
): Promise<string> {
  const clientId = String(details.params.client_id);
  const grant =
    (details.grantId ? await Grant.find(details.grantId) : undefined) ??
    new Grant({ accountId, clientId });
  const missing = details.prompt.details;
  if (Array.isArray(missing.missingOIDCScope))
    grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (Array.isArray(missing.missingOIDCClaims))
    grant.addOIDCClaims(missing.missingOIDCClaims as string[]);
  const resourceScopes = missing.missingResourceScopes as Record<string, string[]> | undefined;
  for (const [indicator, scopes] of Object.entries(resourceScopes ?? {}))
    grant.addResourceScope(indicator, scopes.join(' '));
  return grant.save();
}

type ProviderConstructor = new (
  issuer: string,
  configuration: Record<string, unknown>,
) => OidcProvider;

async function loadProvider(): Promise<ProviderConstructor> {
  const mod = (await import('oidc-provider' as string)) as { default: ProviderConstructor };
  return mod.default;
}

function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${escapeHtml(title)} - Sandbox CRM</title>
</head>
<body>
<main>
<h1>Sandbox CRM</h1>
<h2>${escapeHtml(title)}</h2>
${body}
</main>
</body>
</html>
`;
}

function sendPageWith(
  csp: string,
  res: Response,
  status: number,
  title: string,
  body: string,
): void {
  res.status(status).setHeader('Content-Security-Policy', csp);
  res.setHeader('Cache-Control', 'no-store');
  res.type('text/html; charset=utf-8').send(page(title, body));
}

/** The OAuth server's endpoints (paths below the mount), labelled as themselves. */
const OAUTH_ENDPOINTS = new Set([
  '/.well-known/openid-configuration',
  '/auth',
  '/token',
  '/token/revocation',
  '/token/introspection',
  '/jwks',
  '/me',
]);

/** The route template of a request the OAuth server answers, from its path below the mount. */
export function sandboxRouteLabel(path: string): string {
  if (OAUTH_ENDPOINTS.has(path)) return `${SANDBOX_MOUNT_PATH}${path}`;
  if (/^\/auth\/[^/]+$/.test(path)) return `${SANDBOX_MOUNT_PATH}/auth/:uid`;
  return `${SANDBOX_MOUNT_PATH}/*`;
}

/** The sample contacts every sandbox account has (the same for everyone: it is a test provider). */
export const SANDBOX_CONTACTS = [
  { id: 'ct_1', name: 'Ada Lovelace', email: 'ada@sandbox.invalid', company: 'Analytical Engines' },
  { id: 'ct_2', name: 'Grace Hopper', email: 'grace@sandbox.invalid', company: 'Compilers Inc.' },
  { id: 'ct_3', name: 'Alan Turing', email: 'alan@sandbox.invalid', company: 'Bletchley Park' },
] as const;

/**
 * GET /sandbox/api/contacts: Sandbox CRM's API, so that a token released by linkvault can be used.
 * Bearer access token only (RFC 6750 §2.1: never from the query), issued by this sandbox for its
 * API resource, still valid, from a grant that still exists (revoking the link ends it), with the
 * `contacts.read` scope. 401 with `WWW-Authenticate: Bearer` otherwise (RFC 6750 §3), 403
 * `insufficient_scope` without the scope.
 */
function contactsApi(provider: OidcProvider, resource: string): RequestHandler {
  const refuse = (res: Response, status: 401 | 403, error: string, description: string): void => {
    res
      .status(status)
      .setHeader(
        'WWW-Authenticate',
        `Bearer realm="Sandbox CRM", error="${error}", error_description="${description}"`,
      );
    res.setHeader('Cache-Control', 'no-store');
    res.json({ error, error_description: description });
  };
  return async (req, res) => {
    const header = req.headers.authorization ?? '';
    const m = /^Bearer ([A-Za-z0-9._~+/-]+=*)$/.exec(header);
    if (!m) {
      res.status(401).setHeader('WWW-Authenticate', 'Bearer realm="Sandbox CRM"');
      res.setHeader('Cache-Control', 'no-store');
      res.json({
        error: 'invalid_request',
        error_description: 'a Bearer access token is required',
      });
      return;
    }
    let token: SandboxAccessToken | undefined;
    try {
      token = await provider.AccessToken.find(m[1]!);
    } catch {
      token = undefined;
    }
    const audiences = token ? [token.aud ?? []].flat() : [];
    const grant = token?.grantId ? await provider.Grant.find(token.grantId) : undefined;
    if (!token || !token.accountId || !grant || !audiences.includes(resource))
      return refuse(res, 401, 'invalid_token', 'the access token is unknown, expired or revoked');
    if (!(token.scope ?? '').split(' ').includes('contacts.read'))
      return refuse(res, 403, 'insufficient_scope', 'the contacts.read scope is required');
    res.setHeader('Cache-Control', 'no-store');
    res.status(200).json({ account_id: token.accountId, contacts: SANDBOX_CONTACTS });
  };
}

/** Builds the sandbox provider. Throws when oidc-provider cannot be configured (a start-up failure). */
export async function createSandboxProvider(
  options: SandboxProviderOptions,
): Promise<SandboxProvider> {
  const { publicUrl, log } = options;
  const csp = pageCsp(options.returnOrigins ?? []);
  const sendPage = (res: Response, status: number, title: string, body: string): void =>
    sendPageWith(csp, res, status, title, body);
  const base = new URL(publicUrl);
  const basePath = base.pathname.replace(/\/$/, '');
  const issuer = `${publicUrl}${SANDBOX_MOUNT_PATH}`;
  const resource = `${issuer}/api`;
  const redirectUri = `${publicUrl}/v1/oauth/callback/${SANDBOX_PROVIDER_ID}`;
  const credentials: ProviderCredentials = Object.freeze({
    clientId: `sandbox-${randomBytes(8).toString('hex')}`,
    clientSecret: randomBytes(32).toString('base64url'),
  });
  // ES256: a P-256 key is generated in a millisecond; the client is registered for it below.
  const signingKey = {
    ...generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' }),
    kid: `sandbox-${randomBytes(4).toString('hex')}`,
    use: 'sig',
    alg: 'ES256',
  };

  // oidc-provider prints notices as plain text on import and construction: they go through the
  // logger at debug, with the reason they are expected (oidc-provider-notices.ts).
  const onNotice = (_level: 'info' | 'warn', text: string): void =>
    log.debug(
      { notice: text, reason: noticeReason(text) },
      'sandbox provider: oidc-provider notice',
    );
  const Provider = await withOidcProviderNotices(onNotice, loadProvider);
  const provider = await withOidcProviderNotices(
    onNotice,
    () =>
      new Provider(issuer, {
        clients: [
          {
            client_id: credentials.clientId,
            client_secret: credentials.clientSecret,
            client_name: 'linkvault',
            redirect_uris: [redirectUri],
            grant_types: ['authorization_code', 'refresh_token'],
            response_types: ['code'],
            token_endpoint_auth_method: 'client_secret_basic',
            id_token_signed_response_alg: 'ES256',
          },
        ],
        jwks: { keys: [signingKey] },
        cookies: { keys: [randomBytes(32).toString('base64url')] },
        claims: { openid: ['sub'], profile: ['name'], email: ['email', 'email_verified'] },
        scopes: [...SANDBOX_SCOPES],
        findAccount: async (_ctx: unknown, sub: string) => ({
          accountId: sub,
          claims: async () => ({
            sub,
            name: sub,
            email: `${sub}@sandbox.invalid`,
            email_verified: true,
          }),
        }),
        // RFC 9700 §2.1.1: PKCE for every client, S256 only (oidc-provider's default method list).
        pkce: { required: () => true },
        interactions: {
          url: (_ctx: unknown, interaction: { uid: string }) =>
            `${basePath}${SANDBOX_MOUNT_PATH}/interaction/${interaction.uid}`,
        },
        // Refresh tokens without offline_access, and not bound to the sandbox's own login session:
        // linkvault's whole point is acting while the user is away.
        issueRefreshToken: async (
          _ctx: unknown,
          client: { grantTypeAllowed(t: string): boolean },
        ) => client.grantTypeAllowed('refresh_token'),
        expiresWithSession: async () => false,
        // RFC 9700 §4.14.2: rotate refresh tokens, so linkvault's single-flight refresh is exercised.
        rotateRefreshToken: true,
        ttl: {
          AccessToken: 900,
          RefreshToken: 30 * 24 * 3600,
          AuthorizationCode: 60,
          Interaction: 600,
          Session: 3600,
          Grant: 30 * 24 * 3600,
          IdToken: 900,
        },
        features: {
          devInteractions: { enabled: false },
          // Its pages auto-submit with inline script; linkvault never logs users out of the sandbox.
          rpInitiatedLogout: { enabled: false },
          // The library's default policies, written out: its defaults print a NOTICE into the log the
          // first time a token is revoked or introspected. A client may act on its own tokens only.
          revocation: {
            enabled: true,
            allowedPolicy: (
              _ctx: unknown,
              client: { clientId: string },
              token: { clientId: string },
            ) => token.clientId === client.clientId,
          },
          introspection: {
            enabled: true,
            allowedPolicy: (
              _ctx: unknown,
              client: { clientId: string },
              token: { clientId: string },
            ) => token.clientId === client.clientId,
          },
          resourceIndicators: {
            enabled: true,
            defaultResource: () => resource,
            useGrantedResource: () => true,
            getResourceServerInfo: () => ({
              scope: SANDBOX_SCOPES.join(' '),
              accessTokenFormat: 'opaque',
              accessTokenTTL: 900,
            }),
          },
        },
        renderError: async (ctx: { type: string; body: string }, out: Record<string, unknown>) => {
          const error = typeof out.error === 'string' ? out.error : 'server_error';
          const description =
            typeof out.error_description === 'string' ? out.error_description : '';
          ctx.type = 'html';
          ctx.body = page(
            'Something went wrong',
            `<p><code>${escapeHtml(error)}</code></p><p>${escapeHtml(description)}</p>`,
          );
        },
        // No CORS: nothing calls the sandbox from a browser script (set explicitly: the library's
        // default prints a NOTICE the first time it is used).
        clientBasedCORS: () => false,
      }),
  );
  // Behind a TLS-terminating proxy the sandbox builds its endpoint URLs from X-Forwarded-Proto/Host
  // (discovery must advertise the https URLs the browser and linkvault use). A sandbox-only switch.
  provider.proxy = base.protocol === 'https:';
  provider.on('server_error', (...args: unknown[]) =>
    log.error({ err: args[1] }, 'sandbox provider: server error'),
  );

  const router = Router();
  const forms = express.urlencoded({ extended: false, limit: '2kb', parameterLimit: 10 });

  const prefix = SANDBOX_MOUNT_PATH;

  const loginForm = (uid: string, message: string | null): string =>
    `${message ? `<p role="alert">${escapeHtml(message)}</p>` : ''}
<p>This is linkvault's built-in test provider. Any username works; no password is needed.</p>
<form method="post" action="${escapeHtml(`${basePath}${prefix}/interaction/${uid}/login`)}">
<label for="username">Username</label>
<input id="username" name="username" autocomplete="username" required maxlength="64" pattern="[A-Za-z0-9._@+\\-]{1,64}" autofocus>
<button type="submit">Sign in</button>
</form>
<form method="post" action="${escapeHtml(`${basePath}${prefix}/interaction/${uid}/abort`)}">
<button type="submit">Cancel</button>
</form>`;

  const showInteraction: RequestHandler = async (req, res) => {
    const details = await provider.interactionDetails(req, res);
    const uid = details.uid;
    if (details.prompt.name === 'login') return sendPage(res, 200, 'Sign in', loginForm(uid, null));
    if (details.prompt.name === 'consent') {
      const scopes = String(details.params.scope ?? '')
        .split(' ')
        .filter(Boolean);
      const client = await provider.Client.find(String(details.params.client_id));
      const list = scopes.map((s) => `<li><code>${escapeHtml(s)}</code></li>`).join('\n');
      return sendPage(
        res,
        200,
        'Allow access?',
        `<p><strong>${escapeHtml(client?.clientName ?? 'An application')}</strong> asks to access your Sandbox CRM account as <strong>${escapeHtml(details.session?.accountId ?? '')}</strong>:</p>
<ul>
${list}
</ul>
<form method="post" action="${escapeHtml(`${basePath}${prefix}/interaction/${uid}/confirm`)}">
<button type="submit">Allow</button>
</form>
<form method="post" action="${escapeHtml(`${basePath}${prefix}/interaction/${uid}/abort`)}">
<button type="submit">Deny</button>
</form>`,
      );
    }
    return sendPage(res, 400, 'Unexpected step', '<p>Start again from the application.</p>');
  };

  const login: RequestHandler = async (req, res) => {
    const details = await provider.interactionDetails(req, res);
    const username: unknown = (req.body as Record<string, unknown> | undefined)?.username;
    if (details.prompt.name !== 'login')
      return sendPage(res, 400, 'Unexpected step', '<p>Start again from the application.</p>');
    if (typeof username !== 'string' || !USERNAME.test(username)) {
      return sendPage(
        res,
        400,
        'Sign in',
        loginForm(details.uid, 'Use 1-64 letters, digits or . _ @ + -'),
      );
    }
    await provider.interactionFinished(
      req,
      res,
      { login: { accountId: username } },
      { mergeWithLastSubmission: false },
    );
  };

  const confirm: RequestHandler = async (req, res) => {
    const details = await provider.interactionDetails(req, res);
    if (details.prompt.name !== 'consent' || !details.session?.accountId)
      return sendPage(res, 400, 'Unexpected step', '<p>Start again from the application.</p>');
    const grantId = await saveConsentGrant(provider.Grant, details, details.session.accountId);
    await provider.interactionFinished(
      req,
      res,
      { consent: { grantId } },
      { mergeWithLastSubmission: true },
    );
  };

  const abort: RequestHandler = async (req, res) => {
    await provider.interactionFinished(
      req,
      res,
      { error: 'access_denied', error_description: 'The user cancelled' },
      { mergeWithLastSubmission: false },
    );
  };

  /** Interaction routes fail as a page, never as a stack: an expired interaction is ordinary. */
  const pageErrors =
    (handler: RequestHandler): RequestHandler =>
    async (req, res, next) => {
      try {
        await handler(req, res, next);
      } catch (err) {
        const name = (err as { name?: unknown }).name;
        if (name === 'SessionNotFound' || name === 'InvalidRequest') {
          return sendPage(
            res,
            400,
            'This sign-in has expired',
            '<p>Start again from the application.</p>',
          );
        }
        log.error({ err }, 'sandbox provider: interaction failed');
        if (!res.headersSent)
          sendPage(res, 500, 'Something went wrong', '<p>Start again from the application.</p>');
      }
    };

  router.get(`${prefix}/interaction/:uid`, pageErrors(showInteraction));
  router.post(`${prefix}/interaction/:uid/login`, forms, pageErrors(login));
  router.post(`${prefix}/interaction/:uid/confirm`, forms, pageErrors(confirm));
  router.post(`${prefix}/interaction/:uid/abort`, forms, pageErrors(abort));
  router.get(`${prefix}/privacy`, (_req: Request, res: Response) =>
    sendPage(
      res,
      200,
      'Privacy',
      '<p>Sandbox CRM is a test provider built into linkvault for development. It stores nothing on disk: accounts, grants and tokens live in memory and are gone when linkvault restarts. It is never enabled in production.</p>',
    ),
  );
  router.get(`${prefix}/connected-apps`, (_req: Request, res: Response) =>
    sendPage(
      res,
      200,
      'Connected apps',
      '<p>Sandbox CRM keeps no lasting record of the apps you allowed: every grant ends when linkvault restarts. To disconnect now, remove the link from the application (linkvault revokes the token here as well).</p>',
    ),
  );
  router.get(`${prefix}/api/contacts`, contactsApi(provider, resource));
  // The OAuth server answers everything else under /sandbox: each request is labelled with a
  // fixed route template for the log and the metrics (never the raw path, which carries ids).
  router.use(
    prefix,
    (req: Request, res: Response, next) => {
      res.locals[ROUTE_LABEL] = sandboxRouteLabel(req.path);
      next();
    },
    provider.callback() as unknown as RequestHandler,
  );

  const entry: Record<string, unknown> = {
    id: SANDBOX_PROVIDER_ID,
    name: 'Sandbox CRM',
    category: 'crm',
    issuer,
    revocation: { style: 'rfc7009', url: null, token_type_hint: 'refresh_token' },
    scopes: {
      default: ['openid', 'profile', 'email', 'contacts.read'],
      separator: ' ',
      descriptions: {
        openid: 'Confirm who you are in Sandbox CRM',
        profile: 'See your Sandbox CRM name',
        email: 'See your Sandbox CRM email address',
        'contacts.read': 'Read your Sandbox CRM contacts',
      },
    },
    pkce: true,
    token_endpoint_auth_method: 'client_secret_basic',
    authorization_params: {},
    template_variables: [],
    capture_metadata: [],
    api_hosts: [base.hostname],
    privacy: {
      settings_url: `${issuer}/connected-apps`,
      instructions:
        'Sandbox CRM is a test provider inside linkvault. Its grants live in memory only; removing the link (or restarting linkvault) ends them.',
      policy_url: `${issuer}/privacy`,
    },
    account_id: { from: 'id_token_claim', path: 'sub' },
    token_response: 'standard',
    notes:
      'Built-in development provider (node-oidc-provider), never enabled in production. Client credentials, keys, grants and tokens are generated per process and kept in memory.',
  };

  return {
    entry,
    credentials,
    allowInsecureUrls: base.protocol === 'http:',
    router,
    issuer,
    close: async () => {
      // The in-memory adapter holds no sockets or timers; nothing else to release.
    },
  };
}
