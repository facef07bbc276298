import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream';
import type { Logger } from 'pino';
import { LinkvaultError } from '../errors.js';
import type { Proxy } from '../links/proxy/proxy.js';
import { PROXY_METHODS } from '../links/proxy/proxy-rules.js';
import type { Metrics } from '../metrics.js';
import { hasNoContent } from './json-body.js';
import { observeRequest, type ObserveDeps } from './observe-requests.js';
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

/**
 * `GET|POST|PUT|PATCH|DELETE /v1/links/:id/proxy/*path` (role `proxy`), answered on node:http
 * before Express: the bodies stream both ways, and Express's JSON parser must never read them.
 * Authentication, role, then the domain (links/proxy/proxy.ts); linkvault's own refusals are
 * problem+json, the provider's answers come back as they are with `linkvault-proxy-request-id`.
 * Other methods and spellings are left to Express (404 / 405).
 */

export const PROXY_ROUTE = '/v1/links/:id/proxy/*path';

export interface ProxyPathDeps {
  readonly auth: Pick<ServiceAuth, 'checkRequest'>;
  readonly proxy: Proxy;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly hsts: boolean;
}

const PATH = /^\/v1\/links\/([A-Za-z0-9._~:@!$&'()*+,=-]{1,256})\/proxy(\/[^?]*)(\?.*)?$/s;
const PROBLEM_TYPE = `${PROBLEM_CONTENT_TYPE}; charset=utf-8`;
const METHODS: ReadonlySet<string> = new Set(PROXY_METHODS);

/** Returns a handler that answers the proxy route and returns true, or returns false without touching the request. */
export function createProxyPath(
  deps: ProxyPathDeps,
): (req: IncomingMessage, res: ServerResponse) => boolean {
  const { auth, proxy, log } = deps;
  const observed: ObserveDeps = { log, metrics: deps.metrics };
  const security: HeaderList = securityHeadersFor('/v1/', deps.hsts);
  // Ours win: the answer is served from linkvault's origin (no caching, no framing, no sniffing),
  // so the provider's spelling of these is not relayed.
  const ours: ReadonlySet<string> = new Set(
    [REQUEST_ID_HEADER, ...security.map(([name]) => name)].map((name) => name.toLowerCase()),
  );

  function sendProblem(
    req: IncomingMessage,
    res: ServerResponse,
    err: unknown,
    requestId: string,
  ): void {
    const problem = toLinkvaultError(err);
    logProblem(log, problem, requestId);
    if (res.headersSent) return void res.destroy();
    res.setHeader(REQUEST_ID_HEADER, requestId);
    setHeaders(res, security);
    const retryAfter = retryAfterOf(problem);
    if (retryAfter !== undefined) res.setHeader('Retry-After', retryAfter);
    const body = JSON.stringify(problemBody(problem, requestId));
    res.statusCode = problem.status;
    res.setHeader('Content-Type', PROBLEM_TYPE);
    res.setHeader('Content-Length', Buffer.byteLength(body));
    // A body nobody read must not be left on a kept-alive connection.
    if (!req.complete) res.setHeader('Connection', 'close');
    res.end(body);
    req.resume();
  }

  async function answer(
    req: IncomingMessage,
    res: ServerResponse,
    match: RegExpExecArray,
    requestId: string,
  ): Promise<void> {
    try {
      const service = auth.checkRequest(req);
      if (service instanceof ServiceAuthRejection) {
        res.setHeader('WWW-Authenticate', WWW_AUTHENTICATE);
        throw unauthorized(service);
      }
      if (!service.roles.has('proxy')) throw forbidden('proxy');
      const answer = await proxy.call({
        service,
        linkId: match[1]!,
        method: req.method!,
        path: match[2]!,
        query: match[3] ?? '',
        headers: req.headers,
        body: hasNoContent(req.headers) ? null : req,
        requestId,
      });
      // One header list, written at once (no per-header setHeader): the request id, the
      // provider's headers as relayed, then ours.
      const head: string[] = [REQUEST_ID_HEADER, requestId];
      for (const name in answer.headers) {
        const value = answer.headers[name];
        if (value === undefined || ours.has(name)) continue;
        if (Array.isArray(value)) for (const v of value) head.push(name, v);
        else head.push(name, String(value));
      }
      for (const [name, value] of security) head.push(name, value);
      res.writeHead(answer.status, head);
      // A small answer goes out with its head in one write; a large one streams.
      if (Buffer.isBuffer(answer.body)) return void res.end(answer.body);
      pipeline(answer.body, res, (err) => {
        if (err) log.debug({ err, request_id: requestId }, 'proxied answer cut');
      });
    } catch (err) {
      sendProblem(req, res, err, requestId);
    }
  }

  return (req, res) => {
    const url = req.url;
    if (url === undefined || !url.startsWith('/v1/links/')) return false;
    if (req.method === undefined || !METHODS.has(req.method)) return false;
    const match = PATH.exec(url);
    if (!match) return false;
    const startedAt = process.hrtime.bigint();
    const requestId = requestIdFrom(req.headers['x-request-id']);
    res.once('close', () => observeRequest(observed, req, res, PROXY_ROUTE, requestId, startedAt));
    req.once('error', () => res.destroy());
    void answer(req, res, match, requestId).catch((err: unknown) =>
      sendProblem(req, res, new LinkvaultError('internal_error', { cause: err }), requestId),
    );
    return true;
  };
}
