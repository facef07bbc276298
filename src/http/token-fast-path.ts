import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { LinkvaultError } from '../errors.js';
import type { TokenRelease } from '../links/release/token-release.js';
import type { Metrics } from '../metrics.js';
import { hasNoContent, JSON_BODY_LIMIT_BYTES } from './json-body.js';
import { observeRequest, UNMATCHED_ROUTE, type ObserveDeps } from './observe-requests.js';
import {
  logProblem,
  PROBLEM_CONTENT_TYPE,
  problemBody,
  retryAfterOf,
  toLinkvaultError,
} from './problem.js';
import { REQUEST_ID_HEADER, requestIdFrom } from './request-id.js';
import { securityHeadersFor, setHeaders, type HeaderList } from './security-headers.js';
import {
  forbidden,
  ServiceAuthRejection,
  unauthorized,
  WWW_AUTHENTICATE,
  type ServiceAuth,
} from './service-auth.js';
import { answerTokenRequest, TOKEN_ROUTE } from './token-endpoint.js';
import { refuseIllFormedBody } from './well-formed-input.js';

/**
 * POST /v1/links/:id/token without Express, for the hot path (measured: the Express stack costs
 * more than the release itself; see docs/operations.md, the benchmark). It answers exactly as the
 * Express route does — same checks in the same order (body, authentication, role, id, body
 * members, release), same headers, problem bodies, log lines and metrics — because it calls the
 * same functions: answerTokenRequest, securityHeadersFor, requestIdFrom, logProblem and
 * observeRequest. It takes only the plain case: anything unusual (another method, a path Express
 * would also match but spelled differently, percent-encoded ids, other content types or
 * encodings, chunked or oversized bodies) is left to Express, untouched, so edge cases keep one
 * behaviour.
 *
 * Use: `createServer((req, res) => { if (!fastPath(req, res)) app(req, res); })`.
 */

export interface TokenFastPathDeps {
  readonly auth: Pick<ServiceAuth, 'checkRequest'>;
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
const PROBLEM_TYPE = `${PROBLEM_CONTENT_TYPE}; charset=utf-8`;

/** Returns a request handler that answers the token route and returns true, or returns false without touching the request. */
export function createTokenFastPath(
  deps: TokenFastPathDeps,
): (req: IncomingMessage, res: ServerResponse) => boolean {
  const { auth, release, log } = deps;
  const observed: ObserveDeps = { log, metrics: deps.metrics };
  // Every path this takes is under /v1/, so the headers are the same list for each request.
  const headers: HeaderList = securityHeadersFor(TOKEN_ROUTE, deps.hsts);

  function takes(req: IncomingMessage): RegExpExecArray | null {
    if (req.method !== 'POST') return null;
    const url = req.url;
    if (url === undefined || !url.startsWith('/v1/links/')) return null;
    const match = PATH.exec(url);
    if (!match) return null;
    const h = req.headers;
    if (h['transfer-encoding'] !== undefined) return null;
    if (h['content-encoding'] !== undefined && h['content-encoding'].toLowerCase() !== 'identity')
      return null;
    const length = h['content-length'];
    if (length !== undefined && !(DECIMAL.test(length) && Number(length) <= JSON_BODY_LIMIT_BYTES))
      return null;
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

  function send(res: ServerResponse, status: number, contentType: string, body: string): void {
    res.statusCode = status;
    res.setHeader('Content-Type', contentType);
    res.setHeader('Content-Length', Buffer.byteLength(body));
    res.end(body);
  }

  /** As problem.ts's error handler: the cause goes to the log, never to the caller. */
  function sendProblem(res: ServerResponse, err: unknown, requestId: string): void {
    const problem = toLinkvaultError(err);
    logProblem(log, problem, requestId);
    const retryAfter = retryAfterOf(problem);
    if (retryAfter !== undefined) res.setHeader('Retry-After', retryAfter);
    send(res, problem.status, PROBLEM_TYPE, JSON.stringify(problemBody(problem, requestId)));
  }

  async function answer(
    req: IncomingMessage,
    res: ServerResponse,
    linkId: string,
    body: unknown,
    requestId: string,
  ): Promise<void> {
    try {
      const service = auth.checkRequest(req);
      if (service instanceof ServiceAuthRejection) {
        res.setHeader('WWW-Authenticate', WWW_AUTHENTICATE);
        throw unauthorized(service);
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
    const requestId = requestIdFrom(req.headers['x-request-id']);
    res.setHeader(REQUEST_ID_HEADER, requestId);
    setHeaders(res, headers);
    // Express parses the body before routing, so a body it refuses is counted under no route: here too.
    let route = TOKEN_ROUTE;
    res.once('close', () => observeRequest(observed, req, res, route, requestId, startedAt));
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= JSON_BODY_LIMIT_BYTES) chunks.push(chunk);
    });
    req.once('error', () => res.destroy());
    req.once('end', () => {
      let body: unknown;
      try {
        if (size > JSON_BODY_LIMIT_BYTES)
          throw new LinkvaultError('payload_too_large', {
            detail: 'The request body exceeds the size limit',
          });
        body = parseBody(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
        refuseIllFormedBody(body); // as app.ts's edge does, before routing
      } catch (err) {
        route = UNMATCHED_ROUTE;
        sendProblem(res, err, requestId);
        return;
      }
      void answer(req, res, match[1]!, body, requestId);
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
  if (typeof parsed !== 'object' || parsed === null)
    throw new LinkvaultError('invalid_request', { detail: 'The request body is not valid JSON' });
  return parsed;
}
