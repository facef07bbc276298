import { answerClientError } from './client-error.js';
import { randomUUID } from 'node:crypto';
import { LinkvaultError, type ErrorCode } from '../errors.js';
import { PROBLEM_CONTENT_TYPE, problemBody } from './problem.js';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Server as NetServer, type AddressInfo, type Socket } from 'node:net';
import type { Logger } from 'pino';
import { DEFAULT_MAX_CONNECTIONS } from '../config.js';

export interface ServeOptions {
  readonly port: number;
  /** Interface to bind; null binds every interface. */
  readonly host: string | null;
  /** How long close() lets requests in flight finish before destroying their sockets. */
  readonly shutdownTimeoutMs: number;
  readonly log: Logger;
  /** Concurrent connections accepted; more are closed at once. Default DEFAULT_MAX_CONNECTIONS. */
  readonly maxConnections?: number;
  /** Time to receive a whole request (headers and body), from its first byte. Default 60 s. */
  readonly requestTimeoutMs?: number;
  /**
   * Time to receive a request's headers, from its first byte (or from the connection's opening,
   * for its first request); at most requestTimeoutMs. Default min(30 s, requestTimeoutMs).
   */
  readonly headersTimeoutMs?: number;
}

export interface Serving {
  readonly server: Server;
  readonly port: number;
  /** True from the moment close() is called. */
  closing(): boolean;
  /**
   * Refuses new connections, answers every request still to be answered (on busy and idle
   * connections alike) with Connection: close, closes the connections left idle once the drain
   * grace is over, and resolves once every connection has closed (sockets still busy at the
   * shutdown timeout are destroyed).
   */
  close(): Promise<void>;
}

const DEFAULT_REQUEST_TIMEOUT_MS = 60_000;
const DEFAULT_HEADERS_TIMEOUT_MS = 30_000;
/** Longest time idle keep-alive connections are kept open after close() (see drainGraceMs). */
const MAX_DRAIN_GRACE_MS = 5_000;
const DROP_LOG_INTERVAL_MS = 60_000;

/**
 * How long close() keeps idle keep-alive connections open, answering what arrives on them with
 * Connection: close. Closing an idle connection races a request the client is sending on it
 * (RFC 9112 §9.6: the client sees a reset and cannot know whether it was processed); a client
 * that is answered with Connection: close learns without losing a request. Half the shutdown
 * window, so requests in flight keep the rest, and at most 5 s, about the time a load balancer
 * takes to stop routing to an instance that has begun shutting down.
 */
function drainGraceMs(shutdownTimeoutMs: number): number {
  return Math.min(shutdownTimeoutMs / 2, MAX_DRAIN_GRACE_MS);
}

/** The response a connection is answering (or answered last), set as each request arrives. */
const CURRENT_RESPONSE = Symbol('linkvault.currentResponse');
type TrackedSocket = Socket & { [CURRENT_RESPONSE]?: ServerResponse };

