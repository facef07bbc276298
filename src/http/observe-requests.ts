import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Request, RequestHandler } from 'express';
import type { Logger } from 'pino';
import type { Metrics } from '../metrics.js';

/** Methods we label as themselves; anything else is 'OTHER' so a caller cannot grow metric cardinality. */
const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

/** Probe routes are logged at debug so a health checker does not drown the log. */
const QUIET_ROUTES = new Set(['/healthz', '/readyz', '/metrics']);

/** The route label of a request no route answered (including one refused before routing, e.g. for its body). */
export const UNMATCHED_ROUTE = 'unmatched';

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
  const path: unknown = req.route?.path;
  if (typeof path !== 'string') return UNMATCHED_ROUTE;
  return `${req.baseUrl ?? ''}${path}` || '/';
}

/**
 * Records one finished (or aborted) request: the HTTP metrics, and one log line with allowlisted
 * fields only (method, route template, status, duration, request id, user agent, body length).
 * Call it when the response closes; `route` is the template, never the raw path.
 */
export function observeRequest(
  deps: ObserveDeps,
  req: IncomingMessage,
  res: ServerResponse,
  route: string,
  requestId: string,
  startedAt: bigint,
): void {
  const seconds = Number(process.hrtime.bigint() - startedAt) / 1e9;
  const method = req.method !== undefined && KNOWN_METHODS.has(req.method) ? req.method : 'OTHER';
  const status = res.writableFinished ? String(res.statusCode) : 'aborted';
  deps.metrics.httpRequests.inc({ route, method, status });
  deps.metrics.httpDuration.observe(seconds, { route, method });
  const level = QUIET_ROUTES.has(route) && res.statusCode < 400 ? 'debug' : 'info';
  // Checked first so that a quiet logger costs no allocation on the hot path.
  if (!deps.log.isLevelEnabled(level)) return;
  deps.log[level](
    {
      request_id: requestId,
      method,
      route,
      status,
      duration_ms: Math.round(seconds * 1e6) / 1e3,
      user_agent: (req.headers['user-agent'] ?? '').slice(0, 256),
      request_bytes: Number(req.headers['content-length'] ?? 0) || 0,
    },
    'request',
  );
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
