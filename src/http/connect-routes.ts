import {
  type Router,
  type NextFunction,
  type Request,
  type RequestHandler,
  type Response,
} from 'express';
import type { Config } from '../config.js';
import { LinkvaultError, invalidRequest } from '../errors.js';
import type { CallbackOutcome, Connect } from '../links/connect/connect.js';
import { FLOW_TTL_SECONDS } from '../links/connect/connect.js';
import { withResult } from '../links/connect/return-to.js';
import type { Sessions } from '../links/connect/sessions.js';
import { toLinkvaultError } from './problem.js';
import { createRateLimit, type RateLimit } from './rate-limit.js';
import { echoableName, jsonObject } from './request-shape.js';
import { authenticatedService, type ServiceAuth } from './service-auth.js';
import { mayActFor, tenantOutsideScope } from '../auth/tenant-scope.js';
import { parseStrictQuery } from './strict-query.js';
import { connectResultLocation } from './web-routes.js';
import { PROVIDER_ID_PATTERN } from '../providers/provider-id.js';
import { createStrictRouter } from './strict-router.js';

/**
 * The connect routes: a service mints a session (POST /v1/sessions), linkvault's own connect page
 * or SDK popup starts a flow (POST /v1/connect/:provider_id, the session as a Bearer header) and
 * the provider sends the browser back (GET /v1/oauth/callback/:provider_id).
 *
 * Session fixation (docs/threat-model.md): no GET starts a flow and the session token never
 * travels in a URL query. A link or page on another site cannot make a victim's browser start a
 * flow for someone else's session: it cannot set the Authorization header on a navigation or a
 * form post, a cross-origin fetch with it needs a CORS preflight linkvault never grants, and the
 * start is refused (403 cross_site_request) whenever the browser says the request is cross-site
 * (Sec-Fetch-Site, Fetch Metadata) or from another origin (Origin, RFC 6454 §7).
 *
 * Every response here carries Cache-Control: no-store and Referrer-Policy: no-referrer: the
 * authorization URL holds the state and the callback URL a code and state, and neither may sit in
 * a cache or leave in a Referer (RFC 9700 §4.2.4). The request logger logs route templates only
 * (observe-requests.ts), never these query strings.
 *
 * With require_confirmation the callback holds the link (pending_confirmation) and answers
 * `return_to?status=confirm&confirmation_id=…&provider=…` (the result page says "waiting for
 * confirmation" without return_to, and posts the same outcome to the SDK's opener).
 *
 * Outcomes: a flow started in the page with a return_to ends with a 303 to return_to (docs/api.md);
 * a popup flow (`display=popup`, the SDK), a flow without return_to, and any callback that cannot
 * be trusted end with a 303 to the hosted result page (/connect/result, web-routes.ts), which shows
 * the outcome and, in a popup, posts it to the opener. Clients that ask for JSON get JSON instead
 * (problem+json with the real status for errors).
 *
 * The browser-binding cookie is named `lv_flow` (`__Secure-lv_flow` when the public URL is https)
 * and scoped to `Path=<public path>/v1/oauth/callback/<provider>`: it is sent to that one callback
 * and nowhere else. The `__Host-` prefix would require `Path=/`, i.e. sending the cookie with
 * every request to linkvault; `__Secure-` keeps the guarantee that matters here (no plain-http
 * page can set or overwrite it) with the narrow path.
 */

export interface ConnectRouterDeps {
  readonly config: Pick<Config, 'publicUrl'> &
    Partial<Pick<Config, 'rateLimitPerMinute' | 'trustedProxyHops'>>;
  readonly sessions: Pick<Sessions, 'createSession'>;
  readonly connect: Pick<Connect, 'startConnect' | 'completeCallback'>;
  readonly serviceAuth: ServiceAuth;
  /** The per-client limiter for connect starts and callbacks; built from the configuration when omitted. */
  readonly rateLimit?: RateLimit;
}

/** Requests per minute per client address when the configuration does not say (LINKVAULT_RATE_LIMIT_PER_MINUTE). */
const DEFAULT_RATE_LIMIT_PER_MINUTE = 600;

