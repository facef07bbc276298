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
import { createProxyTargets, type ProxyTarget } from './proxy-target.js';

/**
 * The least-privilege proxy: a service calls the provider's API through linkvault and never holds
 * the token. Reads top to bottom: checkRequestPath → release (the token route's own machinery:
 * grant lookup filtered by the grants' proxy rules, link status, refresh when due through the
 * single-flight coordinator, the `proxy.requested` audit record stored first — no record, no call —
 * and the re-read that refuses a link revoked meanwhile) → resolveProxyTarget (catalogue hosts
 * only) → send (streamed, no redirect followed) → on a 401, one forced refresh and one retry →
 * relay (a small answer of declared length read whole, anything else streamed; counted,
 * time-limited) → the `proxy.completed` record (not awaited by the caller) and the metric.
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
  /**
   * The provider's body: whole when its declared length is at most SMALL_ANSWER_BYTES (read before
   * the answer starts, so that it goes out in one write), else streamed; a stream errors when cut
   * (time or size limit, provider gone).
   */
  readonly body: Buffer | Readable;
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
/**
 * Answers whose declared length is at most this are read whole before they are relayed: most API
 * answers are a few kilobytes, and three streams and a pipeline per call cost more than the bytes.
 */
export const SMALL_ANSWER_BYTES = 64 * 1024;
/** A kept-alive connection to a provider idle this long is closed (sooner when the provider says so). */
const IDLE_SOCKET_MS = 30_000;

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

/** The field names the Connection header lists (RFC 9110 §7.6.1), or null when there are none. */
function connectionNamed(headers: IncomingHttpHeaders): Set<string> | null {
  const value = headers.connection;
  if (value === undefined) return null;
  const names = new Set<string>();
  for (const part of (Array.isArray(value) ? value.join(',') : value).split(','))
    if (part.trim()) names.add(part.trim().toLowerCase());
  return names;
}

function keptHeaders(headers: IncomingHttpHeaders, drop: ReadonlySet<string>): OutgoingHttpHeaders {
  const named = connectionNamed(headers);
  const out: OutgoingHttpHeaders = {};
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || drop.has(name) || named?.has(name) || OWN_HEADER.test(name))
      continue;
    out[name] = value;
  }
  return out;
}

/** The caller's headers minus hop-by-hop, credentials and linkvault's own. */
export function forwardedRequestHeaders(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  return keptHeaders(headers, REQUEST_DROP);
}

/** The provider's headers minus hop-by-hop and what would act on linkvault's origin; rate-limit headers pass. */
export function relayedResponseHeaders(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  return keptHeaders(headers, RESPONSE_DROP);
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

/**
 * The time limit of one exchange (retries included), and what to do when it passes: one watcher
 * at a time (the pending request, then the answer being relayed). A timer per call, no
 * AbortController: the signal's listeners and DOMException cost more than the call's own work.
 */
class Exchange {
  requestBytes = 0;
  /** Set once the time limit has passed. */
  expired: LinkvaultError | null = null;
  #watcher: (() => void) | null = null;
  readonly #timer: NodeJS.Timeout;

  constructor(timeoutMs: number) {
    this.#timer = setTimeout(() => {
      this.expired = new LinkvaultError('proxy_timeout', {
        detail: `No complete answer within ${timeoutMs / 1000} s`,
      });
      const watcher = this.#watcher;
      this.#watcher = null;
      watcher?.();
    }, timeoutMs);
    this.#timer.unref();
  }

  /** Runs `fn` when the time limit passes while it is watched (replaces the previous watcher). */
  watch(fn: () => void): void {
    this.#watcher = fn;
  }

  unwatch(): void {
    this.#watcher = null;
  }

  /** Stops the clock (the answer was relayed whole, or the call failed). */
  done(): void {
    clearTimeout(this.#timer);
    this.#watcher = null;
  }
}

interface Chosen {
  link?: LinkRecord;
  grant?: GrantRecord;
  rule?: ProxyRule;
}

