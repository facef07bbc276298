import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { startServiceProcess, type ServiceProcess } from '../support/service-process.js';
import { RawConnection } from './raw-connection.js';

const started: ServiceProcess[] = [];
const dirs: string[] = [];
after(() => {
  for (const s of started) s.kill();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const CONNECTIONS = 8;
const TRIALS = 6;

const isShuttingDown = (l: Record<string, unknown>): boolean =>
  typeof l.msg === 'string' && l.msg.startsWith('shutting down');

type Outcome = 'answered' | 'reset' | 'closed without an answer';

/**
 * What the client got for the POST it sent on an idle keep-alive connection around SIGTERM. One
 * that reached the service before the signal was handled may be answered with keep-alive (the
 * connection is then closed while idle, once the drain grace ends); one that arrived during the
 * drain must be answered with Connection: close.
 */
async function sendAround(
  connection: RawConnection,
  id: string,
  drainBegun: boolean,
): Promise<Outcome> {
  await connection
    .write(
      `POST /v1/nothing-here HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 2\r\nX-Request-Id: ${id}\r\n\r\n{}`,
    )
    .catch(() => undefined); // a write refused by a closed socket shows below as no answer
  await connection.closed;
  const answer = connection.responses()[1];
  if (answer) {
    assert.equal(answer.status, 404);
    if (drainBegun) assert.equal(answer.headers.connection, 'close');
    assert.equal(answer.headers['x-request-id'], id);
    assert.equal((JSON.parse(answer.body) as { code: string }).code, 'not_found');
    return 'answered';
  }
  return connection.error?.code === 'ECONNRESET' || connection.error?.code === 'EPIPE'
    ? 'reset'
    : 'closed without an answer';
}

test(`when SIGTERM arrives while ${CONNECTIONS} keep-alive connections are idle and each sends a POST with the signal or once shutdown has begun, then every POST gets a whole answer (Connection: close once shutdown has begun) and the process exits 0 (${TRIALS} trials)`, async () => {
  const tally: Record<Outcome, number> = {
    answered: 0,
    reset: 0,
    'closed without an answer': 0,
  };
  for (let trial = 0; trial < TRIALS; trial++) {
    const cwd = mkdtempSync(join(tmpdir(), 'linkvault-drain-'));
    dirs.push(cwd);
    const service = await startServiceProcess({ cwd, env: { LINKVAULT_SANDBOX: 'false' } });
    started.push(service);

    const connections = Array.from({ length: CONNECTIONS }, () => new RawConnection(service.port));
    await Promise.all(
      connections.map(async (c) => {
        await c.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n');
        await c.waitFor('{"status":"ok"}');
      }),
    );
    assert.ok(connections.every((c) => c.responses()[0]?.headers.connection === 'keep-alive'));

    // Even trials send with the signal (racing its handling, as a client that has not yet
    // noticed would); odd trials send once the service has logged that shutdown has begun.
    const afterShutdownBegun = trial % 2 === 1;
    service.child.kill('SIGTERM');
    if (afterShutdownBegun) await service.waitForLine(isShuttingDown);
    const outcomes = await Promise.all(
      connections.map((c, i) => sendAround(c, `drain-${trial}-${i}`, afterShutdownBegun)),
    );
    for (const o of outcomes) tally[o]++;

    assert.deepEqual(await service.exited, { code: 0, signal: null });
    assert.equal(service.stderr(), '');
  }
  console.log(`requests sent on idle connections during the drain: ${JSON.stringify(tally)}`);
  assert.deepEqual(tally, {
    answered: CONNECTIONS * TRIALS,
    reset: 0,
    'closed without an answer': 0,
  });
});
