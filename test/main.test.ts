import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, test } from 'node:test';
import { ConfigError, loadConfig } from '../src/config.js';
import { buildAdapters, buildFeatures } from '../src/features.js';
import { createLogger } from '../src/log.js';
import { startService } from '../src/main.js';
import { SqliteStore } from '../src/store/sqlite/sqlite-store.js';

const dir = mkdtempSync(join(tmpdir(), 'linkvault-main-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function quietLog() {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  return { log: createLogger({ level: 'info', destination }), lines };
}

test('when startService runs in-process, then it serves on a free port, logs its setup, and close() stops it and closes the store it opened', async () => {
  const config = loadConfig({ LINKVAULT_PORT: '0', LINKVAULT_HOST: '127.0.0.1' }, dir);
  const { log, lines } = quietLog();
  const service = await startService(config, { log });
  assert.match(service.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  const ready = await fetch(`${service.url}/readyz`);
  assert.equal(ready.status, 200);
  assert.deepEqual(await ready.json(), {
    status: 'ready',
    checks: { store: 'ok', keys: 'ok', accepting: 'ok' },
  });
  const messages = lines.map((l) => JSON.parse(l) as { msg: string });
  assert.ok(messages.some((m) => m.msg === 'store: SQLite file'));
  assert.ok(messages.some((m) => m.msg === 'key provider: local master key file'));
  assert.ok(
    messages.some(
      (m) =>
        m.msg.startsWith('DEVELOPMENT SETUP - NOT FOR PRODUCTION') &&
        m.msg.includes('docs/operations.md: "Moving to Redis and KMS"'),
    ),
  );

  await Promise.all([service.close(), service.close()]); // idempotent
  assert.equal(service.server.listening, false);
  await assert.rejects(fetch(`${service.url}/healthz`));
  // The SQLite file is released: another store opens it and answers.
  const reopened = new SqliteStore({
    path: config.store.kind === 'sqlite' ? config.store.sqlitePath : '',
  });
  await reopened.ping();
  await reopened.close();
});

test('when a store is passed in, then close() leaves it open for its owner', async () => {
  const config = loadConfig({ LINKVAULT_PORT: '0', LINKVAULT_HOST: '127.0.0.1' }, dir);
  const store = new SqliteStore({ path: join(dir, 'owned.db') });
  const service = await startService(config, { log: quietLog().log, store });
  await service.close();
  await store.ping();
  await store.close();
});

test('when the port is taken, then startService rejects with the listen error', async () => {
  const config = loadConfig({ LINKVAULT_PORT: '0', LINKVAULT_HOST: '127.0.0.1' }, dir);
  const firstStore = new SqliteStore({ path: join(dir, 'first.db') });
  const first = await startService(config, { log: quietLog().log, store: firstStore });
  const port = Number(new URL(first.url).port);
  const taken = loadConfig(
    {
      LINKVAULT_PORT: String(port),
      LINKVAULT_HOST: '127.0.0.1',
      LINKVAULT_SQLITE_PATH: 'second.db',
    },
    dir,
  );
  await assert.rejects(
    startService(taken, { log: quietLog().log }),
    (err: NodeJS.ErrnoException) => err.code === 'EADDRINUSE',
  );
  await first.close();
  await firstStore.close();
});

test('when the sandbox is on but its development dependency cannot be loaded, then the start fails with one line naming LINKVAULT_SANDBOX and the way out', async () => {
  const config = loadConfig(
    { LINKVAULT_PORT: '0', LINKVAULT_SANDBOX: 'true', LINKVAULT_SQLITE_PATH: 'sandbox-missing.db' },
    dir,
  );
  const adapters = await buildAdapters(config, { log: quietLog().log });
  try {
    const missing = Object.assign(new Error("Cannot find package 'oidc-provider'"), {
      code: 'ERR_MODULE_NOT_FOUND',
    });
    await assert.rejects(
      buildFeatures(adapters, { loadSandbox: () => Promise.reject(missing), startWorker: false }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.equal(err.variable, 'LINKVAULT_SANDBOX');
        assert.match(
          err.message,
          /install the development dependencies \(npm install\) or set LINKVAULT_SANDBOX=false/,
        );
        assert.doesNotMatch(err.message, /\n/);
        return true;
      },
    );
  } finally {
    await adapters.close();
  }
});