/** Listens on options.host:options.port (port 0 picks a free one) with `listener`; rejects when it cannot bind. */
export async function serve(
  listener: (req: IncomingMessage, res: ServerResponse) => void,
  options: ServeOptions,
): Promise<Serving> {
  const { log, shutdownTimeoutMs } = options;
  const maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  const requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  const headersTimeoutMs =
    options.headersTimeoutMs ?? Math.min(DEFAULT_HEADERS_TIMEOUT_MS, requestTimeoutMs);
  if (!(headersTimeoutMs > 0 && headersTimeoutMs <= requestTimeoutMs))
    throw new RangeError('serve: headersTimeoutMs must be > 0 and at most requestTimeoutMs');
  let closing = false;
  let graceOver = false;
  const server = createServer(
    {
      // Node answers 408 and closes a connection whose request is not received in time. It checks
      // every connectionsCheckingInterval (default 30 s), so a stalled request would be released
      // up to that much late; checking ten times per timeout bounds it at 1.1 × the timeout.
      requestTimeout: requestTimeoutMs,
      headersTimeout: headersTimeoutMs,
      connectionsCheckingInterval: Math.max(10, Math.floor(headersTimeoutMs / 10)),
    },
    (req, res) => {
      // While closing, every response still to be written says Connection: close (see below).
      if (closing) res.setHeader('Connection', 'close');
      else (req.socket as TrackedSocket)[CURRENT_RESPONSE] = res;
      listener(req, res);
    },
  );
  // Node's own refusals (malformed request line, headers too large, a request timeout) get a
  // problem+json body and a request id like every other answer.
  server.on('clientError', (err, socket) => answerClientError(err, socket, log));
  // Longer than common load-balancer idle timeouts (60 s), so the balancer, not us, closes
  // idle connections and never reuses one we are closing.
  server.keepAliveTimeout = 65_000;
  // Past the cap, Node closes a new connection as soon as it is accepted: memory and file
  // descriptors stay bounded however many clients connect or stall.
  server.maxConnections = maxConnections;
  let dropped = 0;
  let dropLoggedAtMs = -Infinity;
  server.on('drop', () => {
    dropped++;
    // One line a minute at most: a flood of connections must not become a flood of log lines.
    if (Date.now() - dropLoggedAtMs < DROP_LOG_INTERVAL_MS) return;
    dropLoggedAtMs = Date.now();
    log.warn(
      { max_connections: maxConnections, dropped },
      'connection limit reached: closing new connections',
    );
    dropped = 0;
  });

  // While closing, every response still to be written says Connection: close, so clients do not
  // reuse a connection we are about to end (RFC 9112 §9.6). Responses begun before the signal are
  // found through their connections: each open socket is tracked (once per connection) and keeps its
  // current response under a symbol. Tracking each response with a 'close' listener and a Set cost
  // ~10 µs of CPU per request on the token route (measured in-process, A/B, 2026-12-04).
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  // Runs after Node's own 'finish' handler has detached the response from its socket, so the
  // socket counts as idle.
  const closeIdleOnceGraceOver = (): void => {
    if (graceOver) server.closeIdleConnections();
  };

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host ?? undefined, () => {
      server.off('error', reject);
      resolve();
    });
  });

  let closed: Promise<void> | undefined;
  function close(): Promise<void> {
    return (closed ??= (async () => {
      closing = true;
      for (const socket of sockets) {
        const res = (socket as TrackedSocket)[CURRENT_RESPONSE];
        // None yet, or answered: the connection is idle (closed once the grace is over).
        if (res === undefined || res.writableFinished) continue;
        if (!res.headersSent) res.setHeader('Connection', 'close');
        // Keep-alive already promised: the connection is closed once idle after the grace.
        else res.once('finish', closeIdleOnceGraceOver);
      }
      const graceMs = drainGraceMs(shutdownTimeoutMs);
      log.info(
        { timeout_ms: shutdownTimeoutMs, idle_grace_ms: graceMs },
        'shutting down: refusing new connections, answering requests on open ones with Connection: close',
      );
      // net.Server's close, not http.Server's: the latter also closes idle keep-alive connections
      // at once, resetting requests already on their way over them.
      const drained = new Promise<void>((resolve) =>
        NetServer.prototype.close.call(server, () => resolve()),
      );
      let graceTimer: NodeJS.Timeout | undefined;
      let shutdownTimer: NodeJS.Timeout | undefined;
      const graceEnded = new Promise<void>((resolve) => {
        graceTimer = setTimeout(resolve, graceMs);
      });
      const timedOut = new Promise<true>((resolve) => {
        shutdownTimer = setTimeout(() => resolve(true), shutdownTimeoutMs);
      });
      void graceEnded.then(() => {
        graceOver = true;
        log.info({ idle_grace_ms: graceMs }, 'drain grace over: closing idle connections');
        server.closeIdleConnections();
      });
      const outcome = await Promise.race([drained.then(() => false as const), timedOut]);
      clearTimeout(graceTimer);
      clearTimeout(shutdownTimer);
      if (outcome) {
        log.warn(
          { timeout_ms: shutdownTimeoutMs },
          'shutdown timeout: destroying connections still open',
        );
        server.closeAllConnections();
        await drained;
      }
    })());
  }

  return { server, port: (server.address() as AddressInfo).port, closing: () => closing, close };
}

/**
 * The request listener of the separate metrics port (LINKVAULT_METRICS_PORT): GET or HEAD /metrics
 * answers the Prometheus text; any other path is 404 and any other method 405, both problem+json.
 * No request is logged: a scraper calls it every few seconds.
 */
export function metricsOnlyListener(
  render: () => string,
): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const path = (req.url ?? '').split('?')[0];
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('Cache-Control', 'no-store');
    if (path !== '/metrics') return answerProblem(res, 'not_found');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      return answerProblem(res, 'method_not_allowed');
    }
    res.statusCode = 200;
    res.setHeader('Content-Type', 'text/plain; version=0.0.4; charset=utf-8');
    res.end(req.method === 'HEAD' ? undefined : render());
  };
}

function answerProblem(res: ServerResponse, code: ErrorCode): void {
  const err = new LinkvaultError(code);
  const requestId = randomUUID();
  res.statusCode = err.status;
  res.setHeader('X-Request-Id', requestId);
  res.setHeader('Content-Type', PROBLEM_CONTENT_TYPE);
  res.end(JSON.stringify(problemBody(err, requestId)));
}
