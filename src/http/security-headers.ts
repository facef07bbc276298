import type { RequestHandler } from 'express';

/** Header name and value pairs, set in order. */
export type HeaderList = readonly (readonly [name: string, value: string])[];

const BASE: HeaderList = [
  ['X-Content-Type-Options', 'nosniff'],
  ['Referrer-Policy', 'no-referrer'],
  ['X-Frame-Options', 'DENY'],
  ['Content-Security-Policy', "default-src 'none'; frame-ancestors 'none'"],
];
// HSTS only when we are served over https (RFC 6797 §7.2: ignored over http anyway, and wrong
// for a plain-http development setup). No includeSubDomains: sibling hosts are not ours.
const HSTS: HeaderList = [['Strict-Transport-Security', 'max-age=31536000']];
const NO_STORE: HeaderList = [
  ['Cache-Control', 'no-store'],
  ['Pragma', 'no-cache'],
];

// Built once: the token fast path asks for these on every request and must not allocate.
const BY_CASE: readonly HeaderList[] = [
  BASE,
  [...BASE, ...HSTS],
  [...BASE, ...NO_STORE],
  [...BASE, ...HSTS, ...NO_STORE],
];

/**
 * Headers every response carries, for a request path (no query). The API answers JSON only, so the
 * default CSP forbids everything and framing; a route that renders a page (web/) replaces it with
 * its own, no wider than the page needs. Cache-Control: no-store on /v1/* because token, session
 * and link responses must never sit in a shared or browser cache (RFC 6749 §5.1, RFC 9111 §5.2.2.5).
 */
export function securityHeadersFor(path: string, hsts: boolean): HeaderList {
  // Case-insensitive on purpose: routing is exact, but no spelling of /v1 may ever be cached.
  const api = /^\/v1(?:\/|$)/i.test(path);
  return BY_CASE[(hsts ? 1 : 0) + (api ? 2 : 0)]!;
}

/** Sets `headers` on a response (Express's or node:http's). */
export function setHeaders(
  res: { setHeader(name: string, value: string): unknown },
  headers: HeaderList,
): void {
  for (let i = 0; i < headers.length; i++) res.setHeader(headers[i]![0], headers[i]![1]);
}

/** Middleware: the headers of securityHeadersFor on every response. */
export function securityHeaders(options: { hsts: boolean }): RequestHandler {
  return (req, res, next) => {
    setHeaders(res, securityHeadersFor(req.path, options.hsts));
    next();
  };
}
