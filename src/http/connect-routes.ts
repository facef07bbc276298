import { Router, type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import type { Config } from '../config.js';
import { LinkvaultError } from '../errors.js';
import type { Connect } from '../links/connect.js';
import { FLOW_TTL_SECONDS } from '../links/connect.js';
import { withResult } from '../links/return-to.js';
import type { Sessions } from '../links/sessions.js';
import { RESULT_PAGE_CSP, renderResultPage } from '../web/connect-result-page.js';
import { toLinkvaultError } from './problem.js';
import { authenticatedService, type ServiceAuth } from './service-auth.js';
import { parseStrictQuery } from './strict-query.js';

/**
 * The connect routes: a service mints a session (POST /v1/sessions), the browser starts a flow
 * (GET /v1/connect/:provider_id) and the provider sends it back (GET /v1/oauth/callback/:provider_id).
 *
 * Every response here carries Cache-Control: no-store and Referrer-Policy: no-referrer: the
 * connect URL holds a session bearer and the callback URL a code and state, and neither may sit in
 * a cache or leave in a Referer (RFC 9700 §4.2.4). The request logger logs route templates only
 * (observe-requests.ts), never these query strings.
 *
 * The browser-binding cookie is named `lv_flow` (`__Secure-lv_flow` when the public URL is https)
 * and scoped to `Path=<public path>/v1/oauth/callback/<provider>`: it is sent to that one callback
 * and nowhere else. The `__Host-` prefix would require `Path=/`, i.e. sending the cookie with
 * every request to linkvault; `__Secure-` keeps the guarantee that matters here (no plain-http
 * page can set or overwrite it) with the narrow path.
 */

export interface ConnectRouterDeps {
  readonly config: Pick<Config, 'publicUrl'>;
  readonly sessions: Pick<Sessions, 'createSession'>;
  readonly connect: Pick<Connect, 'startConnect' | 'completeCallback'>;
  readonly serviceAuth: ServiceAuth;
}

const SESSION_FIELDS = new Set(['tenant_id', 'user_id', 'providers', 'return_to']);
const PROVIDER_ID = /^[a-z][a-z0-9-]{0,62}$/;

/** RFC 6749 leaves sizes open; these bound what we parse and store, far above real providers' values. */
const CONNECT_QUERY_LIMITS = { maxQueryChars: 4096, maxParams: 16, maxValueChars: 512 } as const;
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

const RESULT_TEXT: Readonly<Record<string, { title: string; message: string }>> = {
  connected: { title: 'Account connected', message: 'Your account is connected.' },
  provider_denied: { title: 'Connection cancelled', message: 'The provider did not grant access, so nothing was connected.' },
  flow_binding_mismatch: { title: 'Connection not completed', message: 'This link was opened in a different browser than the one that started the connection. Start again from the same browser.' },
  invalid_state: { title: 'Connection not completed', message: 'This connection attempt is unknown, expired or was already used. Start again.' },
  session_expired: { title: 'Session expired', message: 'The connection session has expired. Go back to the application and start again.' },
};

function pageText(code: string): { title: string; message: string } {
  return RESULT_TEXT[code] ?? { title: 'Connection not completed', message: 'The account could not be connected. Start again, and contact support if it keeps failing.' };
}

/** Browser routes answer HTML (no script, strict CSP) unless the client asks for JSON. */
function wantsHtml(req: Request): boolean {
  return req.accepts(['text/html', 'application/problem+json', 'application/json']) === 'text/html';
}

function sendPage(res: Response, status: number, code: string | null): void {
  const text = pageText(code ?? 'connected');
  res
    .status(status)
    .setHeader('Content-Security-Policy', RESULT_PAGE_CSP)
    .type('text/html; charset=utf-8')
    .send(renderResultPage({ title: text.title, message: text.message, code }));
}

function sendBrowserError(req: Request, res: Response, err: unknown, next: NextFunction): void {
  const problem = toLinkvaultError(err);
  if (problem.status >= 500 || !wantsHtml(req)) return next(problem);
  sendPage(res, problem.status, problem.code);
}

function secureCookies(publicUrl: string): boolean {
  return publicUrl.startsWith('https:');
}

export function bindingCookieName(publicUrl: string): string {
  return secureCookies(publicUrl) ? '__Secure-lv_flow' : 'lv_flow';
}

/** The browser-visible callback path for a provider (the public URL may carry a path prefix). */
function callbackPath(publicUrl: string, providerId: string): string {
  const prefix = new URL(publicUrl).pathname.replace(/\/$/, '');
  return `${prefix}/v1/oauth/callback/${providerId}`;
}

function bindingCookie(publicUrl: string, providerId: string, value: string, maxAgeSeconds: number): string {
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

function parseSessionBody(body: unknown): { tenantId: unknown; userId: unknown; providers?: unknown; returnTo?: unknown } {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new LinkvaultError('invalid_request', { detail: 'The body must be a JSON object' });
  }
  const record = body as Record<string, unknown>;
  for (const key of Object.keys(record)) {
    if (!SESSION_FIELDS.has(key)) {
      const shown = /^[A-Za-z0-9_.-]{1,64}$/.test(key) ? key : null;
      throw new LinkvaultError('invalid_request', {
        detail: shown ? `Unknown field "${shown}"` : 'Unknown field in the body',
        ...(shown ? { extra: { parameter: shown } } : {}),
      });
    }
  }
  if (record.tenant_id === undefined) throw new LinkvaultError('invalid_request', { detail: 'tenant_id is required', extra: { parameter: 'tenant_id' } });
  if (record.user_id === undefined) throw new LinkvaultError('invalid_request', { detail: 'user_id is required', extra: { parameter: 'user_id' } });
  return {
    tenantId: record.tenant_id,
    userId: record.user_id,
    ...(record.providers === undefined ? {} : { providers: record.providers }),
    ...(record.return_to === undefined ? {} : { returnTo: record.return_to }),
  };
}

export function createConnectRouter(deps: ConnectRouterDeps): Router {
  const { config, sessions, connect, serviceAuth } = deps;
  const router = Router();

  const createSessionRoute: RequestHandler = async (req, res) => {
    const input = parseSessionBody(req.body);
    const created = await sessions.createSession(
      {
        tenantId: input.tenantId as string,
        userId: input.userId as string,
        ...(input.providers === undefined ? {} : { providers: input.providers as readonly string[] }),
        ...(input.returnTo === undefined ? {} : { returnTo: input.returnTo as string }),
      },
      authenticatedService(res).id,
    );
    res.status(201).json(created);
  };

  const startConnectRoute: RequestHandler = async (req, res, next) => {
    try {
      const providerId = req.params.provider_id;
      if (typeof providerId !== 'string' || !PROVIDER_ID.test(providerId)) throw new LinkvaultError('provider_not_found');
      const query = parseStrictQuery(req, CONNECT_QUERY_LIMITS);
      const parameters: Record<string, string> = {};
      for (const [name, value] of query.values) if (name !== 'session') parameters[name] = value;
      const started = await connect.startConnect({ sessionToken: query.values.get('session'), providerId, parameters });
      res.append('Set-Cookie', bindingCookie(config.publicUrl, providerId, started.bindingCookieValue, FLOW_TTL_SECONDS));
      res.redirect(302, started.redirectUrl.href);
    } catch (err) {
      sendBrowserError(req, res, err, next);
    }
  };

  const callbackRoute: RequestHandler = async (req, res, next) => {
    const providerId = req.params.provider_id;
    const validProvider = typeof providerId === 'string' && PROVIDER_ID.test(providerId);
    // The binding cookie has done its job (or failed it) whatever happens: clear it.
    if (validProvider) res.append('Set-Cookie', bindingCookie(config.publicUrl, providerId, '', 0));
    try {
      if (!validProvider) throw new LinkvaultError('invalid_state', { detail: 'Unknown callback' });
      // Malformed or oversized input is refused before the flow state is even looked up.
      const query = parseStrictQuery(req, CALLBACK_QUERY_LIMITS);
      const outcome = await connect.completeCallback({
        providerId,
        rawQuery: query.raw,
        bindingCookieValue: readBindingCookie(req, bindingCookieName(config.publicUrl)),
        requestId: req.requestId,
      });
      if (outcome.status === 'connected') {
        if (outcome.returnTo) return res.redirect(303, withResult(outcome.returnTo, { status: 'connected', link_id: outcome.linkId }));
        if (!wantsHtml(req)) return res.status(200).json({ status: 'connected', link_id: outcome.linkId });
        return sendPage(res, 200, null);
      }
      if (outcome.returnTo) return res.redirect(303, withResult(outcome.returnTo, { status: 'error', error: outcome.error.code }));
      throw outcome.error;
    } catch (err) {
      sendBrowserError(req, res, err, next);
    }
  };

  router.post('/v1/sessions', noStore, serviceAuth.authenticate, serviceAuth.requireRole('sessions'), createSessionRoute);
  router.get('/v1/connect/:provider_id', noStore, startConnectRoute);
  router.get('/v1/oauth/callback/:provider_id', noStore, callbackRoute);
  return router;
}

