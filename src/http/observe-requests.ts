import type { Request, RequestHandler } from 'express';
import type { Logger } from 'pino';
import type { Metrics } from '../metrics.js';

/** Methods we label as themselves; anything else is 'OTHER' so a caller cannot grow metric cardinality. */
const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

/** Probe routes are logged at debug so a health checker does not drown the log. */
const QUIET_ROUTES = new Set(['/healthz', '/readyz', '/metrics']);

/**
 * The route TEMPLATE that answered (`/v1/links/:id`), never the raw path, which carries ids and,
 * on /v1/connect and /v1/oauth/callback, a session token, code and state in its query.
 * Routers are mounted at '/' and declare full templates (see app.ts), so baseUrl is '' or a static prefix.
 */
function routeTemplateOf(req: Request): string {
  const path: unknown = req.route?.path;
  if (typeof path !== 'string') return 'unmatched';
  return `${req.baseUrl ?? ''}${path}` || '/';
}

/**
 * Logs one line per request with allowlisted fields only (method, route template, status,
 * duration, request id, user agent, body length) and records the HTTP metrics.
 */
export function observeRequests(deps: { log: Logger; metrics: Metrics }): RequestHandler {
  return (req, res, next) => {
    const startedAt = process.hrtime.bigint();
    res.once('close', () => {
      const seconds = Number(process.hrtime.bigint() - startedAt) / 1e9;
      const route = routeTemplateOf(req);
      const method = KNOWN_METHODS.has(req.method) ? req.method : 'OTHER';
      const status = res.writableFinished ? String(res.statusCode) : 'aborted';
      deps.metrics.httpRequests.inc({ route, method, status });
      deps.metrics.httpDuration.observe(seconds, { route, method });
      const fields = {
        request_id: req.requestId,
        method,
        route,
        status,
        duration_ms: Math.round(seconds * 1e6) / 1e3,
        user_agent: (req.get('user-agent') ?? '').slice(0, 256),
        request_bytes: Number(req.get('content-length') ?? 0) || 0,
      };
      if (QUIET_ROUTES.has(route) && res.statusCode < 400) deps.log.debug(fields, 'request');
      else deps.log.info(fields, 'request');
    });
    next();
  };
}
