/**
 * A switchable HTTP front for a real authorization server, on a free loopback port: it forwards
 * to `target` unchanged, or — per path prefix — hangs (answers nothing: a provider that is down or
 * slow), holds requests until `release()` (then forwards them: a slow answer that does arrive), or
 * answers a fixed status (503 with Retry-After). It records what it saw, and the bodies the
 * provider answered, so a test can learn tokens that were issued but never stored.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type SwitchMode =
  | { kind: 'pass' }
  | { kind: 'hang' }
  | { kind: 'hold' }
  | { kind: 'status'; status: number; retryAfterSeconds?: number };

export interface SeenRequest {
  readonly method: string;
  readonly path: string;
  readonly mode: SwitchMode['kind'];
}

export interface ProviderSwitch {
  readonly url: string;
  /** Sets the mode for requests whose path starts with `pathPrefix` (others pass). */
  set(pathPrefix: string, mode: SwitchMode): void;
  /** Forwards every held request now and switches their prefixes back to pass. */
  release(): void;
  /** Resolves once `count` requests are being held. */
  held(count?: number): Promise<void>;
  /** Resolves once `count` requests under `pathPrefix` have been seen (any mode). */
  seen(pathPrefix: string, count: number): Promise<void>;
  readonly requests: readonly SeenRequest[];
  /** JSON bodies the target answered to forwarded requests under `pathPrefix`. */
  answers(pathPrefix: string): Record<string, unknown>[];
  close(): Promise<void>;
}

export async function startProviderSwitch(target: string): Promise<ProviderSwitch> {
  const modes = new Map<string, SwitchMode>();
  const requests: SeenRequest[] = [];
  const answered: { path: string; body: Record<string, unknown> }[] = [];
  let held: { forward: () => void; prefix: string }[] = [];
  let waiters: { check: () => boolean; resolve: () => void }[] = [];

  const notify = (): void => {
    waiters = waiters.filter((w) => {
      if (!w.check()) return true;
      w.resolve();
      return false;
    });
  };
  const waitFor = (check: () => boolean): Promise<void> =>
    check() ? Promise.resolve() : new Promise((resolve) => waiters.push({ check, resolve }));

  const modeFor = (path: string): [string, SwitchMode] => {
    for (const [prefix, mode] of modes) if (path.startsWith(prefix)) return [prefix, mode];
    return ['', { kind: 'pass' }];
  };

  async function forward(
    req: IncomingMessage,
    body: Buffer,
    res: ServerResponse,
    path: string,
  ): Promise<void> {
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) {
      if (typeof v === 'string' && !['host', 'connection', 'content-length'].includes(k))
        headers[k] = v;
    }
    try {
      const answer = await fetch(new URL(req.url ?? '/', target), {
        method: req.method ?? 'GET',
        headers,
        ...(req.method === 'GET' || req.method === 'HEAD' ? {} : { body }),
        redirect: 'manual',
      });
      const bytes = Buffer.from(await answer.arrayBuffer());
      if ((answer.headers.get('content-type') ?? '').includes('json') && bytes.length > 0) {
        try {
          answered.push({
            path,
            body: JSON.parse(bytes.toString('utf8')) as Record<string, unknown>,
          });
        } catch {
          // not JSON after all
        }
      }
      const out: Record<string, string> = {};
      answer.headers.forEach((v, k) => {
        if (!['content-length', 'content-encoding', 'transfer-encoding', 'connection'].includes(k))
          out[k] = v;
      });
      res.writeHead(answer.status, out);
      res.end(bytes);
    } catch {
      res.destroy();
    }
  }

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      const [prefix, mode] = modeFor(path);
      requests.push({ method: req.method ?? 'GET', path, mode: mode.kind });
      if (mode.kind === 'pass') void forward(req, body, res, path);
      else if (mode.kind === 'hang') {
        // Never answers; the client's own timeout ends it.
      } else if (mode.kind === 'hold') {
        held.push({ forward: () => void forward(req, body, res, path), prefix });
      } else {
        const headers: Record<string, string> = { 'content-type': 'application/json' };
        if (mode.retryAfterSeconds !== undefined)
          headers['retry-after'] = String(mode.retryAfterSeconds);
        res.writeHead(mode.status, headers);
        res.end(
          JSON.stringify({ error: mode.status === 429 ? 'slow_down' : 'temporarily_unavailable' }),
        );
      }
      notify();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    url,
    set(pathPrefix, mode) {
      modes.set(pathPrefix, mode);
    },
    release() {
      const now = held;
      held = [];
      for (const h of now) modes.set(h.prefix, { kind: 'pass' });
      for (const h of now) h.forward();
    },
    held: (count = 1) => waitFor(() => held.length >= count),
    seen: (pathPrefix, count) =>
      waitFor(() => requests.filter((r) => r.path.startsWith(pathPrefix)).length >= count),
    requests,
    answers: (pathPrefix) =>
      answered.filter((a) => a.path.startsWith(pathPrefix)).map((a) => a.body),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
