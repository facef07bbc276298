import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { signDevToken } from '../src/auth/dev-service.js';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { startService, type RunningService } from '../src/main.js';
import { freePort } from './support/free-port.js';
import { runWalkthrough, type WalkthroughResult } from './ops/walkthrough.js';

/**
 * The log as docs/monitoring.md documents it, read from a real service (the development setup:
 * SQLite, a local key, the in-process Sandbox CRM) through the README's walkthrough: every line is
 * one JSON object with the documented fields and types, snake_case names, status as a number,
 * probes and static files at debug, the sandbox's routes by name, and oidc-provider's notices
 * inside the stream instead of as plain text.
 */

const SNAKE = /^[a-z][a-z0-9_]*$/;
const DEBUG = 20;
const INFO = 30;

/** Request routes docs/monitoring.md says are logged at debug when they succeed. */
const QUIET = new Set([
  '/healthz',
  '/readyz',
  '/metrics',
  '/favicon.ico',
  '/assets/:name',
  '/sdk/connect.v1.js',
]);

describe('when the sandbox walkthrough runs against a service logging at debug', () => {
  const dir = mkdtempSync(join(tmpdir(), 'linkvault-log-shape-'));
  const raw: string[] = [];
  let service: RunningService;
  let walk: WalkthroughResult;
  let lines: Record<string, unknown>[];

  before(async () => {
    const port = await freePort();
    const config = loadConfig(
      {
        LINKVAULT_PORT: String(port),
        LINKVAULT_PUBLIC_URL: `http://127.0.0.1:${port}`,
        LINKVAULT_LOG_LEVEL: 'debug',
      },
      dir,
    );
    const log = createLogger({
      level: 'debug',
      destination: { write: (s: string) => void raw.push(s) },
    });
    service = await startService(config, { log });
    walk = await runWalkthrough(service.url, signDevToken(config));
    await service.close();
    lines = raw.map((s) => JSON.parse(s) as Record<string, unknown>);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('then the walkthrough itself worked, ending with a call to the sandbox API', () => {
    assert.equal(walk.contacts.status, 200);
    assert.equal(walk.contacts.body.account_id, 'ada');
  });

  test('then every line is one JSON object with level, time, service and msg, and snake_case names', () => {
    assert.ok(raw.length > 20, `only ${raw.length} lines`);
    for (const [i, text] of raw.entries()) {
      assert.ok(text.endsWith('\n') && !text.slice(0, -1).includes('\n'), `line ${i} is one line`);
      const line = lines[i]!;
      assert.equal(typeof line.level, 'number');
      assert.equal(typeof line.time, 'string');
      assert.ok(!Number.isNaN(Date.parse(line.time as string)));
      assert.equal(line.service, 'linkvault');
      assert.equal(typeof line.msg, 'string');
      for (const key of Object.keys(line))
        assert.match(key, SNAKE, `field ${key} of "${String(line.msg)}"`);
    }
  });

  test('then each request line has the documented fields and types, status a number', () => {
    const requests = lines.filter((l) => l.msg === 'request');
    assert.ok(requests.length >= 20);
    for (const line of requests) {
      assert.deepEqual(
        Object.keys(line)
          .filter((k) => !['level', 'time', 'service', 'msg'].includes(k))
          .sort(),
        ['duration_ms', 'method', 'request_bytes', 'request_id', 'route', 'status', 'user_agent'],
      );
      assert.equal(typeof line.request_id, 'string');
      assert.equal(typeof line.method, 'string');
      assert.equal(typeof line.route, 'string');
      assert.ok(Number.isInteger(line.status), `status ${String(line.status)}`);
      assert.equal(typeof line.duration_ms, 'number');
      assert.equal(typeof line.user_agent, 'string');
      assert.equal(typeof line.request_bytes, 'number');
    }
  });

  test('then probes and static files are at debug and everything else at info', () => {
    const requests = lines.filter((l) => l.msg === 'request');
    const routes = new Set(requests.map((l) => l.route));
    for (const quiet of QUIET) assert.ok(routes.has(quiet), `the walkthrough requested ${quiet}`);
    for (const line of requests) {
      const expected = QUIET.has(line.route as string) ? DEBUG : INFO;
      assert.equal(line.level, expected, `${String(line.route)} ${String(line.status)}`);
    }
  });

  test('then the sandbox routes are logged by name, never as unmatched, and nothing is', () => {
    const requests = lines.filter((l) => l.msg === 'request');
    const routes = new Set(requests.map((l) => String(l.route)));
    assert.ok(!routes.has('unmatched'), [...routes].join(', '));
    for (const route of [
      '/',
      '/sandbox/auth',
      '/sandbox/auth/:uid',
      '/sandbox/token',
      '/sandbox/.well-known/openid-configuration',
      '/sandbox/interaction/:uid',
      '/sandbox/interaction/:uid/login',
      '/sandbox/api/contacts',
    ])
      assert.ok(routes.has(route), `${route} among ${[...routes].join(', ')}`);
  });

  test("then oidc-provider's notices are lines of the log at debug, with a reason", () => {
    const notices = lines.filter((l) => l.msg === 'sandbox provider: oidc-provider notice');
    assert.ok(
      notices.some((l) => /in-memory adapter/.test(String(l.notice))),
      'the in-memory adapter notice',
    );
    if (Number(process.versions.node.split('.')[0]) < 22)
      assert.ok(notices.some((l) => /Unsupported runtime/.test(String(l.notice))));
    for (const line of notices) {
      assert.equal(line.level, DEBUG);
      assert.equal(typeof line.reason, 'string');
    }
  });

  test('then no token the walkthrough handled is in the log', () => {
    const text = raw.join('');
    for (const secret of [walk.sessionToken, walk.accessToken])
      assert.ok(!text.includes(secret), 'a token reached the log');
  });
});
