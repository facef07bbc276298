import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type Router, type Request, type RequestHandler, type Response } from 'express';
import type { Config } from '../config.js';
import { LinkvaultError } from '../errors.js';
import type { Catalogue } from '../providers/catalogue.js';
import type { Sessions } from '../links/connect/sessions.js';
import { sessionOf } from './session-bearer.js';
import {
  renderConnectPage,
  renderManagePage,
  renderResultPage,
  type ConnectResult,
} from '../web/render-page.js';
import { PROVIDER_ID_PATTERN } from '../providers/provider-id.js';
import { createStrictRouter } from './strict-router.js';

/**
 * What people see in the browser: the connect SDK (/sdk/connect.js), the hosted connect page
 * (/connect), "my linked accounts" (/manage), the connect result page (/connect/result), their
 * static assets (/assets/:name), and the two provider lists the pages read: GET /v1/providers
 * (docs/api.md: every enabled provider) and GET /v1/me/providers (those a session may connect).
 *
 * Pages carry their own Content-Security-Policy over the API's deny-all default: scripts, styles
 * and images from linkvault's own origin only, no inline script or style, Trusted Types with no
 * policy (every HTML-string DOM sink throws), no forms, no <base>, and frame-ancestors limited to
 * LINKVAULT_RETURN_URL_ALLOWLIST (CSP Level 3; frame-ancestors supersedes X-Frame-Options, which is
 * removed so the two cannot disagree). The session token never reaches these routes: it rides in
 * the URL fragment and the page moves it into memory (web/page-session.js).
 */

export interface WebRouterDeps {
  readonly config: Pick<Config, 'publicUrl' | 'returnUrlAllowlist'> &
    Partial<Pick<Config, 'appName'>>;
  readonly sessions: Pick<Sessions, 'resolveSession'>;
  readonly catalogue: Pick<Catalogue, 'get' | 'enabled' | 'publicView'>;
  /** Directory holding the page assets (src/web); tests may point elsewhere. */
  readonly assetsDir?: string;
}

/** The SDK's cache lifetimes: the major-versioned URL changes only compatibly, so it may be cached longer. */
export const SDK_CACHE_CONTROL = {
  latest: 'public, max-age=300, stale-while-revalidate=3600',
  v1: 'public, max-age=3600, stale-while-revalidate=86400',
} as const;

/** Assets are revalidated on every use (cheap with ETag/304) so that a deploy never mixes versions. */
const ASSET_CACHE_CONTROL = 'no-cache';

const ASSET_TYPES: Readonly<Record<string, string>> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};

/** Every file /assets/ serves; nothing else in the directory is reachable. */
export const PAGE_ASSETS: readonly string[] = [
  'connect-page.js',
  'manage-page.js',
  'activity-view.js',
  'result-page.js',
  'page-session.js',
  'popup-result.js',
  'render-dom.js',
  'styles.css',
  'favicon.svg',
];

interface StaticFile {
  readonly body: Buffer;
  readonly type: string;
  readonly etag: string;
}

const LINK_ID = /^[A-Za-z0-9_-]{1,128}$/;
const ERROR_CODE = /^[a-z][a-z0-9_]{0,63}$/;
/** `<link id>.<secret>` as connect.ts mints it. */
const CONFIRMATION_ID = /^lnk_[A-Za-z0-9_-]{1,64}\.[A-Za-z0-9_-]{43}$/;

function staticFile(body: Buffer, type: string): StaticFile {
  // A strong validator over the exact bytes (RFC 9110 §8.8.3).
  return {
    body,
    type,
    etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 32)}"`,
  };
}