const SESSION_FIELDS = new Set([
  'tenant_id',
  'user_id',
  'user_display',
  'providers',
  'return_to',
  'require_confirmation',
]);
/** Members of POST /v1/connect's body besides the template variables. */
const CONNECT_BODY_LIMITS = { maxMembers: 16, maxValueChars: 512 } as const;

/** RFC 6749 leaves sizes open; these bound what we parse and store, far above real providers' values. */
const CALLBACK_QUERY_LIMITS = {
  maxQueryChars: 8192,
  maxParams: 32,
  maxValueChars: 2048,
  valueLimits: { state: 512, code: 4096, error_description: 4096 },
} as const;

function noStore(_req: Request, res: Response, next: NextFunction): void {
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Pragma', 'no-cache');
  res.setHeader('Referrer-Policy', 'no-referrer');
  next();
}

/** Browser routes answer with redirects to pages unless the client asks for JSON (API tools, tests). */
function wantsHtml(req: Request): boolean {
  return req.accepts(['text/html', 'application/problem+json', 'application/json']) === 'text/html';
}

/** The provider's own error code (RFC 6749 §4.1.2.1) as the OAuth adapter classified it: a fixed set, or 'unknown'. */
function providerErrorOf(err: LinkvaultError): string | null {
  const value = err.extra?.provider_error;
  return typeof value === 'string' && /^[a-z_]{1,64}$/.test(value) ? value : null;
}

function secureCookies(publicUrl: string): boolean {
  return publicUrl.startsWith('https:');
}

function bindingCookieName(publicUrl: string): string {
  return secureCookies(publicUrl) ? '__Secure-lv_flow' : 'lv_flow';
}

/** The browser-visible callback path for a provider (the public URL may carry a path prefix). */
function callbackPath(publicUrl: string, providerId: string): string {
  const prefix = new URL(publicUrl).pathname.replace(/\/$/, '');
  return `${prefix}/v1/oauth/callback/${providerId}`;
}

function bindingCookie(
  publicUrl: string,
  providerId: string,
  value: string,
  maxAgeSeconds: number,
): string {
  const attributes = [
    `${bindingCookieName(publicUrl)}=${value}`,
    `Path=${callbackPath(publicUrl, providerId)}`,
    `Max-Age=${maxAgeSeconds}`,
    'HttpOnly',
    // Lax: sent on the provider's top-level redirect back to us, never on cross-site subrequests.
    'SameSite=Lax',
  ];
  if (secureCookies(publicUrl)) attributes.push('Secure');
  return attributes.join('; ');
}

/**
 * The binding cookie's value, or undefined when absent, malformed or sent more than once (two
 * cookies of the same name mean someone else set one; fail closed rather than pick).
 */
function readBindingCookie(req: Request, name: string): string | undefined {
  const header = req.headers.cookie;
  if (typeof header !== 'string' || header.length > 8192) return undefined;
  const found: string[] = [];
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq === -1) continue;
    if (part.slice(0, eq).trim() === name) found.push(part.slice(eq + 1).trim());
  }
  if (found.length !== 1 || !/^[A-Za-z0-9_-]{1,256}$/.test(found[0]!)) return undefined;
  return found[0];
}

function parseSessionBody(body: unknown): {
  tenantId: unknown;
  userId: unknown;
  providers?: unknown;
  returnTo?: unknown;
  userDisplay?: unknown;
  requireConfirmation?: unknown;
} {
  const record = jsonObject(body, null);
  for (const key of Object.keys(record)) {
    if (!SESSION_FIELDS.has(key)) {
      const shown = echoableName(key);
      throw invalidRequest(shown, shown ? `Unknown field "${shown}"` : 'Unknown field in the body');
    }
  }
  if (record.tenant_id === undefined) throw invalidRequest('tenant_id', 'tenant_id is required');
  if (record.user_id === undefined) throw invalidRequest('user_id', 'user_id is required');
  return {
    tenantId: record.tenant_id,
    userId: record.user_id,
    ...(record.providers === undefined ? {} : { providers: record.providers }),
    ...(record.return_to === undefined ? {} : { returnTo: record.return_to }),
    ...(record.user_display === undefined ? {} : { userDisplay: record.user_display }),
    ...(record.require_confirmation === undefined
      ? {}
      : { requireConfirmation: record.require_confirmation }),
  };
}

