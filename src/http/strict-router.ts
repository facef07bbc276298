import { Router } from 'express';

/**
 * Router options for every route linkvault declares: `/V1/links` and `/v1/links/` are not
 * `/v1/links`. A path has one spelling, so a cache, a proxy rule or a security header keyed on
 * the path (security-headers.ts: Cache-Control: no-store under /v1/) cannot be sidestepped by
 * another case or a trailing slash; any other spelling is 404 not_found.
 */
export const STRICT_ROUTING = { caseSensitive: true, strict: true } as const;

/** A Router that matches paths exactly: case-sensitive, trailing slash significant. */
export function createStrictRouter(): Router {
  return Router(STRICT_ROUTING);
}