/** RFC 9110 §13.1.2: If-None-Match matches on the weak comparison of any listed tag, or `*`. */
function notModified(req: Request, etag: string): boolean {
  const header = req.headers['if-none-match'];
  if (typeof header !== 'string') return false;
  return header.split(',').some((tag) => {
    const t = tag.trim();
    return t === '*' || t.replace(/^W\//, '') === etag;
  });
}

function sendStatic(req: Request, res: Response, file: StaticFile, cacheControl: string): void {
  res.setHeader('ETag', file.etag);
  res.setHeader('Cache-Control', cacheControl);
  if (notModified(req, file.etag)) {
    res.status(304).end();
    return;
  }
  res.type(file.type).send(file.body);
}

/** The connect SDK with this deployment's exact base URL and origin written in. */
export function buildSdk(source: string, publicUrl: string): string {
  const origin = new URL(publicUrl).origin;
  let out = source;
  for (const [placeholder, value] of [
    ["'__LINKVAULT_BASE_URL__'", publicUrl],
    ["'__LINKVAULT_ORIGIN__'", origin],
  ] as const) {
    if (!out.includes(placeholder))
      throw new Error(`connect.js: placeholder ${placeholder} is missing`);
    out = out.replace(placeholder, JSON.stringify(value));
  }
  return out;
}

/** The pages' Content-Security-Policy (see the file comment). */
function pageContentSecurityPolicy(frameAncestors: readonly string[], https: boolean): string {
  // Origins come from config.ts (already normalised to scheme://host[:port]); anything that could
  // break out of the directive is dropped rather than trusted.
  const ancestors = frameAncestors.filter((o) => /^https?:\/\/[A-Za-z0-9.\-[\]:]+$/.test(o));
  return [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "form-action 'none'",
    "base-uri 'none'",
    `frame-ancestors ${ancestors.length ? ancestors.join(' ') : "'none'"}`,
    "require-trusted-types-for 'script'",
    "trusted-types 'none'",
    ...(https ? ['upgrade-insecure-requests'] : []),
  ].join('; ');
}

/**
 * Where the OAuth callback sends a popup-mode flow, or a flow without return_to: the result page,
 * with the outcome in the query. Nothing secret goes there: a link id, a provider id, error codes.
 */
export function connectResultLocation(
  publicUrl: string,
  result:
    | { readonly status: 'connected'; readonly linkId: string; readonly providerId: string | null }
    | {
        readonly status: 'confirm';
        readonly confirmationId: string;
        readonly providerId: string | null;
      }
    | {
        readonly status: 'error';
        readonly error: string;
        readonly providerId: string | null;
        readonly providerError?: string | null;
      },
): string {
  const query = new URLSearchParams({ status: result.status });
  if (result.status === 'connected') query.set('link_id', result.linkId);
  else if (result.status === 'confirm') query.set('confirmation_id', result.confirmationId);
  else {
    query.set('error', result.error);
    if (result.providerError) query.set('provider_error', result.providerError);
  }
  if (result.providerId !== null) query.set('provider', result.providerId);
  return `${publicUrl}/connect/result?${query}`;
}

/** The one string value of a query parameter; absent, repeated or structured values are null. */
function queryValue(req: Request, name: string): string | null {
  const value = (req.query as Record<string, unknown>)[name];
  return typeof value === 'string' ? value : null;
}

/** The result page's input, validated; anything off becomes an invalid_request error page. */
function parseResult(req: Request): ConnectResult {
  const provider = queryValue(req, 'provider');
  const providerId = provider !== null && PROVIDER_ID_PATTERN.test(provider) ? provider : null;
  const status = queryValue(req, 'status');
  if (status === 'connected') {
    const linkId = queryValue(req, 'link_id');
    if (linkId !== null && LINK_ID.test(linkId)) return { status: 'connected', linkId, providerId };
  } else if (status === 'confirm') {
    const confirmationId = queryValue(req, 'confirmation_id');
    if (confirmationId !== null && CONFIRMATION_ID.test(confirmationId))
      return { status: 'confirm', confirmationId, providerId };
  } else if (status === 'cancelled') {
    return { status: 'cancelled', providerId };
  } else if (status === 'error') {
    const error = queryValue(req, 'error');
    if (error !== null && ERROR_CODE.test(error)) {
      // The provider's own error code (RFC 6749 §4.1.2.1) tells a user's "no" from a failure.
      const providerError = queryValue(req, 'provider_error');
      if (error === 'provider_denied' && providerError === 'access_denied')
        return { status: 'cancelled', providerId };
      return { status: 'error', error, providerId };
    }
  }
  return { status: 'error', error: 'invalid_request', providerId };
}

export function createWebRouter(deps: WebRouterDeps): Router {
  const { config, sessions, catalogue } = deps;
  const dir = deps.assetsDir ?? fileURLToPath(new URL('../web/', import.meta.url));
  const publicOrigin = new URL(config.publicUrl).origin;
  const basePath = new URL(config.publicUrl).pathname.replace(/\/$/, '');
  const https = config.publicUrl.startsWith('https:');
  const csp = pageContentSecurityPolicy(config.returnUrlAllowlist, https);
  const appName = config.appName ?? null;
  // An opener may be any allowlisted origin, or linkvault itself (the manage page reconnects through the SDK).
  const openerOrigins = new Set([...config.returnUrlAllowlist, publicOrigin]);

  // Everything is read once at start: a missing asset is a start-up failure, not a 404 later.
  const sdk = staticFile(
    Buffer.from(buildSdk(readFileSync(`${dir}connect.js`, 'utf8'), config.publicUrl)),
    ASSET_TYPES['.js']!,
  );
  const assets = new Map<string, StaticFile>();
  for (const name of PAGE_ASSETS) {
    const type = ASSET_TYPES[name.slice(name.lastIndexOf('.'))]!;
    assets.set(name, staticFile(readFileSync(`${dir}${name}`), type));
  }

  function sendPage(
    res: Response,
    status: number,
    markup: string,
    options: { allowPopups?: boolean } = {},
  ): void {
    res.setHeader('Content-Security-Policy', csp);
    res.removeHeader('X-Frame-Options');
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader(
      'Permissions-Policy',
      'camera=(), microphone=(), geolocation=(), payment=(), usb=()',
    );
    // The manage page opens the reconnect popup, which must keep its opener; the connect and result
    // pages ARE that popup (opened by another origin), so they must not set COOP at all.
    if (options.allowPopups)
      res.setHeader('Cross-Origin-Opener-Policy', 'same-origin-allow-popups');
    res.status(status).type('text/html; charset=utf-8').send(markup);
  }

  const sdkRoute =
    (cacheControl: string): RequestHandler =>
    (req, res) => {
      // Host pages on other origins load this script: CORP must allow it, and CORS lets them use
      // `crossorigin` / Subresource Integrity. It is public and carries no credentials.
      res.setHeader('Cross-Origin-Resource-Policy', 'cross-origin');
      res.setHeader('Access-Control-Allow-Origin', '*');
      sendStatic(req, res, sdk, cacheControl);
    };

  const connectPage: RequestHandler = (req, res) => {
    const given = (req.query as Record<string, unknown>).origin;
    if (given === undefined) {
      sendPage(
        res,
        200,
        renderConnectPage({ basePath, appName, openerOrigin: null, originRejected: false }),
      );
      return;
    }
    const origin = typeof given === 'string' ? given : null;
    if (origin !== null && openerOrigins.has(origin)) {
      sendPage(
        res,
        200,
        renderConnectPage({ basePath, appName, openerOrigin: origin, originRejected: false }),
      );
      return;
    }
    sendPage(
      res,
      400,
      renderConnectPage({ basePath, appName, openerOrigin: null, originRejected: true }),
    );
  };

  const resultPage: RequestHandler = (req, res) => {
    const result = parseResult(req);
    const providerName =
      result.providerId === null ? null : (catalogue.get(result.providerId)?.name ?? null);
    sendPage(res, 200, renderResultPage({ basePath, result, providerName, appName }));
  };

  const assetRoute: RequestHandler = (req, res) => {
    const name = req.params.name;
    const file = typeof name === 'string' ? assets.get(name) : undefined;
    if (!file) throw new LinkvaultError('not_found');
    sendStatic(req, res, file, ASSET_CACHE_CONTROL);
  };

  /** GET /v1/providers (docs/api.md): every enabled provider, for anyone. */
  const allProviders: RequestHandler = (_req, res) => {
    res.json({ providers: catalogue.enabled().map((entry) => catalogue.publicView(entry)) });
  };

  /**
   * GET /v1/me/providers: the enabled providers this session may connect, as GET /v1/providers
   * shows them, with whom the connection is for (`user_display`, null when the host gave none) and
   * the host application's name (`app_name`, LINKVAULT_APP_NAME): the connect page shows both, so
   * that a person handed someone else's connect link sees it is not theirs. `require_confirmation`
   * tells the manage page not to offer a reconnect it could not finish.
   */
  const myProviders: RequestHandler = async (req, res) => {
    const session = await sessionOf(req, res, sessions);
    const allowed = session.providers.length > 0 ? new Set(session.providers) : null;
    const providers = catalogue
      .enabled()
      .filter((entry) => allowed === null || allowed.has(entry.id))
      .map((entry) => catalogue.publicView(entry));
    res.json({
      providers,
      user_display: session.userDisplay ?? null,
      app_name: appName,
      require_confirmation: session.requireConfirmation === true,
    });
  };

  const router = createStrictRouter();
  router.get('/sdk/connect.js', sdkRoute(SDK_CACHE_CONTROL.latest));
  router.get('/sdk/connect.v1.js', sdkRoute(SDK_CACHE_CONTROL.v1));
  router.get('/connect', connectPage);
  router.get('/connect/result', resultPage);
  router.get('/manage', (_req, res) =>
    sendPage(res, 200, renderManagePage({ basePath }), { allowPopups: true }),
  );
  router.get('/assets/:name', assetRoute);
  router.get('/v1/providers', allProviders);
  router.get('/v1/me/providers', myProviders);
  return router;
}