/**
 * 403 cross_site_request unless the browser says the request comes from linkvault's own origin.
 * Sec-Fetch-Site (Fetch Metadata) is sent by every current browser; Origin by every browser on a
 * POST. Either one naming another site refuses; a client that sends neither (an API tool) is not
 * a browser a victim's session could be fixed in.
 */
function checkSameOrigin(req: Request, publicOrigin: string): void {
  const site = req.headers['sec-fetch-site'];
  if (site !== undefined && site !== 'same-origin')
    throw new LinkvaultError('cross_site_request', {
      detail: "Start the connection from linkvault's own connect page",
    });
  const origin = req.headers.origin;
  if (origin !== undefined && origin !== publicOrigin)
    throw new LinkvaultError('cross_site_request', {
      detail: "Start the connection from linkvault's own connect page",
    });
}

/** POST /v1/connect's body: `display` and the provider's template variables, all short strings. */
function parseConnectBody(body: unknown): {
  display: 'page' | 'popup';
  parameters: Record<string, string>;
} {
  const record = body === undefined ? {} : jsonObject(body, 'body');
  const entries = Object.entries(record);
  if (entries.length > CONNECT_BODY_LIMITS.maxMembers)
    throw invalidRequest('body', 'Too many members in the body');
  const parameters: Record<string, string> = {};
  let display: 'page' | 'popup' = 'page';
  for (const [name, value] of entries) {
    if (name === 'display') {
      if (value !== 'page' && value !== 'popup')
        throw invalidRequest('display', 'display must be page or popup');
      display = value;
      continue;
    }
    const shown = echoableName(name);
    if (typeof value !== 'string' || value.length > CONNECT_BODY_LIMITS.maxValueChars)
      throw invalidRequest(
        shown,
        `${shown ?? 'each template variable'} must be a string of at most ${CONNECT_BODY_LIMITS.maxValueChars} characters`,
      );
    parameters[name] = value;
  }
  return { display, parameters };
}

/** The bearer of `Authorization: Bearer <session token>` (undefined when absent or not a bearer). */
function bearerOf(req: Request): string | undefined {
  const header = req.headers.authorization;
  if (typeof header !== 'string' || header.length > 512 || !/^bearer /i.test(header))
    return undefined;
  return header.slice(7).trim();
}

