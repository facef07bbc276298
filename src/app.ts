import express from 'express';
import type { Logger } from 'pino';
import type { Config } from './config.js';
import type { KeyProvider } from './keys/key-provider.js';
import type { Metrics } from './metrics.js';
import type { Store } from './store/store.js';
import { createHealthRouter, type ReadinessCheck } from './http/health-routes.js';
import { parseJsonBody } from './http/json-body.js';
import { observeRequests } from './http/observe-requests.js';
import { createProblemHandler } from './http/problem.js';
import { assignRequestId } from './http/request-id.js';
import { createOpenApiRoute } from './http/openapi.js';
import {
  allowedMethodsFrom,
  createOptionsAnswer,
  createRouteFallback,
} from './http/route-fallback.js';
import { mountedRoutes, ROUTE_TABLE, type RouteSpec } from './http/route-table.js';
import { securityHeaders } from './http/security-headers.js';
import { STRICT_ROUTING } from './http/strict-router.js';
import { requireWellFormedInput } from './http/well-formed-input.js';

export interface AppDeps {
  readonly config: Config;
  readonly store: Store;
  readonly keys: KeyProvider;
  readonly metrics: Metrics;
  readonly log: Logger;
  /**
   * Feature routers, mounted at '/' in order. Each declares full path templates
   * (`/v1/links/:id`), so metrics and logs label requests by template, and throws or
   * `next(err)`s LinkvaultError for failures (the problem handler shapes the reply).
   * Nested routers must be mounted at static paths (no `:param` in a `use` path).
   */
  readonly routers?: readonly express.Router[];
  /**
   * The routes the app serves, as declared (default: ROUTE_TABLE, the sandbox's pages only with
   * config.sandbox): OPTIONS and 405 answers say `Allow` from it, GET /openapi.json documents it.
   */
  readonly routes?: readonly RouteSpec[];
  /** Extra readiness checks for /readyz besides the store and the key provider. */
  readonly readiness?: readonly ReadinessCheck[];
  /** Per-check bound for /readyz (default READINESS_TIMEOUT_MS, 2 s). */
  readonly readinessTimeoutMs?: number;
}

/**
 * Builds the HTTP application (no listen: main.ts listens, supertest drives it in tests).
 * Order matters: request id first (every response echoes it, errors included), then request
 * observation, security headers, JSON parsing, the well-formed-text check, OPTIONS, routes, the
 * 404/405 fallback, the problem handler. Routing is exact (strict-router.ts): feature routers
 * should be created with createStrictRouter so that their paths have one spelling too.
 */
export function createApp(deps: AppDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');
  // No ETags: responses carry tokens and live state; a 304 path is not worth a revalidation surface.
  app.set('etag', false);
  app.set('query parser', 'simple');
  app.set('case sensitive routing', STRICT_ROUTING.caseSensitive);
  app.set('strict routing', STRICT_ROUTING.strict);

  app.use(assignRequestId());
  app.use(observeRequests({ log: deps.log, metrics: deps.metrics }));
  app.use(securityHeaders({ hsts: deps.config.publicUrl.startsWith('https:') }));
  app.use(parseJsonBody());
  app.use(requireWellFormedInput());
  const routes = deps.routes ?? mountedRoutes(ROUTE_TABLE, { sandbox: deps.config.sandbox });
  const allowedMethods = allowedMethodsFrom(routes);
  app.use(createOptionsAnswer(allowedMethods));
  app.get('/openapi.json', createOpenApiRoute({ routes, serverUrl: deps.config.publicUrl }));

  app.use(
    createHealthRouter({
      checks: [
        { name: 'store', check: () => deps.store.ping() },
        { name: 'keys', check: () => deps.keys.ping() },
        ...(deps.readiness ?? []),
      ],
      metrics: deps.metrics,
      log: deps.log,
      ...(deps.readinessTimeoutMs === undefined ? {} : { timeoutMs: deps.readinessTimeoutMs }),
    }),
  );
  for (const router of deps.routers ?? []) app.use(router);

  app.use(createRouteFallback(allowedMethods));
  app.use(createProblemHandler({ log: deps.log }));
  return app;
}
