import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { PassThrough, Transform, type Readable, type TransformCallback } from 'node:stream';
import type { Logger } from 'pino';
import { isLinkvaultError, LinkvaultError } from '../../errors.js';
import type { Metrics } from '../../metrics.js';
import type { Catalogue } from '../../providers/catalogue.js';
import type { Audit } from '../audit/audit.js';
import type { LinkRecord } from '../link.js';
import type { GrantRecord } from '../release/grants.js';
import type {
  ReleasedToken,
  ReleaseRequest,
  TokenRelease,
  TokenUse,
} from '../release/token-release.js';
import {
  checkRequestPath,
  matchProxyRule,
  type CheckedPath,
  type ProxyRule,
} from './proxy-rules.js';
import { resolveProxyTarget } from './proxy-target.js';

/**
 * The least-privilege proxy: a service calls the provider's API through linkvault and never holds
 * the token. Reads top to bottom: checkRequestPath → release (the token route's own machinery:
 * grant lookup filtered by the grants' proxy rules, link status, refresh when due through the
 * single-flight coordinator, the `proxy.requested` audit record stored first — no record, no call —
 * and the re-read that refuses a link revoked meanwhile) → resolveProxyTarget (catalogue hosts
 * only) → send (streamed, no redirect followed) → on a 401, one forced refresh and one retry →
 * relay (streamed, counted, time-limited) → the `proxy.completed` record and the metric.
 */

export interface ProxyCall {
  /** The caller; a tenant-scoped one sees a link outside its tenants as missing (link_not_found). */
  readonly service: ReleaseRequest['service'];
  readonly linkId: string;
  readonly method: string;
  /** The path after `/proxy`, raw (percent-encoding as sent), starting with `/`. */
  readonly path: string;
  /** The raw query with its `?`, or ''. */
  readonly query: string;
  readonly headers: IncomingHttpHeaders;
  /** The request body, or null when the request has no content. */
  readonly body: Readable | null;
  readonly requestId: string;
}

export interface ProxyAnswer {
  readonly status: number;
  readonly headers: OutgoingHttpHeaders;
  /** The provider's body, streamed; errors when cut (time or size limit, provider gone). */
  readonly body: Readable;
}

export interface ProxyLimits {
  /** The whole exchange: from sending the request to the answer's last byte. */
  readonly timeoutMs: number;
  readonly maxRequestBytes: number;
  readonly maxResponseBytes: number;
}

export interface ProxyDeps {
  readonly release: TokenRelease;
  readonly catalogue: Pick<Catalogue, 'get'>;
  readonly audit: Pick<Audit, 'record'>;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly limits: ProxyLimits;
}

export interface Proxy {
  /** Makes the call; rejects LinkvaultError (proxy_not_allowed, proxy_target_refused, proxy_timeout, ...) when nothing is relayed. */
  call(call: ProxyCall): Promise<ProxyAnswer>;
  /** Closes idle connections to providers. */
  close(): void;
}

/** Bodies up to this size are read before the call, so that a 401 can be retried with them. */
export const REPLAYABLE_BODY_BYTES = 64 * 1024;

/** RFC 9110 §7.6.1 hop-by-hop fields, and what the caller must not choose (credentials, routing). */
const REQUEST_DROP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'host',
  'content-length',
  'expect',
  'authorization',
  'cookie',
  'forwarded',
  'x-request-id',
  'x-real-ip',
  'via',
]);
/** Hop-by-hop fields, and what would act on linkvault's own origin (cookies, HSTS, Alt-Svc). */
const RESPONSE_DROP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'set-cookie',
  'set-cookie2',
  'strict-transport-security',
  'alt-svc',
  'x-request-id',
]);
const OWN_HEADER = /^(x-)?linkvault-|^x-forwarded-/;

/** The header of every answer that is the provider's (linkvault's own refusals do not carry it). */
export const PROXY_REQUEST_ID_HEADER = 'linkvault-proxy-request-id';

function connectionNamed(headers: IncomingHttpHeaders): Set<string> {
  const value = headers.connection;
  const names = new Set<string>();
  for (const part of (Array.isArray(value) ? value.join(',') : (value ?? '')).split(','))
    if (part.trim()) names.add(part.trim().toLowerCase());
  return names;
}