export function createConnectRouter(deps: ConnectRouterDeps): Router {
  const { config, sessions, connect, serviceAuth } = deps;
  const publicOrigin = new URL(config.publicUrl).origin;
  const router = createStrictRouter();
  // Unauthenticated callers make linkvault do work (a discovery, a flow-state row, a token
  // exchange): each client address gets a bounded share, answered 429 problem+json beyond it.
  const rateLimit =
    deps.rateLimit ??
    createRateLimit({
      perMinute: config.rateLimitPerMinute ?? DEFAULT_RATE_LIMIT_PER_MINUTE,
      trustedProxyHops: config.trustedProxyHops ?? 0,
    });

  const createSessionRoute: RequestHandler = async (req, res) => {
    const input = parseSessionBody(req.body);
    // A tenant-scoped service mints sessions only for its own tenants (docs/service-auth.md).
    if (typeof input.tenantId === 'string' && !mayActFor(authenticatedService(res), input.tenantId))
      throw tenantOutsideScope();
    const created = await sessions.createSession(
      {
        tenantId: input.tenantId as string,
        userId: input.userId as string,
        ...(input.providers === undefined
          ? {}
          : { providers: input.providers as readonly string[] }),
        ...(input.returnTo === undefined ? {} : { returnTo: input.returnTo as string }),
        ...(input.userDisplay === undefined ? {} : { userDisplay: input.userDisplay as string }),
        ...(input.requireConfirmation === undefined
          ? {}
          : { requireConfirmation: input.requireConfirmation as boolean }),
      },
      authenticatedService(res).id,
    );
    res.status(201).json(created);
  };

  const startConnectRoute: RequestHandler = async (req, res) => {
    checkSameOrigin(req, publicOrigin);
    const providerId = req.params.provider_id;
    if (typeof providerId !== 'string' || !PROVIDER_ID_PATTERN.test(providerId))
      throw new LinkvaultError('provider_not_found');
    const { display, parameters } = parseConnectBody(req.body);
    let started;
    try {
      started = await connect.startConnect({
        sessionToken: bearerOf(req),
        providerId,
        parameters,
        display,
      });
    } catch (err) {
      // RFC 6750 §3: a 401 for bearer auth names the scheme.
      if (toLinkvaultError(err).status === 401)
        res.setHeader('WWW-Authenticate', 'Bearer error="invalid_token"');
      throw err;
    }
    res.append(
      'Set-Cookie',
      bindingCookie(config.publicUrl, providerId, started.bindingCookieValue, FLOW_TTL_SECONDS),
    );
    res.status(200).json({ authorization_url: started.redirectUrl.href });
  };

  const callbackRoute: RequestHandler = async (req, res, next) => {
    const providerId = req.params.provider_id;
    const validProvider = typeof providerId === 'string' && PROVIDER_ID_PATTERN.test(providerId);
    // The binding cookie has done its job (or failed it) whatever happens: clear it.
    if (validProvider) res.append('Set-Cookie', bindingCookie(config.publicUrl, providerId, '', 0));
    let outcome: CallbackOutcome;
    try {
      if (!validProvider) throw new LinkvaultError('invalid_state', { detail: 'Unknown callback' });
      // Malformed or oversized input is refused before the flow state is even looked up.
      const query = parseStrictQuery(req, CALLBACK_QUERY_LIMITS);
      outcome = await connect.completeCallback({
        providerId,
        rawQuery: query.raw,
        bindingCookieValue: readBindingCookie(req, bindingCookieName(config.publicUrl)),
        requestId: req.requestId,
      });
    } catch (err) {
      outcome = {
        status: 'error',
        error: toLinkvaultError(err),
        providerId: null,
        returnTo: null,
        display: null,
      };
    }

    // A flow started in the page with a return_to goes back to the app (docs/api.md); a popup flow, or
    // one without return_to, goes to the hosted result page (which answers the SDK's opener).
    // returnTo is null whenever the flow could not be trusted, so such a request never learns it.
    const toApp = outcome.returnTo !== null && outcome.display === 'page';
    if (outcome.status === 'connected') {
      const result = { status: 'connected', link_id: outcome.linkId, provider: outcome.providerId };
      if (toApp) return res.redirect(303, withResult(outcome.returnTo!, result));
      if (!wantsHtml(req)) return res.status(200).json(result);
      return res.redirect(
        303,
        connectResultLocation(config.publicUrl, {
          status: 'connected',
          linkId: outcome.linkId,
          providerId: outcome.providerId,
        }),
      );
    }
    if (outcome.status === 'confirm') {
      // The id is for the host's backend (POST /v1/confirmations); it confirms nothing by itself.
      const result = {
        status: 'confirm',
        confirmation_id: outcome.confirmationId,
        provider: outcome.providerId,
      };
      if (toApp) return res.redirect(303, withResult(outcome.returnTo!, result));
      if (!wantsHtml(req)) return res.status(200).json(result);
      return res.redirect(
        303,
        connectResultLocation(config.publicUrl, {
          status: 'confirm',
          confirmationId: outcome.confirmationId,
          providerId: outcome.providerId,
        }),
      );
    }
    const error = outcome.error;
    if (toApp) {
      // provider_error (a registered RFC 6749 code or 'unknown') lets the host app tell a user's "no" (access_denied) from a failure.
      const providerError = providerErrorOf(error);
      return res.redirect(
        303,
        withResult(outcome.returnTo!, {
          status: 'error',
          error: error.code,
          ...(outcome.providerId ? { provider: outcome.providerId } : {}),
          ...(providerError ? { provider_error: providerError } : {}),
        }),
      );
    }
    if (!wantsHtml(req)) return next(error);
    res.redirect(
      303,
      connectResultLocation(config.publicUrl, {
        status: 'error',
        error: error.code,
        providerId: outcome.providerId,
        providerError: providerErrorOf(error),
      }),
    );
  };

  router.post(
    '/v1/sessions',
    noStore,
    serviceAuth.authenticate,
    serviceAuth.requireRole('sessions'),
    createSessionRoute,
  );
  router.post('/v1/connect/:provider_id', noStore, rateLimit.middleware, startConnectRoute);
  router.get('/v1/oauth/callback/:provider_id', noStore, rateLimit.middleware, callbackRoute);
  return router;
}
