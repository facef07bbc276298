import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { LinkvaultError } from '../errors.js';
import type { TokenRelease } from '../links/release/token-release.js';
import type { Metrics } from '../metrics.js';
import { hasNoContent, JSON_BODY_LIMIT_BYTES } from './json-body.js';
import { PROBLEM_CONTENT_TYPE, problemBody, toLinkvaultError } from './problem.js';
import { isSafeRequestId, REQUEST_ID_HEADER } from './request-id.js';
import { forbidden, UNAUTHORIZED_DETAIL, WWW_AUTHENTICATE, type ServiceAuth } from './service-auth.js';
import { answerTokenRequest, TOKEN_ROUTE } from './token-routes.js';

/**
 * POST /v1/links/:id/token without Express, for the hot path (measured: the Express stack costs
 * more than the release itself; see the README's benchmark section). It answers exactly as the
 * Express route does — same checks in the same order (body, authentication, role, id, body
 * members, release), same headers (request id, security headers, no-store), same problem+json
 * bodies, same request log line and metrics — by sharing answerTokenRequest and H3's problem
 * helpers. It takes only the plain case: anything unusual (another method, a path Express would
 * also match but spelled differently, percent-encoded ids, other content types or encodings,
 * chunked or oversized bodies) is left to Express, untouched, so edge cases keep one behaviour.
 *
 * Use: `createServer((req, res) => { if (!fastPath(req, res)) app(req, res); })`.
 */

export interface TokenFastPathDeps {
  readonly auth: Pick<ServiceAuth, 'verify'>;
  readonly release: TokenRelease;
  readonly metrics: Metrics;
  readonly log: Logger;
  /** Whether responses carry HSTS (the public URL is https), as securityHeaders does. */
  readonly hsts: boolean;
}