/** The caller's headers minus hop-by-hop, credentials and linkvault's own. */
export function forwardedRequestHeaders(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const named = connectionNamed(headers);
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || REQUEST_DROP.has(name) || named.has(name) || OWN_HEADER.test(name))
      continue;
    out[name] = value;
  }
  return out;
}

/** The provider's headers minus hop-by-hop and what would act on linkvault's origin; rate-limit headers pass. */
export function relayedResponseHeaders(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const named = connectionNamed(headers);
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || RESPONSE_DROP.has(name) || named.has(name) || OWN_HEADER.test(name))
      continue;
    out[name] = value;
  }
  return out;
}

/** Counts bytes through and fails once more than `max` have passed. */
class ByteLimit extends Transform {
  bytes = 0;
  constructor(
    readonly max: number,
    readonly onExceed: () => Error,
  ) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.max) return done(this.onExceed());
    done(null, chunk);
  }
}

function statusClass(status: number): string {
  return `${Math.floor(status / 100)}xx`;
}

function contentLengthOf(headers: IncomingHttpHeaders): number | null {
  const value = headers['content-length'];
  return value !== undefined && /^\d{1,15}$/.test(value) ? Number(value) : null;
}

/** Reads a body of known small size whole (bounded by `max`). */
async function readSmallBody(body: Readable, max: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max)
      throw new LinkvaultError('payload_too_large', {
        detail: 'The request body exceeds its declared length',
      });
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

