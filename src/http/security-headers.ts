import type { RequestHandler } from 'express';

/**
 * Headers every response carries. The API answers JSON only, so the default CSP forbids
 * everything and framing; a route that renders a page (web/) replaces it with its own, no wider
 * than the page needs. Cache-Control: no-store on /v1/* because token, session and link
 * responses must never sit in a shared or browser cache (RFC 6749 §5.1, RFC 9111 §5.2.2.5).
 */
export function securityHeaders(options: { hsts: boolean }): RequestHandler {
  return (req, res, next) => {
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('Referrer-Policy', 'no-referrer');
    res.setHeader('X-Frame-Options', 'DENY');
    res.setHeader('Content-Security-Policy', "default-src 'none'; frame-ancestors 'none'");
    // HSTS only when we are served over https (RFC 6797 §7.2: ignored over http anyway, and
    // wrong for a plain-http development setup). No includeSubDomains: sibling hosts are not ours.
    if (options.hsts) res.setHeader('Strict-Transport-Security', 'max-age=31536000');
    if (req.path === '/v1' || req.path.startsWith('/v1/')) {
      res.setHeader('Cache-Control', 'no-store');
      res.setHeader('Pragma', 'no-cache');
    }
    next();
  };
}