const PATH = /^\/v1\/links\/([A-Za-z0-9._~:@!$&'()*+,;=-]+)\/token(?:\?[^#]*)?$/;
/** body-parser's JSON types (json-body.ts), UTF-8 only (other charsets go to Express, which refuses them). */
const JSON_CONTENT_TYPE = /^application\/json\s*(?:;\s*charset=(?:"utf-8"|utf-8)\s*)?$/i;
const DECIMAL = /^\d{1,6}$/;

/** Returns a request handler that answers the token route and returns true, or returns false without touching the request. */
export function createTokenFastPath(deps: TokenFastPathDeps): (req: IncomingMessage, res: ServerResponse) => boolean {
  const { auth, release, metrics, log } = deps;

  function takes(req: IncomingMessage): RegExpExecArray | null {
    if (req.method !== 'POST') return null;
    const url = req.url;
    if (url === undefined || !url.startsWith('/v1/links/')) return null;
    const match = PATH.exec(url);
    if (!match) return null;
    const h = req.headers;
    if (h['transfer-encoding'] !== undefined) return null;
    if (h['content-encoding'] !== undefined && h['content-encoding'].toLowerCase() !== 'identity') return null;
    const length = h['content-length'];
    if (length !== undefined && !(DECIMAL.test(length) && Number(length) <= JSON_BODY_LIMIT_BYTES)) return null;
    const type = h['content-type'];
    if (type === undefined || !JSON_CONTENT_TYPE.test(type)) {
      // No content is no body, whatever the type says (json-body.ts). A body without a JSON type is
      // json-body.ts's 415, and a JSON type this path does not parse (another charset, +json) is
      // body-parser's: Express answers those.
      if (!hasNoContent(h)) return null;
      if (type !== undefined && /json/i.test(type)) return null;
    }
    return match;
  }

  function setCommonHeaders(res: ServerResponse, requestId: string): void {
    res.setHeader(REQUEST_ID_HEADER, requestId);
    // security-headers.ts, for a /v1 path.
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('Referrer-Policy', 'no-referrer');
    res.setHeader('X-Frame-Options', 'DENY');
    res.setHeader('Content-Security-Policy', "default-src 'none'; frame-ancestors 'none'");
    if (deps.hsts) res.setHeader('Strict-Transport-Security', 'max-age=31536000');
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('Pragma', 'no-cache');
  }

  function send(res: ServerResponse, status: number, contentType: string, body: string): void {
    res.statusCode = status;
    res.setHeader('Content-Type', contentType);
    res.setHeader('Content-Length', Buffer.byteLength(body));
    res.end(body);
  }

  function sendProblem(res: ServerResponse, err: unknown, requestId: string): void {
    const problem = toLinkvaultError(err);
    const fields = { request_id: requestId, error_code: problem.code, status: problem.status };
    // As problem.ts: the cause goes to the log, never to the caller.
    if (problem.status >= 500) log.error({ ...fields, err: problem.cause ?? problem }, 'request failed');
    else log.debug({ ...fields, err: problem.cause ?? problem }, 'request rejected');
    if (problem.retryAfterSeconds !== undefined) res.setHeader('Retry-After', String(Math.max(0, Math.ceil(problem.retryAfterSeconds))));
    send(res, problem.status, `${PROBLEM_CONTENT_TYPE}; charset=utf-8`, JSON.stringify(problemBody(problem, requestId)));
  }

  /** observe-requests.ts, for this route. */
  function observe(req: IncomingMessage, res: ServerResponse, requestId: string, startedAt: bigint): void {
    res.once('close', () => {
      const seconds = Number(process.hrtime.bigint() - startedAt) / 1e9;
      const status = res.writableFinished ? String(res.statusCode) : 'aborted';
      metrics.httpRequests.inc({ route: TOKEN_ROUTE, method: 'POST', status });
      metrics.httpDuration.observe(seconds, { route: TOKEN_ROUTE, method: 'POST' });
      if (!log.isLevelEnabled('info')) return;
      log.info(
        {
          request_id: requestId,
          method: 'POST',
          route: TOKEN_ROUTE,
          status,
          duration_ms: Math.round(seconds * 1e6) / 1e3,
          user_agent: (req.headers['user-agent'] ?? '').slice(0, 256),
          request_bytes: Number(req.headers['content-length'] ?? 0) || 0,
        },
        'request',
      );
    });
  }

  async function answer(req: IncomingMessage, res: ServerResponse, linkId: string, raw: Buffer, requestId: string): Promise<void> {
    try {
      const body = parseBody(raw);
      const service = auth.verify(req.headers.authorization);
      if (!service) {
        res.setHeader('WWW-Authenticate', WWW_AUTHENTICATE);
        throw new LinkvaultError('unauthorized', { detail: UNAUTHORIZED_DETAIL });
      }
      if (!service.roles.has('tokens')) throw forbidden('tokens');
      const json = await answerTokenRequest(release, service, linkId, body, requestId);
      send(res, 200, 'application/json; charset=utf-8', json);
    } catch (err) {
      sendProblem(res, err, requestId);
    }
  }

  return (req, res) => {
    const match = takes(req);
    if (!match) return false;
    const startedAt = process.hrtime.bigint();
    const inbound = req.headers['x-request-id'];
    const requestId = typeof inbound === 'string' && isSafeRequestId(inbound) ? inbound : randomUUID();
    setCommonHeaders(res, requestId);
    observe(req, res, requestId, startedAt);
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= JSON_BODY_LIMIT_BYTES) chunks.push(chunk);
    });
    req.once('error', () => res.destroy());
    req.once('end', () => {
      if (size > JSON_BODY_LIMIT_BYTES) {
        sendProblem(res, new LinkvaultError('payload_too_large', { detail: 'The request body exceeds the size limit' }), requestId);
        return;
      }
      void answer(req, res, match[1]!, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks), requestId);
    });
    return true;
  };
}

/** As express.json({strict: true}) behind json-body.ts: no body → undefined; top level must be an object or array. */
function parseBody(raw: Buffer): unknown {
  if (raw.length === 0) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw.toString('utf8'));
  } catch {
    throw new LinkvaultError('invalid_request', { detail: 'The request body is not valid JSON' });
  }
  if (typeof parsed !== 'object' || parsed === null) throw new LinkvaultError('invalid_request', { detail: 'The request body is not valid JSON' });
  return parsed;
}
