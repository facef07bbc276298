import type { Request } from 'express';
import { invalidRequest } from '../errors.js';
import { echoableName } from './request-shape.js';

/**
 * Strict query-string parsing for routes that take security-relevant parameters. Express's
 * parsers turn `a=1&a=2` into an array and (with qs) `a[b]=1` into an object; a parameter that
 * is sometimes a string and sometimes an array is how parameter-pollution bugs start (which `state`
 * did we check, which one did the library use?). This reads the raw query once, refuses
 * duplicates, bracket names and oversized input, and returns plain strings.
 */

export interface StrictQueryLimits {
  /** Whole raw query string (after `?`). */
  readonly maxQueryChars: number;
  readonly maxParams: number;
  /** Default per-value limit. */
  readonly maxValueChars: number;
  /** Per-parameter limits overriding maxValueChars. */
  readonly valueLimits?: Readonly<Record<string, number>>;
}

export interface StrictQuery {
  /** The raw query string as the client sent it (without `?`). */
  readonly raw: string;
  /** Decoded values by name (each name appears once). */
  readonly values: ReadonlyMap<string, string>;
}

/** The request's raw query string (from the URL as received, never re-serialised). */
export function rawQueryOf(req: Request): string {
  const url = req.originalUrl ?? req.url;
  const q = url.indexOf('?');
  return q === -1 ? '' : url.slice(q + 1);
}

/** Parses the request's query under `limits`; throws 400 invalid_request. */
export function parseStrictQuery(req: Request, limits: StrictQueryLimits): StrictQuery {
  const raw = rawQueryOf(req);
  if (raw.length > limits.maxQueryChars) throw invalidRequest(null, 'The query string is too long');
  const values = new Map<string, string>();
  if (raw === '') return { raw, values };
  const pairs = raw.split('&');
  if (pairs.length > limits.maxParams)
    throw invalidRequest(null, 'The query string has too many parameters');
  for (const pair of pairs) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    let name: string;
    let value: string;
    try {
      name = decodeURIComponent((eq === -1 ? pair : pair.slice(0, eq)).replaceAll('+', ' '));
      value = decodeURIComponent((eq === -1 ? '' : pair.slice(eq + 1)).replaceAll('+', ' '));
    } catch {
      throw invalidRequest(null, 'The query string is not valid percent-encoding');
    }
    const shown = echoableName(name);
    if (name === '' || /[[\]]/.test(name))
      throw invalidRequest(null, 'Array and object parameters are not accepted');
    if (values.has(name))
      throw invalidRequest(
        shown,
        shown
          ? `Parameter ${shown} is given more than once`
          : 'A parameter is given more than once',
      );
    const max = limits.valueLimits?.[name] ?? limits.maxValueChars;
    if (value.length > max)
      throw invalidRequest(
        shown,
        shown ? `Parameter ${shown} is too long` : 'A parameter is too long',
      );
    values.set(name, value);
  }
  return { raw, values };
}
