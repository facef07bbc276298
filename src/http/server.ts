import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';

export interface ServeOptions {
  readonly port: number;
  /** Interface to bind; null binds every interface. */
  readonly host: string | null;
  /** How long close() lets requests in flight finish before destroying their sockets. */
  readonly shutdownTimeoutMs: number;
  readonly log: Logger;
}

export interface Serving {
  readonly server: Server;
  readonly port: number;
  /** True from the moment close() is called. */
  closing(): boolean;
  /**
   * Refuses new connections, answers what is still to be answered with Connection: close, and
   * resolves once requests in flight have finished (their sockets are destroyed after the timeout).
   */
  close(): Promise<void>;
}

/** Listens on options.host:options.port (port 0 picks a free one) with `listener`; rejects when it cannot bind. */
export async function serve(
  listener: (req: IncomingMessage, res: ServerResponse) => void,
  options: ServeOptions,
): Promise<Serving> {
  const { log, shutdownTimeoutMs } = options;
  const server = createServer(listener);
  // Longer than common load-balancer idle timeouts (60 s), so the balancer, not us, closes
  // idle connections and never reuses one we are closing; headersTimeout must exceed it.
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  server.requestTimeout = 60_000;
  // While closing, every response still to be written says Connection: close, so clients do not
  // reuse a connection we are about to end (RFC 9112 §9.6). Responses begun before the signal are
  // tracked so that they get the header too.
  let closing = false;
  const unanswered = new Set<ServerResponse>();
  server.prependListener('request', (_req, res) => {
    if (closing) {
      res.setHeader('Connection', 'close');
      return;
    }
    unanswered.add(res);
    res.once('close', () => unanswered.delete(res));
  });

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
      for (const res of unanswered) if (!res.headersSent) res.setHeader('Connection', 'close');
      unanswered.clear();
      log.info(
        { timeout_ms: shutdownTimeoutMs },
        'shutting down: refusing new connections, finishing requests in flight',
      );
      const drained = new Promise<void>((resolve) => server.close(() => resolve()));
      // Node closes idle keep-alive sockets on close(); do it explicitly so none holds shutdown open.
      server.closeIdleConnections();
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        drained.then(() => false),
        new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(true), shutdownTimeoutMs);
        }),
      ]);
      clearTimeout(timer);
      if (timedOut) {
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
