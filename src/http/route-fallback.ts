import type { RequestHandler } from 'express';
import { LinkvaultError } from '../errors.js';

/**
 * The shape of Express 5's router (router@2) layers, read structurally: a layer either holds a
 * route (with the methods it handles) or a mounted router/middleware (whose `handle.stack` we
 * descend into). Anything that does not look like this is skipped, so a future router change
 * degrades 405 into 404 rather than breaking requests.
 */
interface RouterLayer {
  match?: (path: string) => false | { path: string };
  route?: { methods?: Readonly<Record<string, boolean>> };
  handle?: { stack?: unknown };
}

function layersOf(stack: unknown): RouterLayer[] {
  return Array.isArray(stack) ? (stack as RouterLayer[]) : [];
}

/** Methods the routes in `stack` answer for `path` (including nested routers). */
function allowedMethods(stack: unknown, path: string, into: Set<string> = new Set()): Set<string> {
  for (const layer of layersOf(stack)) {
    if (typeof layer.match !== 'function') continue;
    let matched: false | { path: string };
    try {
      matched = layer.match(path);
    } catch {
      continue; // undecodable path: not a route of ours
    }
    if (!matched) continue;
    if (layer.route?.methods) {
      for (const [method, on] of Object.entries(layer.route.methods)) {
        if (!on || method === '_all') continue;
        into.add(method.toUpperCase());
        if (method === 'get') into.add('HEAD');
      }
    } else if (layer.handle && Array.isArray(layer.handle.stack)) {
      allowedMethods(layer.handle.stack, path.slice(matched.path.length) || '/', into);
    }
  }
  return into;
}

/**
 * Mounted before the routes: answers OPTIONS on purpose instead of leaving it to the router's
 * default (a text/plain 200 listing methods). linkvault offers no CORS (the pages and the SDK are
 * same-origin or use the host page's own fetch), so OPTIONS only says what a path supports
 * (RFC 9110 §9.3.7): 204 with Allow for a path we serve; otherwise the fallback's 404 not_found. A CORS
 * preflight therefore fails closed: the answer has no Access-Control-Allow-Origin.
 */
export function createOptionsAnswer(routerStack: () => unknown): RequestHandler {
  return (req, res, next) => {
    if (req.method !== 'OPTIONS') return next();
    const allowed = allowedMethods(routerStack(), req.path);
    // Nothing of ours: the 404 fallback answers, unless a mounted middleware (the sandbox's OAuth
    // server) handles OPTIONS itself.
    if (allowed.size === 0) return next();
    res.setHeader('Allow', [...allowed].sort().join(', '));
    res.status(204).end();
  };
}

/**
 * Mounted after every route: answers 405 method_not_allowed (with Allow, RFC 9110 §15.5.6) when
 * the path exists under another method, else 404 not_found. Both go through the problem handler.
 */
export function createRouteFallback(routerStack: () => unknown): RequestHandler {
  return (req, res, next) => {
    const allowed = allowedMethods(routerStack(), req.path);
    if (allowed.size > 0) {
      res.setHeader('Allow', [...allowed].sort().join(', '));
      next(new LinkvaultError('method_not_allowed'));
      return;
    }
    next(new LinkvaultError('not_found'));
  };
}