export function createProxy(deps: ProxyDeps): Proxy {
  const { release, catalogue, audit, metrics, log, limits } = deps;
  const auditFailures = metrics.proxyAuditFailures;
  const resolveTarget = createProxyTargets();
  // Provider calls reuse kept-alive connections (no DNS lookup, TCP or TLS handshake per call).
  // 'lifo' (Node's default, stated) reuses the most recently used socket, so that idle ones age
  // out. `timeout` closes a socket idle for 30 s, and makes Node honour a provider's
  // `Keep-Alive: timeout=N` (it closes the socket a second before): without it Node ignores the
  // hint, and a call sent on a connection the provider is closing fails (503 provider_unavailable).
  const agentOptions = { keepAlive: true, scheduling: 'lifo', timeout: IDLE_SOCKET_MS } as const;
  const httpAgent = new HttpAgent(agentOptions);
  const httpsAgent = new HttpsAgent(agentOptions);

  async function call(c: ProxyCall): Promise<ProxyAnswer> {
    const chosen: Chosen = {};
    let counted = false;
    try {
      const path = checkRequestPath(c.path);
      const declared = contentLengthOf(c.headers);
      if (declared !== null && declared > limits.maxRequestBytes)
        throw new LinkvaultError('payload_too_large', {
          detail: 'The request body exceeds LINKVAULT_PROXY_MAX_REQUEST_BYTES',
        });
      const use = proxyUse(c, path, chosen);
      // A small body is read while the token use is audited (nothing is sent before the record is
      // stored either way); the release's refusal, if any, is the answer.
      const reading =
        c.body !== null && declared !== null && declared <= REPLAYABLE_BODY_BYTES
          ? readSmallBody(c.body, declared)
          : null;
      // Handled where it is awaited below, or dropped with the release's refusal.
      reading?.catch(() => undefined);
      const token = await releaseFor(c, use, false);
      const link = chosen.link!;
      const target = targetFor(link.providerId, token.metadata);
      const replay = reading ? await reading : null;
      const body = replay ?? c.body;
      const exchange = new Exchange(limits.timeoutMs);
      let answer = await send(target, c, token, body, exchange);
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
      const ctx: RelayContext = {
        call: c,
        link,
        grant: chosen.grant!,
        rule: chosen.rule!,
        retried,
        exchange,
      };
      const declaredAnswer = contentLengthOf(answer.headers);
      if (exchange.expired) {
        // The time limit passed during the retry's refresh: nothing has been relayed yet.
        answer.destroy();
        recordCompletion(ctx, answer.statusCode ?? 502, 0, 'proxy_timeout');
        throw exchange.expired;
      }
      if (declaredAnswer !== null && declaredAnswer > limits.maxResponseBytes) {
        answer.destroy();
        exchange.done();
        recordCompletion(ctx, answer.statusCode ?? 502, 0, 'response_too_large');
        throw new LinkvaultError('provider_error', {
          detail: 'The provider’s answer exceeds LINKVAULT_PROXY_MAX_RESPONSE_BYTES',
        });
      }
      if (declaredAnswer !== null && declaredAnswer <= SMALL_ANSWER_BYTES) {
        counted = true;
        return await relayWhole(answer, ctx);
      }
      return relayStream(answer, ctx);
    } catch (caught) {
      // No grant of the service whose rules allow the call (or no grant at all: the caller learns
      // nothing more about the link).
      const err =
        isLinkvaultError(caught) && caught.code === 'no_grant'
          ? new LinkvaultError('proxy_not_allowed', {
              detail: 'No grant of this service allows this method and path for this link',
            })
          : caught;
      if (!counted)
        metrics.proxyRequests.inc({
          provider: chosen.link?.providerId ?? 'unknown',
          status_class: isLinkvaultError(err) ? err.code : 'internal_error',
        });
      throw err;
    }
  }

  /** How the proxy uses the token: grants whose rules allow the call; the rule and link kept for the records. */
  function proxyUse(c: ProxyCall, path: CheckedPath, chosen: Chosen): TokenUse {
    // The rule each grant allows the call by, matched once per grant and call.
    let lastGrant: GrantRecord | null = null;
    let lastRule: ProxyRule | null = null;
    const ruleOf = (grant: GrantRecord): ProxyRule | null => {
      if (grant !== lastGrant) {
        lastGrant = grant;
        lastRule = matchProxyRule(grant.proxy, c.method, path);
      }
      return lastRule;
    };
    return {
      allows: (grant) => ruleOf(grant) !== null,
      check: (link, grant) => {
        chosen.link = link;
        chosen.grant = grant;
        chosen.rule = ruleOf(grant)!;
        // Before the audit record and any refresh: a link whose target is refused costs nothing.
        targetFor(link.providerId, link.metadata);
      },
      auditType: 'proxy.requested',
      auditFields: (grant) => ({
        purpose: grant.purpose,
        method: c.method,
        path_template: ruleOf(grant)?.path ?? null,
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

  function targetFor(providerId: string, metadata: Readonly<Record<string, string>>): ProxyTarget {
    const entry = catalogue.get(providerId);
    if (!entry)
      throw new LinkvaultError('proxy_target_refused', {
        detail: 'The link’s provider is no longer in the catalogue',
      });
    return resolveTarget(entry, metadata);
  }

  function send(
    target: ProxyTarget,
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
    return new Promise<IncomingMessage>((resolve, reject) => {
      if (exchange.expired) return reject(exchange.expired);
      const req = (target.secure ? httpsRequest : httpRequest)({
        protocol: target.protocol,
        hostname: target.hostname,
        port: target.port,
        method: c.method,
        path: `${target.basePath}${c.path}${c.query}`,
        headers,
        agent: target.secure ? httpsAgent : httpAgent,
      });
      let failure: unknown = null;
      exchange.watch(() => {
        failure = exchange.expired;
        req.destroy();
      });
      req.once('response', (res) => {
        exchange.unwatch();
        resolve(res);
      });
      req.once('error', (err) => {
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
    readonly exchange: Exchange;
  }

  /** The provider's headers as relayed, with the request id that marks the answer as the provider's. */
  function answerHeaders(res: IncomingMessage, ctx: RelayContext): OutgoingHttpHeaders {
    const headers = relayedResponseHeaders(res.headers);
    headers[PROXY_REQUEST_ID_HEADER] = ctx.call.requestId;
    return headers;
  }

  /**
   * A small answer of declared length: read whole under the time limit, then handed over in one
   * piece. Until its last byte nothing is relayed, so a cut or late answer is a clean refusal
   * (502 provider_error, 504 proxy_timeout) instead of a cut connection.
   */
  function relayWhole(res: IncomingMessage, ctx: RelayContext): Promise<ProxyAnswer> {
    const status = res.statusCode ?? 502;
    const { exchange } = ctx;
    return new Promise<ProxyAnswer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let bytes = 0;
      let settled = false;
      const fail = (how: string, err: LinkvaultError) => {
        if (settled) return;
        settled = true;
        exchange.done();
        res.destroy();
        metrics.proxyRequests.inc({ provider: ctx.link.providerId, status_class: how });
        recordCompletion(ctx, status, bytes, how);
        reject(err);
      };
      exchange.watch(() => fail('proxy_timeout', exchange.expired!));
      res.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        chunks.push(chunk);
      });
      res.once('end', () => {
        if (settled) return;
        settled = true;
        exchange.done();
        metrics.proxyRequests.inc({
          provider: ctx.link.providerId,
          status_class: statusClass(status),
        });
        recordCompletion(ctx, status, bytes, 'relayed');
        resolve({
          status,
          headers: answerHeaders(res, ctx),
          body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, bytes),
        });
      });
      const cut = () =>
        fail(
          'provider_aborted',
          new LinkvaultError('provider_error', {
            detail: 'The provider’s API closed the connection before the end of its answer',
          }),
        );
      res.once('error', cut);
      res.once('close', () => {
        if (!res.complete) cut();
      });
    });
  }

  /** Streams the provider's answer back under the size and time limits, then records it. */
  function relayStream(res: IncomingMessage, ctx: RelayContext): ProxyAnswer {
    const status = res.statusCode ?? 502;
    const { exchange } = ctx;
    const headers = answerHeaders(res, ctx);
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
      metrics.proxyRequests.inc({
        provider: ctx.link.providerId,
        status_class: how === 'relayed' ? statusClass(status) : how,
      });
      recordCompletion(ctx, status, counted.bytes, how);
    };
    exchange.watch(() => {
      res.destroy();
      out.destroy(exchange.expired!);
      finish('proxy_timeout');
    });
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

  /** Completion records waiting for the end of this turn of the event loop (null: none queued). */
  let completions: { fields: Record<string, unknown>; ctx: RelayContext }[] | null = null;

  /**
   * After the answer: status and sizes, never a body or a token. Nobody awaits it: the call has
   * happened. It is written once this turn of the event loop is over (setImmediate), so that the
   * answers ready in this turn go out first and the records of one turn reach the store together;
   * a failure to store it is counted (linkvault_proxy_audit_failures_total) and logged.
   */
  function recordCompletion(
    ctx: RelayContext,
    status: number,
    responseBytes: number,
    outcome: string,
  ): void {
    const fields = {
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
      request_bytes: ctx.exchange.requestBytes,
      response_bytes: responseBytes,
    };
    if (completions === null) {
      completions = [];
      setImmediate(writeCompletions);
    }
    completions.push({ fields, ctx });
  }

  function writeCompletions(): void {
    const queued = completions ?? [];
    completions = null;
    for (const { fields, ctx } of queued) {
      const failed = (err: unknown): void => {
        auditFailures.inc({ provider: ctx.link.providerId });
        log.error(
          { err, request_id: ctx.call.requestId, link_id: ctx.link.id },
          'audit of a completed proxied call failed',
        );
      };
      try {
        audit.record('proxy.completed', fields, ctx.call.requestId).catch(failed);
      } catch (err) {
        failed(err);
      }
    }
  }

  return {
    call,
    close: () => {
      httpAgent.destroy();
      httpsAgent.destroy();
    },
  };
}
