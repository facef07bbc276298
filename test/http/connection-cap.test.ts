import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { Writable } from 'node:stream';
import { after, describe, test } from 'node:test';
import { pino } from 'pino';
import { ConfigError, DEFAULT_MAX_CONNECTIONS, loadConfig } from '../../src/config.js';
import { serve, type Serving } from '../../src/http/server.js';
import { RawConnection } from './raw-connection.js';

const GET = 'GET / HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n';

function answerOk(_req: IncomingMessage, res: ServerResponse): void {
  res.end('ok');
}

describe('LINKVAULT_MAX_CONNECTIONS', () => {
  test('when it is not a whole number from 1 to 1000000, then loadConfig names it', () => {
    for (const value of ['0', '-1', '1.5', 'many', '1000001']) {
      assert.throws(
        () => loadConfig({ LINKVAULT_MAX_CONNECTIONS: value }, '/tmp'),
        (err: unknown) =>
          err instanceof ConfigError && err.variable === 'LINKVAULT_MAX_CONNECTIONS',
        value,
      );
    }
  });

  test('when it is unset, then the default applies; when set, then its value', () => {
    assert.equal(loadConfig({}, '/tmp').maxConnections, DEFAULT_MAX_CONNECTIONS);
    assert.equal(DEFAULT_MAX_CONNECTIONS, 4096);
    assert.equal(loadConfig({ LINKVAULT_MAX_CONNECTIONS: '2' }, '/tmp').maxConnections, 2);
  });
});

describe('the connection cap', () => {
  const open: RawConnection[] = [];
  let serving: Serving | undefined;
  after(async () => {
    for (const c of open) c.socket.destroy();
    await serving?.close();
  });

  test('when the configured maximum of connections is open, then the next one is closed without an answer and a warning is logged; once one closes, a new one is served', async () => {
    const lines: Record<string, unknown>[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString('utf8').split('\n').filter(Boolean))
          lines.push(JSON.parse(line) as Record<string, unknown>);
        done();
      },
    });
    const config = loadConfig({ LINKVAULT_MAX_CONNECTIONS: '2' }, '/tmp');
    serving = await serve(answerOk, {
      port: 0,
      host: '127.0.0.1',
      shutdownTimeoutMs: 1000,
      log: pino({ level: 'info' }, destination),
      maxConnections: config.maxConnections,
    });
    const accepted: Socket[] = [];
    serving.server.on('connection', (socket: Socket) => accepted.push(socket));
    const connect = (): RawConnection => {
      const c = new RawConnection(serving!.port);
      open.push(c);
      return c;
    };

    const [first, second] = [connect(), connect()];
    for (const c of [first!, second!]) {
      await c.write(GET);
      await c.waitFor('\r\n\r\nok');
    }

    // The kernel completes the handshake; the server closes the socket as soon as it accepts it.
    const third = connect();
    await third.connected;
    await third.write(GET).catch(() => undefined);
    await third.closed;
    assert.equal(third.received, '', 'no answer on a connection past the cap');
    assert.deepEqual(
      lines
        .filter((l) => l.msg === 'connection limit reached: closing new connections')
        .map((l) => ({ level: l.level, max_connections: l.max_connections, dropped: l.dropped })),
      [{ level: 40, max_connections: 2, dropped: 1 }],
    );

    // The connections within the cap are untouched.
    for (const c of [first!, second!]) {
      await c.write(GET);
      await c.waitFor('\r\n\r\nokHTTP/1.1 200 OK');
    }
    assert.deepEqual(
      [first!, second!].map((c) => c.responses().map((r) => r.status)),
      [
        [200, 200],
        [200, 200],
      ],
    );

    // One closes: room for a new connection.
    const serverSide = new Promise<void>((resolve) => accepted[0]!.once('close', () => resolve()));
    first!.socket.destroy();
    await serverSide;
    const fourth = connect();
    await fourth.write(GET);
    await fourth.waitFor('\r\n\r\nok');
    assert.equal(fourth.responses()[0]?.status, 200);
  });
});
