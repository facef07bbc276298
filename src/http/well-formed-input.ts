import type { RequestHandler } from 'express';
import { invalidRequest } from '../errors.js';
import { echoableName } from './request-shape.js';

/**
 * Every value a caller sends is Unicode text before it is anything else. A JSON string may carry
 * a lone UTF-16 surrogate (`"\ud800"`, RFC 8259 §8.2: such strings are not interoperable): it
 * cannot be written as UTF-8, so Redis keys and SQLite text built from it break far from the
 * request (a 500 on a later read, or bytes that are not UTF-8 in the database). Refused here, at
 * the edge, once for every route: 400 invalid_request naming the top-level member or query
 * parameter. Path parameters cannot carry one: the router decodes them with decodeURIComponent,
 * which refuses an encoded surrogate (400 through problem.ts).
 */

/** With the `u` flag a surrogate pair is one code point; only a lone surrogate is category Cs. */
const LONE_SURROGATE = /\p{Cs}/u;

/** True when `text` has no lone surrogate (String.prototype.isWellFormed, ES2024). */
function isWellFormed(text: string): boolean {
  return !LONE_SURROGATE.test(text);
}

/** Bounds the walk; a 16 KiB body (json-body.ts) cannot nest deeper than this usefully. */
const MAX_DEPTH = 32;

/** True when `value` and everything inside it (member names included) is well-formed text. */
export function isWellFormedDeep(value: unknown, depth = 0): boolean {
  if (typeof value === 'string') return isWellFormed(value);
  if (typeof value !== 'object' || value === null) return true;
  if (depth >= MAX_DEPTH) return false;
  if (Array.isArray(value)) return value.every((item) => isWellFormedDeep(item, depth + 1));
  for (const [name, item] of Object.entries(value))
    if (!isWellFormed(name) || !isWellFormedDeep(item, depth + 1)) return false;
  return true;
}

/** Refuses the first member of `fields` that is not well-formed text, naming it when it is safe to echo. */
function refuseIllFormed(fields: unknown, where: 'body' | 'query'): void {
  if (typeof fields !== 'object' || fields === null) {
    if (!isWellFormedDeep(fields)) throw illFormed(null, where);
    return;
  }
  for (const [name, value] of Object.entries(fields))
    if (!isWellFormed(name) || !isWellFormedDeep(value)) throw illFormed(name, where);
}

function illFormed(name: string | null, where: 'body' | 'query') {
  const shown = name === null ? null : echoableName(name);
  return invalidRequest(
    shown,
    shown
      ? `${shown} must be well-formed Unicode text (no lone surrogates)`
      : `The ${where === 'body' ? 'request body' : 'query string'} must be well-formed Unicode text (no lone surrogates)`,
  );
}

/**
 * The body half of the middleware below, for a route served without Express (the token fast
 * path, through token-endpoint.ts): the same 400 for the same body.
 */
export function refuseIllFormedBody(body: unknown): void {
  if (body !== undefined) refuseIllFormed(body, 'body');
}

/** Middleware, after the JSON body parser: 400 invalid_request for ill-formed text in the body or query. */
export function requireWellFormedInput(): RequestHandler {
  return (req, _res, next) => {
    try {
      refuseIllFormed(req.query, 'query');
      if (req.body !== undefined) refuseIllFormed(req.body, 'body');
      next();
    } catch (err) {
      next(err);
    }
  };
}
