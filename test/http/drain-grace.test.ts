import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Writable } from 'node:stream';
import { after, test } from 'node:test';
import { pino, type Logger } from 'pino';
import { serve, type Serving } from '../../src/http/server.js';
import { RawConnection } from './raw-connection.js';

const open: RawConnection[] = [];
const servings: Serving[] = [];
after(async () => {
  for (const c of open) c.socket.destroy();
  await Promise.all(servings.map((s) => s.close()));
});

/** A logger whose lines the test can await. */
function capturedLog(): { log: Logger; lines: string[]; waitFor(msg: string): Promise<void> } {
  const lines: string[] = [];
  let waiters: { msg: string; resolve: () => void }[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const text of chunk.toString('utf8').split('\n').filter(Boolean)) {
        const { msg } = JSON.parse(text) as { msg: string };
        lines.push(msg);
        waiters = waiters.filter((w) => (msg.startsWith(w.msg) ? (w.resolve(), false) : true));
      }
      done();
    },
  });
  return {
    log: pino({ level: 'info' }, destination),
    lines,
    waitFor: (msg) =>
      lines.some((l) => l.startsWith(msg))
        ? Promise.resolve()
        : new Promise((resolve) => waiters.push({ msg, resolve })),
  };
}

test('when a keep-alive response already under way at close() ends after the drain grace, then its connection is closed at once and close() resolves without reaching the shutdown timeout', async () => {
  const { log, lines, waitFor } = capturedLog();
  let finish: () => void = () => undefined;
  const finishing = new Promise<void>((resolve) => (finish = resolve));
  const serving = await serve(
    (_req: IncomingMessage, res: ServerResponse) => {
      res.writeHead(200, { 'Content-Length': '2', Connection: 'keep-alive' });
      res.write('o');
      void finishing.then(() => res.end('k'));
    },
    { port: 0, host: '127.0.0.1', shutdownTimeoutMs: 60_000, log },
  );
  servings.push(serving);
  const c = new RawConnection(serving.port);
  open.push(c);
  await c.write('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n');
  await c.waitFor('\r\n\r\no');

  const closed = serving.close();
  await waitFor('drain grace over');
  finish();
  await c.closed;
  await closed;
  assert.equal(c.responses()[0]?.body, 'ok');
  assert.match(c.received, /\r\nConnection: keep-alive\r\n/);
  assert.ok(!lines.some((l) => l.startsWith('shutdown timeout')), lines.join('\n'));
});

test('when a keep-alive connection is idle at close(), then a request sent on it during the drain grace is answered with Connection: close, and an idle one is closed once the grace is over', async () => {
  const { log, lines } = capturedLog();
  const serving = await serve((_req, res) => res.end('ok'), {
    port: 0,
    host: '127.0.0.1',
    shutdownTimeoutMs: 60_000,
    log,
  });
  servings.push(serving);
  const [used, unused] = [new RawConnection(serving.port), new RawConnection(serving.port)];
  open.push(used, unused);
  for (const c of [used, unused]) {
    await c.write('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n');
    await c.waitFor('\r\n\r\nok');
  }

  const closed = serving.close();
  await used.write('GET /again HTTP/1.1\r\nHost: localhost\r\n\r\n');
  await used.closed;
  assert.deepEqual(
    used.responses().map((r) => [r.status, r.headers.connection, r.body]),
    [
      [200, 'keep-alive', 'ok'],
      [200, 'close', 'ok'],
    ],
  );
  assert.ok(!lines.some((l) => l.startsWith('drain grace over')), 'answered within the grace');

  await unused.closed;
  await closed;
  assert.ok(lines.some((l) => l.startsWith('drain grace over')));
  assert.ok(!lines.some((l) => l.startsWith('shutdown timeout')), lines.join('\n'));
});