export function createProxy(deps: ProxyDeps): Proxy {
  const { release, catalogue, audit, metrics, log, limits } = deps;
  const httpAgent = new HttpAgent({ keepAlive: true });
  const httpsAgent = new HttpsAgent({ keepAlive: true });

  async function call(c: ProxyCall): Promise<ProxyAnswer> {
    const chosen: { link?: LinkRecord; grant?: GrantRecord; rule?: ProxyRule } = {};
    try {
      const path = checkRequestPath(c.path);
      const declared = contentLengthOf(c.headers);
      if (declared !== null && declared > limits.maxRequestBytes)
        throw new LinkvaultError('payload_too_large', {
          detail: 'The request body exceeds LINKVAULT_PROXY_MAX_REQUEST_BYTES',
        });
      const use = proxyUse(c, path, chosen);
      const token = await releaseFor(c, use, false);
      const link = chosen.link!;
      const base = targetFor(link.providerId, token.metadata);
      const replay =
        c.body !== null && declared !== null && declared <= REPLAYABLE_BODY_BYTES
          ? await readSmallBody(c.body, declared)
          : null;
      const body = replay ?? c.body;
      const exchange = startExchange();
      let answer = await send(base, c, token, body, exchange);
      let retried = false;
      if (answer.statusCode === 401 && (body === null || replay !== null)) {
        // One forced refresh through the coordinator (single-flight), then one retry.
        let fresh: ReleasedToken | null = null;
        try {
          fresh = await releaseFor(c, use, true);
        } catch (err) {
          if (!(isLinkvaultError(err) && err.code === 'refresh_not_possible')) {
            answer.destroy();
            exchange.done();
            throw err;
          }
        }
        // The coordinator serves a token refreshed moments ago instead of refreshing it again:
        // retrying with the token the API just refused would only repeat its answer.
        if (fresh && fresh.accessToken.reveal() !== token.accessToken.reveal()) {
          answer.destroy();
          retried = true;
          answer = await send(targetFor(link.providerId, fresh.metadata), c, fresh, body, exchange);
        }
      }
      return relay(answer, exchange, {
        call: c,
        link,
        grant: chosen.grant!,
        rule: chosen.rule!,
        retried,
        requestBytes: () => exchange.requestBytes,
      });
    } catch (caught) {
      // No grant of the service whose rules allow the call (or no grant at all: the caller learns
      // nothing more about the link).
      const err =
        isLinkvaultError(caught) && caught.code === 'no_grant'
          ? new LinkvaultError('proxy_not_allowed', {
              detail: 'No grant of this service allows this method and path for this link',
            })
          : caught;
      metrics.proxyRequests.inc({
        provider: chosen.link?.providerId ?? 'unknown',
        status_class: isLinkvaultError(err) ? err.code : 'internal_error',
      });
      throw err;
    }
  }

  /** How the proxy uses the token: grants whose rules allow the call; the rule and link kept for the records. */
  function proxyUse(
    c: ProxyCall,
    path: CheckedPath,
    chosen: { link?: LinkRecord; grant?: GrantRecord; rule?: ProxyRule },
  ): TokenUse {
    return {
      allows: (grant) => matchProxyRule(grant.proxy, c.method, path) !== null,
      check: (link, grant) => {
        chosen.link = link;
        chosen.grant = grant;
        chosen.rule = matchProxyRule(grant.proxy, c.method, path)!;
        // Before the audit record and any refresh: a link whose target is refused costs nothing.
        targetFor(link.providerId, link.metadata);
      },
      auditType: 'proxy.requested',
      auditFields: (grant) => ({
        purpose: grant.purpose,
        method: c.method,
        path_template: matchProxyRule(grant.proxy, c.method, path)?.path ?? null,
      }),
    };
  }

  function releaseFor(c: ProxyCall, use: TokenUse, forceRefresh: boolean): Promise<ReleasedToken> {
    return release.release({
      service: c.service,
      linkId: c.linkId,
      forceRefresh,
      requestId: c.requestId,
      use,
    });
  }

  function targetFor(providerId: string, metadata: Readonly<Record<string, string>>): URL {
    const entry = catalogue.get(providerId);
    if (!entry)
      throw new LinkvaultError('proxy_target_refused', {
        detail: 'The link’s provider is no longer in the catalogue',
      });
    return resolveProxyTarget(entry, metadata);
  }

  interface Exchange {
    readonly signal: AbortSignal;
    requestBytes: number;
    /** Stops the clock (the answer was relayed whole, or the call failed). */
    done(): void;
  }

  /** The time limit covers the whole exchange, retries included. */
  function startExchange(): Exchange {
    const controller = new AbortController();
    const timer = setTimeout(
      () =>
        controller.abort(
          new LinkvaultError('proxy_timeout', {
            detail: `No complete answer within ${limits.timeoutMs / 1000} s`,
          }),
        ),
      limits.timeoutMs,
    );
    timer.unref();
    return {
      signal: controller.signal,
      requestBytes: 0,
      done: () => clearTimeout(timer),
    };
  }

  function send(
    base: URL,
    c: ProxyCall,
    token: ReleasedToken,
    body: Buffer | Readable | null,
    exchange: Exchange,
  ): Promise<IncomingMessage> {
    const headers = forwardedRequestHeaders(c.headers);
    // RFC 6750 §2.1; the value exists only in this outgoing request.
    headers.authorization = `Bearer ${token.accessToken.reveal()}`;
    if (Buffer.isBuffer(body)) headers['content-length'] = body.length;
    else if (body !== null && c.headers['content-length'] !== undefined)
      headers['content-length'] = c.headers['content-length'];
    const secure = base.protocol === 'https:';
    const basePath = base.pathname.replace(/\/+$/, '');
    return new Promise<IncomingMessage>((resolve, reject) => {
      if (exchange.signal.aborted) return reject(exchange.signal.reason);
      const req = (secure ? httpsRequest : httpRequest)({
        protocol: base.protocol,
        hostname: base.hostname,
        port: base.port === '' ? undefined : Number(base.port),
        method: c.method,
        path: `${basePath}${c.path}${c.query}`,
        headers,
        agent: secure ? httpsAgent : httpAgent,
      });
      let failure: unknown = null;
      const onAbort = () => {
        failure = exchange.signal.reason;
        req.destroy();
      };
      exchange.signal.addEventListener('abort', onAbort, { once: true });
      req.once('response', (res) => {
        exchange.signal.removeEventListener('abort', onAbort);
        resolve(res);
      });
      req.once('error', (err) => {
        exchange.signal.removeEventListener('abort', onAbort);
        exchange.done();
        if (failure) return reject(failure);
        if (isLinkvaultError(err)) return reject(err);
        log.warn({ err, request_id: c.requestId }, 'proxied call failed before an answer');
        reject(
          new LinkvaultError('provider_unavailable', {
            detail: 'The provider’s API could not be reached',
            retryAfterSeconds: 1,
          }),
        );
      });
      if (body === null) return void req.end();
      if (Buffer.isBuffer(body)) {
        exchange.requestBytes = body.length;
        return void req.end(body);
      }
      const limit = new ByteLimit(
        limits.maxRequestBytes,
        () =>
          new LinkvaultError('payload_too_large', {
            detail: 'The request body exceeds LINKVAULT_PROXY_MAX_REQUEST_BYTES',
          }),
      );
      body.once('error', (err) => req.destroy(err));
      limit.once('error', (err) => {
        failure = err;
        req.destroy(err);
      });
      limit.on('end', () => (exchange.requestBytes = limit.bytes));
      body.pipe(limit).pipe(req);
    });
  }

  interface RelayContext {
    readonly call: ProxyCall;
    readonly link: LinkRecord;
    readonly grant: GrantRecord;
    readonly rule: ProxyRule;
    readonly retried: boolean;
    readonly requestBytes: () => number;
  }

  /** Streams the provider's answer back under the size and time limits, then records it. */
  function relay(res: IncomingMessage, exchange: Exchange, ctx: RelayContext): ProxyAnswer {
    const status = res.statusCode ?? 502;
    const declared = contentLengthOf(res.headers);
    if (declared !== null && declared > limits.maxResponseBytes) {
      res.destroy();
      exchange.done();
      throw new LinkvaultError('provider_error', {
        detail: 'The provider’s answer exceeds LINKVAULT_PROXY_MAX_RESPONSE_BYTES',
      });
    }
    const headers = relayedResponseHeaders(res.headers);
    headers[PROXY_REQUEST_ID_HEADER] = ctx.call.requestId;
    const counted = new ByteLimit(
      limits.maxResponseBytes,
      () =>
        new LinkvaultError('provider_error', {
          detail: 'The provider’s answer exceeds LINKVAULT_PROXY_MAX_RESPONSE_BYTES',
        }),
    );
    const out = new PassThrough();
    let outcome: string | null = null;
    const finish = (how: string) => {
      if (outcome !== null) return;
      outcome = how;
      exchange.done();
      exchange.signal.removeEventListener('abort', onAbort);
      metrics.proxyRequests.inc({
        provider: ctx.link.providerId,
        status_class: how === 'relayed' ? statusClass(status) : how,
      });
      void recordCompletion(ctx, status, counted.bytes, how);
    };
    const onAbort = () => {
      const reason: unknown = exchange.signal.reason;
      res.destroy();
      out.destroy(reason instanceof Error ? reason : new Error('proxy time limit'));
      finish('proxy_timeout');
    };
    exchange.signal.addEventListener('abort', onAbort, { once: true });
    res.once('error', (err) => {
      out.destroy(err);
      finish('provider_aborted');
    });
    counted.once('error', (err) => {
      res.destroy();
      out.destroy(err);
      finish('response_too_large');
    });
    out.once('end', () => finish('relayed'));
    // The caller went away: stop reading from the provider.
    out.once('close', () => {
      if (!out.readableEnded) {
        res.destroy();
        finish('caller_aborted');
      }
    });
    res.pipe(counted).pipe(out);
    return { status, headers, body: out };
  }

  /** After the answer: status and sizes, never a body or a token (best effort: the call already happened). */
  async function recordCompletion(
    ctx: RelayContext,
    status: number,
    responseBytes: number,
    outcome: string,
  ): Promise<void> {
    await audit
      .record(
        'proxy.completed',
        {
          service_id: ctx.call.service.id,
          grant_id: ctx.grant.id,
          purpose: ctx.grant.purpose,
          link_id: ctx.link.id,
          tenant_id: ctx.link.tenantId,
          user_id: ctx.link.userId,
          provider_id: ctx.link.providerId,
          method: ctx.call.method,
          path_template: ctx.rule.path,
          status,
          outcome,
          retried: ctx.retried,
          request_bytes: ctx.requestBytes(),
          response_bytes: responseBytes,
        },
        ctx.call.requestId,
      )
      .catch((err: unknown) =>
        log.error(
          { err, request_id: ctx.call.requestId, link_id: ctx.link.id },
          'audit of a completed proxied call failed',
        ),
      );
  }

  return {
    call,
    close: () => {
      httpAgent.destroy();
      httpsAgent.destroy();
    },
  };
}
