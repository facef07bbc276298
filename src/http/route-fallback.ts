import type { RequestHandler } from 'express';
import { LinkvaultError } from '../errors.js';
import type { HttpMethod } from './route-table.js';

/**
 * The methods each path supports, computed from the declared route table (route-table.ts) rather
 * than read out of the router's internals: `Allow` says what the table says, and a test keeps the
 * table and the mounted routers equal (test/http/openapi-routes.test.ts).
 */
export type AllowedMethods = (path: string) => ReadonlySet<string>;

interface DeclaredRoute {
  readonly method: HttpMethod;
  /** Path template, `{name}` for one segment. */
  readonly path: string;
  /** `node-http` (the proxy): the last `{name}` takes the rest of the path, and GET implies no HEAD. */
  readonly servedBy?: 'node-http';
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** A template as an exact, case-sensitive matcher (routing is strict: strict-router.ts). */
function templateMatcher(template: string, restOfPath: boolean): RegExp {
  const parts = template.split(/(\{[A-Za-z_][A-Za-z0-9_]*\})/);
  const last = parts.findLastIndex((part) => /^\{.*\}$/.test(part));
  const source = parts
    .map((part, i) =>
      /^\{.*\}$/.test(part) ? (restOfPath && i === last ? '.+' : '[^/]+') : escapeRegExp(part),
    )
    .join('');
  return new RegExp(`^${source}$`);
}

/** Builds the path → methods lookup for `routes`; GET implies HEAD (RFC 9110 §9.3.2). */
export function allowedMethodsFrom(routes: readonly DeclaredRoute[]): AllowedMethods {
  const byTemplate = new Map<string, { matcher: RegExp; methods: Set<string> }>();
  for (const route of routes) {
    let entry = byTemplate.get(route.path);
    if (!entry) {
      entry = {
        matcher: templateMatcher(route.path, route.servedBy === 'node-http'),
        methods: new Set(),
      };
      byTemplate.set(route.path, entry);
    }
    entry.methods.add(route.method);
    if (route.method === 'GET' && route.servedBy !== 'node-http') entry.methods.add('HEAD');
  }
  const entries = [...byTemplate.values()];
  return (path) => {
    const allowed = new Set<string>();
    for (const { matcher, methods } of entries)
      if (matcher.test(path)) for (const m of methods) allowed.add(m);
    return allowed;
  };
}

function allowHeader(allowed: ReadonlySet<string>): string {
  return [...allowed].sort().join(', ');
}

/**
 * Mounted before the routes: answers OPTIONS on purpose instead of leaving it to the router's
 * default (a text/plain 200 listing methods). linkvault offers no CORS (the pages and the SDK are
 * same-origin or use the host page's own fetch), so OPTIONS only says what a path supports
 * (RFC 9110 §9.3.7): 204 with Allow for a path we serve; otherwise the fallback's 404 not_found. A CORS
 * preflight therefore fails closed: the answer has no Access-Control-Allow-Origin.
 */
export function createOptionsAnswer(allowedMethods: AllowedMethods): RequestHandler {
  return (req, res, next) => {
    if (req.method !== 'OPTIONS') return next();
    const allowed = allowedMethods(req.path);
    // Nothing of ours: the 404 fallback answers, unless a mounted middleware (the sandbox's OAuth
    // server) handles OPTIONS itself.
    if (allowed.size === 0) return next();
    res.setHeader('Allow', allowHeader(allowed));
    res.status(204).end();
  };
}

/**
 * Mounted after every route: answers 405 method_not_allowed (with Allow, RFC 9110 §15.5.6) when
 * the path exists under another method, else 404 not_found. Both go through the problem handler.
 */
export function createRouteFallback(allowedMethods: AllowedMethods): RequestHandler {
  return (req, res, next) => {
    const allowed = allowedMethods(req.path);
    if (allowed.size > 0) {
      res.setHeader('Allow', allowHeader(allowed));
      next(new LinkvaultError('method_not_allowed'));
      return;
    }
    next(new LinkvaultError('not_found'));
  };
}
