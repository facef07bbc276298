import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { LocalKeyProvider } from '../../src/keys/local-key-provider.js';
import { createVault } from '../../src/keys/vault.js';
import { Metrics } from '../../src/metrics.js';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';
import type { LinkRecord } from '../../src/links/link.js';
import { startServiceProcess, type ServiceProcess } from '../support/service-process.js';
import { RawConnection, tryConnect } from './raw-connection.js';

const started: ServiceProcess[] = [];
const dirs: string[] = [];
after(() => {
  for (const s of started) s.kill();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'linkvault-shutdown-'));
  dirs.push(dir);
  return dir;
}

async function start(cwd: string, env: Record<string, string> = {}): Promise<ServiceProcess> {
  // The sandbox's node-oidc-provider writes its own start-up warnings to stderr (an in-memory
  // adapter, and Node 20); these tests assert that linkvault itself writes nothing there.
  const service = await startServiceProcess({ cwd, env: { LINKVAULT_SANDBOX: 'false', ...env } });
  started.push(service);
  return service;
}

const isShuttingDown = (l: Record<string, unknown>): boolean =>
  typeof l.msg === 'string' && l.msg.startsWith('shutting down');

function link(id: string, tokens: LinkRecord['tokens']): LinkRecord {
  const now = Date.now();
  return {
    id,
    tenantId: 'tenant-1',
    userId: 'user-1',
    providerId: 'sandbox',
    status: 'active',
    version: 0,
    providerAccountId: 'acct-1',
    grantedScopes: ['contacts.read'],
    metadata: { instance: 'one' },
    endpointVariables: {},
    tokens,
    accessTokenExpiresAtMs: now + 3_600_000,
    createdAtMs: now,
    updatedAtMs: now,
    lastRefreshedAtMs: null,
    lastUsedAtMs: null,
  };
}

describe('graceful shutdown of the real process', () => {
  test('when SIGTERM arrives mid-request, then the request completes, new connections are refused, idle keep-alive sockets close once the drain grace is over, and it exits 0 with the SQLite file intact; a restart keeps the data and the key', async () => {
    const cwd = tempDir();
    const env = { LINKVAULT_SHUTDOWN_TIMEOUT_SECONDS: '30' };

    // First start: generates the development key and creates the database.
    const first = await start(cwd, env);
    const keyFile = join(cwd, 'data/master.key');
    const keyBytes = readFileSync(keyFile);

    // An idle keep-alive connection: kept open for the drain grace (half the shutdown timeout, at
    // most 5 s) in case a request is on its way over it, then closed; it must not hold shutdown open.
    const idle = new RawConnection(first.port);
    await idle.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n');
    await idle.waitFor('{"status":"ok"}');

    // A request in flight: headers sent, the server has begun it (100 Continue proves it), body withheld.
    const inFlight = new RawConnection(first.port);
    await inFlight.write(
      'POST /v1/nothing-here HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 2\r\nExpect: 100-continue\r\nX-Request-Id: in-flight-1\r\n\r\n',
    );
    await inFlight.waitFor('HTTP/1.1 100 Continue\r\n\r\n');

    const signalledAt = Date.now();
    first.child.kill('SIGTERM');
    await first.waitForLine(isShuttingDown);

    assert.equal(
      await tryConnect(first.port),
      'ECONNREFUSED',
      'no new connections once shutdown has begun',
    );
    await idle.closed; // the server closed the idle keep-alive connection after the grace
    assert.equal(idle.received.split('HTTP/1.1 ').length, 2, 'one answer, then closed');

    await inFlight.write('{}');
    await inFlight.closed;
    const reply = inFlight.received.slice(inFlight.received.indexOf('\r\n\r\n') + 4);
    assert.match(reply, /^HTTP\/1\.1 404 Not Found\r\n/);
    assert.match(reply, /\r\nConnection: close\r\n/i);
    assert.match(reply, /\r\nX-Request-Id: in-flight-1\r\n/);
    assert.match(reply, /"code":"not_found"/);

    const exit = await first.exited;
    assert.deepEqual(exit, { code: 0, signal: null });
    assert.ok(Date.now() - signalledAt < 10_000, 'exited well before the 30 s shutdown timeout');
    assert.ok(first.lines.some((l) => l.msg === 'stopped'));
    assert.equal(first.stderr(), '');

    const db = new Database(join(cwd, 'data/linkvault.db'), { readonly: true });
    try {
      assert.equal(db.pragma('integrity_check', { simple: true }), 'ok');
    } finally {
      db.close();
    }

    // Data written between runs (a sealed token set under the generated key) survives a restart.
    const metrics = new Metrics();
    const keys = await LocalKeyProvider.load({ keyFile, mayGenerate: false, metrics });
    const vault = createVault({ keys, metrics, maxEntries: 0, maxAgeMs: 0 });
    const identity = {
      tenant: 'tenant-1',
      link: 'link-restart',
      provider: 'sandbox',
      field: 'tokens',
    };
    const sealed = await vault.seal(
      identity,
      Buffer.from('{"access_token":"a","refresh_token":"r"}'),
    );
    let store = new SqliteStore({ path: join(cwd, 'data/linkvault.db') });
    const saved = await store.saveLink(link('link-restart', sealed), null);
    assert.ok(saved);
    await store.close();

    const second = await start(cwd, env);
    const ready = await fetch(`${second.url}/readyz`);
    assert.equal(ready.status, 200);
    assert.ok(
      !second.lines.some((l) => typeof l.msg === 'string' && l.msg.includes('GENERATED')),
      'the restart does not generate a new key',
    );
    second.child.kill('SIGTERM');
    assert.deepEqual(await second.exited, { code: 0, signal: null });

    assert.deepEqual(readFileSync(keyFile), keyBytes, 'the master key file is unchanged');
    store = new SqliteStore({ path: join(cwd, 'data/linkvault.db') });
    try {
      const reread = await store.getLink('link-restart');
      assert.deepEqual(reread, saved);
      assert.equal(
        (await vault.open(identity, reread!.tokens!)).toString(),
        '{"access_token":"a","refresh_token":"r"}',
      );
    } finally {
      await store.close();
    }
  });

  test('when a request is still in flight at the shutdown timeout, then its connection is closed and the process still exits 0 (SIGINT too)', async () => {
    const cwd = tempDir();
    const service = await start(cwd, { LINKVAULT_SHUTDOWN_TIMEOUT_SECONDS: '1' });

    const stuck = new RawConnection(service.port);
    await stuck.write(
      'POST /v1/never HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n',
    );
    await stuck.waitFor('HTTP/1.1 100 Continue\r\n\r\n');

    const signalledAt = Date.now();
    service.child.kill('SIGINT');
    await stuck.closed;
    assert.doesNotMatch(
      stuck.received,
      /HTTP\/1\.1 [2-5]\d\d/,
      'the stuck request got no response; its socket was destroyed',
    );
    assert.deepEqual(await service.exited, { code: 0, signal: null });
    const elapsed = Date.now() - signalledAt;
    assert.ok(
      elapsed >= 900 && elapsed < 8000,
      `exited after the 1 s timeout, not long after (took ${elapsed} ms)`,
    );
    assert.ok(
      service.lines.some((l) => typeof l.msg === 'string' && l.msg.startsWith('shutdown timeout')),
    );
    assert.equal(service.stderr(), '');
  });
});
