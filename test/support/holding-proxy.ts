import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A loopback HTTP forwarder in front of a provider endpoint that can catch the next request and
 * hold it (the provider never sees it) until the test decides: drop the connection (the caller's
 * request may have been delivered, its answer is lost) or forward it after all. Every other
 * request is forwarded unchanged.
 */

export interface HeldRequest {
  readonly method: string;
  readonly path: string;
  /** Destroys the caller's connection without an answer. */
  drop(): void;
  /** Sends the request on to the target and relays the answer. */
  forward(): Promise<void>;
}

export interface HoldingProxy {
  readonly url: string;
  /** Holds the next request that arrives; resolves when it has arrived. */
  holdNext(): Promise<HeldRequest>;
  /** Requests forwarded so far. */
  forwarded(): number;
  close(): Promise<void>;
}

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'transfer-encoding',
  'content-length',
  'content-encoding',
  'host',
]);

export async function startHoldingProxy(target: string): Promise<HoldingProxy> {
  let waiting: ((held: HeldRequest) => void) | null = null;
  let forwardedCount = 0;

  async function relay(req: IncomingMessage, res: ServerResponse, body: Buffer): Promise<void> {
    forwardedCount++;
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers))
      if (typeof v === 'string' && !HOP_BY_HOP.has(k)) headers[k] = v;
    const answer = await fetch(new URL(req.url ?? '/', target), {
      method: req.method ?? 'GET',
      headers,
      ...(body.length ? { body } : {}),
    });
    const bytes = Buffer.from(await answer.arrayBuffer());
    const out: Record<string, string> = {};
    answer.headers.forEach((v, k) => {
      if (!HOP_BY_HOP.has(k)) out[k] = v;
    });
    res.writeHead(answer.status, out);
    res.end(bytes);
  }

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      if (waiting) {
        const resolve = waiting;
        waiting = null;
        resolve({
          method: req.method ?? 'GET',
          path: req.url ?? '/',
          drop: () => req.socket.destroy(),
          forward: () => relay(req, res, body),
        });
        return;
      }
      relay(req, res, body).catch(() => res.destroy());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    holdNext: () =>
      new Promise<HeldRequest>((resolve) => {
        waiting = resolve;
      }),
    forwarded: () => forwardedCount,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
