import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Request, RequestHandler } from 'express';
import type { Logger } from 'pino';
import type { Metrics } from '../metrics.js';

/** Methods we label as themselves; anything else is 'OTHER' so a caller cannot grow metric cardinality. */
const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

/**
 * Probes and static files are logged at debug so that a health checker or a page's assets do not
 * drown the log (they were 44 % of a walkthrough's lines): the health routes, the SDK script, the
 * pages' assets and the favicon. Everything else is logged at info. A quiet route that fails
 * (status 400 or more) is logged at info too.
 */
const QUIET_ROUTES = new Set([
  '/healthz',
  '/readyz',
  '/metrics',
  '/favicon.ico',
  '/sdk/connect.js',
  '/sdk/connect.v1.js',
  '/assets/:name',
]);

/** Whether a request for `route` (a template) that ended with `status` is logged at debug. */
export function isQuietRoute(route: string, status: number): boolean {
  return status < 400 && (QUIET_ROUTES.has(route) || route.startsWith('/sdk/'));
}

/** The route label of a request no route answered (including one refused before routing, e.g. for its body). */
export const UNMATCHED_ROUTE = 'unmatched';

/**
 * `res.locals` key under which a handler that is not an Express route (the sandbox's OAuth server,
 * mounted with `use`) names the route it answered, a fixed template like `/sandbox/token`. Without
 * it such requests are labelled `unmatched`. The value must be a template, never a raw path.
 */
export const ROUTE_LABEL = 'linkvaultRoute';

export interface ObserveDeps {
  readonly log: Logger;
  readonly metrics: Metrics;
}

/**
 * The route TEMPLATE that answered (`/v1/links/:id`), never the raw path, which carries ids and,
 * on /v1/connect and /v1/oauth/callback, a session token, code and state in its query.
 * Routers are mounted at '/' and declare full templates (see app.ts), so baseUrl is '' or a static prefix.
 */
function routeTemplateOf(req: Request): string {
  const named: unknown = req.res?.locals[ROUTE_LABEL];
  if (typeof named === 'string') return named;
  const path: unknown = req.route?.path;
  if (typeof path !== 'string') return UNMATCHED_ROUTE;
  return `${req.baseUrl ?? ''}${path}` || '/';
}

/**
 * Records one finished (or aborted) request: the HTTP metrics, and one log line with allowlisted
 * fields only (method, route template, status, duration, request id, user agent, body length).
 * Call it when the response closes (or, with `aborted` said, once the answer is handed to the
 * socket); `route` is the template, never the raw path.
 */
export function observeRequest(
  deps: ObserveDeps,
  req: IncomingMessage,
  res: ServerResponse,
  route: string,
  requestId: string,
  startedAt: bigint,
  aborted: boolean = !res.writableFinished,
): void {
  const seconds = Number(process.hrtime.bigint() - startedAt) / 1e9;
  const method = req.method !== undefined && KNOWN_METHODS.has(req.method) ? req.method : 'OTHER';
  deps.metrics.httpRequests.inc({
    route,
    method,
    status: aborted ? 'aborted' : String(res.statusCode),
  });
  deps.metrics.httpDuration.observe(seconds, { route, method });
  const level = isQuietRoute(route, res.statusCode) ? 'debug' : 'info';
  // Checked first so that a quiet logger costs no allocation on the hot path.
  if (!deps.log.isLevelEnabled(level)) return;
  // `status` is a number: the status sent, or (aborted: true) the one that was being sent when
  // the client went away.
  const line: Record<string, string | number | boolean> = {
    request_id: requestId,
    method,
    route,
    status: res.statusCode,
    duration_ms: Math.round(seconds * 1e6) / 1e3,
    user_agent: (req.headers['user-agent'] ?? '').slice(0, 256),
    request_bytes: Number(req.headers['content-length'] ?? 0) || 0,
  };
  if (aborted) line.aborted = true;
  deps.log[level](line, 'request');
}

/** Middleware: observeRequest for every request Express answers, under the route that matched. */
export function observeRequests(deps: ObserveDeps): RequestHandler {
  return (req, res, next) => {
    const startedAt = process.hrtime.bigint();
    res.once('close', () =>
      observeRequest(deps, req, res, routeTemplateOf(req), req.requestId, startedAt),
    );
    next();
  };
}
