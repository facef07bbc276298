import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { serve, type Serving } from '../../src/http/server.js';
import { RawConnection } from './raw-connection.js';

const HEADERS_TIMEOUT_MS = 300;
const REQUEST_TIMEOUT_MS = 600;
/** The last answer on the wire is a 408 problem+json that closes the connection. */
function assertTimedOut(received: string): void {
  const at = received.lastIndexOf('HTTP/1.1 ');
  const answer = received.slice(at);
  assert.match(answer, /^HTTP\/1\.1 408 Request Timeout\r\n/);
  assert.match(answer, /\r\nConnection: close\r\n/);
  const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as Record<string, unknown>;
  assert.equal(body.status, 408);
  assert.equal(typeof body.request_id, 'string');
}

/** Reads the whole body, then answers with its length. */
function echoLength(req: IncomingMessage, res: ServerResponse): void {
  let length = 0;
  req.on('data', (chunk: Buffer) => (length += chunk.length));
  req.on('end', () => res.end(String(length)));
}

/**
 * Resolves with how long the connection stayed open after `sentAtMs`, or rejects once `limitMs`
 * has passed without it closing: the deadline bounds the test, it waits for nothing.
 */
async function closedWithin(c: RawConnection, sentAtMs: number, limitMs: number): Promise<number> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`still open ${limitMs} ms after the request began`)),
      limitMs - (Date.now() - sentAtMs),
    );
  });
  try {
    await Promise.race([c.closed, deadline]);
    return Date.now() - sentAtMs;
  } finally {
    clearTimeout(timer);
  }
}

describe('slow requests', () => {
  let serving: Serving;
  const open: RawConnection[] = [];
  const connection = async (): Promise<RawConnection> => {
    const c = new RawConnection(serving.port);
    open.push(c);
    await c.connected;
    return c;
  };

  before(async () => {
    serving = await serve(echoLength, {
      port: 0,
      host: '127.0.0.1',
      shutdownTimeoutMs: 1000,
      log: pino({ level: 'silent' }),
      headersTimeoutMs: HEADERS_TIMEOUT_MS,
      requestTimeoutMs: REQUEST_TIMEOUT_MS,
    });
  });
  after(async () => {
    for (const c of open) c.socket.destroy();
    await serving.close();
  });

  test('when served with the defaults, then headersTimeout ≤ requestTimeout and timeouts are checked at least ten times per timeout', async () => {
    const defaults = await serve(echoLength, {
      port: 0,
      host: '127.0.0.1',
      shutdownTimeoutMs: 1000,
      log: pino({ level: 'silent' }),
    });
    try {
      const { headersTimeout, requestTimeout, keepAliveTimeout } = defaults.server;
      assert.deepEqual(
        { headersTimeout, requestTimeout, keepAliveTimeout },
        {
          headersTimeout: 30_000,
          requestTimeout: 60_000,
          keepAliveTimeout: 65_000,
        },
      );
      // Node releases a stalled request at the first check after its timeout (default every 30 s).
      const checkEveryMs = (defaults.server as unknown as { connectionsCheckingInterval: number })
        .connectionsCheckingInterval;
      assert.ok(checkEveryMs <= headersTimeout / 10, `checked every ${checkEveryMs} ms`);
    } finally {
      await defaults.close();
    }
  });

  test('when the headers would exceed the request timeout, then serve refuses to start', async () => {
    await assert.rejects(
      serve(echoLength, {
        port: 0,
        host: '127.0.0.1',
        shutdownTimeoutMs: 1000,
        log: pino({ level: 'silent' }),
        headersTimeoutMs: 2000,
        requestTimeoutMs: 1000,
      }),
      /headersTimeoutMs must be > 0 and at most requestTimeoutMs/,
    );
  });

  test('when a request arrives whole, then it is answered (the bounds cut only stalled ones)', async () => {
    const c = await connection();
    await c.write('POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello');
    await c.waitFor('\r\n\r\n5');
    assert.equal(c.responses()[0]?.status, 200);
  });

  test('when a client sends its headers and stalls, then it gets 408 and the connection is closed after the headers timeout, before twice it', async () => {
    const c = await connection();
    const sentAtMs = Date.now();
    await c.write('POST / HTTP/1.1\r\nHost: localhost\r\n');
    const openMs = await closedWithin(c, sentAtMs, 2 * HEADERS_TIMEOUT_MS);
    assertTimedOut(c.received);
    assert.ok(
      openMs >= HEADERS_TIMEOUT_MS - 20,
      `closed after ${openMs} ms, not before the timeout`,
    );
  });

  test('when a client connects and sends nothing, then the connection is closed after the headers timeout, before twice it', async () => {
    const connectedAtMs = Date.now();
    const c = await connection();
    await closedWithin(c, connectedAtMs, 2 * HEADERS_TIMEOUT_MS);
    assertTimedOut(c.received);
  });

  test('when a body stalls, then the request gets 408 and the connection is closed after the request timeout, before twice it', async () => {
    const c = await connection();
    const sentAtMs = Date.now();
    await c.write('POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{"a":');
    const openMs = await closedWithin(c, sentAtMs, 2 * REQUEST_TIMEOUT_MS);
    assertTimedOut(c.received);
    assert.ok(
      openMs >= REQUEST_TIMEOUT_MS - 20,
      `closed after ${openMs} ms, not before the timeout`,
    );
  });

  test('when a body trickles in, a byte at a time, then the request is still cut at the request timeout, before twice it', async () => {
    const c = await connection();
    const sentAtMs = Date.now();
    await c.write('POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n');
    // The client's pace, not a wait: a byte every 50 ms keeps any idle timer from firing.
    const trickle = setInterval(() => {
      if (!c.socket.destroyed) c.socket.write('x');
    }, 50);
    try {
      await closedWithin(c, sentAtMs, 2 * REQUEST_TIMEOUT_MS);
    } finally {
      clearInterval(trickle);
    }
    assertTimedOut(c.received);
  });

  test('when a keep-alive connection stalls on its second request, then that request is cut at the timeout from its own start', async () => {
    const c = await connection();
    await c.write('POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\nok');
    await c.waitFor('\r\n\r\n2');
    const sentAtMs = Date.now();
    await c.write('POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n');
    const openMs = await closedWithin(c, sentAtMs, 2 * REQUEST_TIMEOUT_MS);
    assert.ok(
      openMs >= REQUEST_TIMEOUT_MS - 20,
      `closed after ${openMs} ms, not before the timeout`,
    );
    assert.equal(c.responses()[0]?.status, 200);
    assertTimedOut(c.received);
  });
});
