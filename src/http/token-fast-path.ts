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
import { securityHeadersFor } from './security-headers.js';
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
  // Every path this takes is under /v1/, so the headers are the same list for each request: set
  // in one writeHead with the request id, type and length (flat name/value list: measured cheaper
  // than a setHeader each, which validates, lower-cases and stores every name per response).
  const fixedHeaders: string[] = securityHeadersFor(TOKEN_ROUTE, deps.hsts).flatMap(
    ([name, value]) => [name, value],
  );

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

  /**
   * One request's state. The request line is written when the answer is handed to the socket (or
   * the request fails), not on the response's 'close' event: a listener per response is a cost on
   * every request of the hot path. A client gone before the answer is written is logged aborted.
   */
  class Exchange {
    route = TOKEN_ROUTE;
    observedYet = false;
    readonly chunks: Buffer[] = [];
    size = 0;
    readonly startedAt = process.hrtime.bigint();
    readonly requestId: string;

    constructor(
      readonly req: IncomingMessage,
      readonly res: ServerResponse,
      readonly linkId: string,
    ) {
      this.requestId = requestIdFrom(req.headers['x-request-id']);
    }

    send(status: number, contentType: string, body: string): void {
      const { req, res } = this;
      const aborted = res.destroyed || req.socket.destroyed;
      res.writeHead(status, [
        REQUEST_ID_HEADER,
        this.requestId,
        ...fixedHeaders,
        'Content-Type',
        contentType,
        'Content-Length',
        String(Buffer.byteLength(body)),
      ]);
      res.end(body);
      this.observe(aborted);
    }

    /** As problem.ts's error handler: the cause goes to the log, never to the caller. */
    sendProblem(err: unknown): void {
      const problem = toLinkvaultError(err);
      logProblem(log, problem, this.requestId);
      const retryAfter = retryAfterOf(problem);
      if (retryAfter !== undefined) this.res.setHeader('Retry-After', retryAfter);
      this.send(problem.status, PROBLEM_TYPE, JSON.stringify(problemBody(problem, this.requestId)));
    }

    observe(aborted: boolean): void {
      if (this.observedYet) return;
      this.observedYet = true;
      observeRequest(
        observed,
        this.req,
        this.res,
        this.route,
        this.requestId,
        this.startedAt,
        aborted,
      );
    }

    onData(chunk: Buffer): void {
      this.size += chunk.length;
      if (this.size <= JSON_BODY_LIMIT_BYTES) this.chunks.push(chunk);
    }

    onError(): void {
      this.res.destroy();
      this.observe(true);
    }

    onEnd(): void {
      let body: unknown;
      try {
        if (this.size > JSON_BODY_LIMIT_BYTES)
          throw new LinkvaultError('payload_too_large', {
            detail: 'The request body exceeds the size limit',
          });
        const chunks = this.chunks;
        body = parseBody(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
        refuseIllFormedBody(body); // as app.ts's edge does, before routing
      } catch (err) {
        // Express parses the body before routing, so a body it refuses is counted under no route: here too.
        this.route = UNMATCHED_ROUTE;
        this.sendProblem(err);
        return;
      }
      void this.answer(body);
    }

    async answer(body: unknown): Promise<void> {
      try {
        const service = auth.checkRequest(this.req);
        if (service instanceof ServiceAuthRejection) {
          this.res.setHeader('WWW-Authenticate', WWW_AUTHENTICATE);
          throw unauthorized(service);
        }
        if (!service.roles.has('tokens')) throw forbidden('tokens');
        const json = await answerTokenRequest(release, service, this.linkId, body, this.requestId);
        this.send(200, 'application/json; charset=utf-8', json);
      } catch (err) {
        this.sendProblem(err);
      }
    }
  }

  return (req, res) => {
    const match = takes(req);
    if (!match) return false;
    (req as ExchangeRequest)[EXCHANGE] = new Exchange(req, res, match[1]!);
    // Shared listeners that find their exchange on the request: no closures per request. 'end'
    // and 'error' are each emitted once at most, so `on` (no once-wrapper) is enough.
    req.on('data', onData);
    req.on('error', onError);
    req.on('end', onEnd);
    return true;
  };
}

const EXCHANGE = Symbol('linkvault.tokenFastPath');
interface ExchangeLike {
  onData(chunk: Buffer): void;
  onError(): void;
  onEnd(): void;
}
type ExchangeRequest = IncomingMessage & { [EXCHANGE]?: ExchangeLike };

function onData(this: ExchangeRequest, chunk: Buffer): void {
  this[EXCHANGE]!.onData(chunk);
}
function onError(this: ExchangeRequest): void {
  this[EXCHANGE]!.onError();
}
function onEnd(this: ExchangeRequest): void {
  this[EXCHANGE]!.onEnd();
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
