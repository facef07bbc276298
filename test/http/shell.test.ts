import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import express from 'express';
import request from 'supertest';
import { createApp, type AppDeps } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { LinkvaultError } from '../../src/errors.js';
import { LocalKeyProvider } from '../../src/keys/local-key-provider.js';
import { createLogger } from '../../src/log.js';
import { Metrics } from '../../src/metrics.js';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';
import { ROUTE_TABLE, type RouteSpec } from '../../src/http/route-table.js';

/** Collects log lines and lets a test await the line it expects (the request line is written on response close). */
class LogCapture extends Writable {
  readonly lines: Record<string, unknown>[] = [];
  readonly raw: string[] = [];
  #waiters: {
    match: (line: Record<string, unknown>) => boolean;
    resolve: (line: Record<string, unknown>) => void;
  }[] = [];

  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    for (const text of chunk.toString('utf8').split('\n').filter(Boolean)) {
      this.raw.push(text);
      const line = JSON.parse(text) as Record<string, unknown>;
      this.lines.push(line);
      this.#waiters = this.#waiters.filter((w) => {
        if (!w.match(line)) return true;
        w.resolve(line);
        return false;
      });
    }
    done();
  }

  /** Resolves with the first line (already written or still to come) that matches. */
  waitFor(match: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
    const found = this.lines.find(match);
    if (found) return Promise.resolve(found);
    return new Promise((resolve) => this.#waiters.push({ match, resolve }));
  }

  requestLine(requestId: string): Promise<Record<string, unknown>> {
    return this.waitFor((l) => l.msg === 'request' && l.request_id === requestId);
  }
}

const dir = mkdtempSync(join(tmpdir(), 'linkvault-shell-'));
const capture = new LogCapture();
const log = createLogger({ level: 'debug', destination: capture });
let store: SqliteStore;
let keys: LocalKeyProvider;
let metrics: Metrics;
let app: express.Express;

/** Routes a feature helper might mount: a parameterised route, one that throws, one that fails with a LinkvaultError. */
function featureRouter(): express.Router {
  const router = express.Router();
  router.get('/v1/links/:id', (req, res) => {
    res.json({ id: req.params.id });
  });
  router.post('/v1/echo', (req, res) => {
    res.status(201).json({ body: req.body ?? null });
  });
  router.get('/v1/boom', () => {
    throw new Error('database password is hunter2 at /srv/secret/path');
  });
  router.get('/v1/busy', async () => {
    // A provider-side 503: its detail and extra are for the caller. (Our own machinery's 5xx —
    // store, key service, audit, any 500 — answer with the title only: problem-internals.test.ts.)
    throw new LinkvaultError('provider_unavailable', {
      detail: 'try again shortly',
      retryAfterSeconds: 2.2,
      extra: { parameter: 'x', status: 999 },
    });
  });
  router.get('/v1/connect/:providerId', (_req, res) => {
    res.status(204).end();
  });
  router.get('/v1/oauth/callback/:providerId', (_req, res) => {
    res.status(204).end();
  });
  return router;
}

const GET = (path: string): RouteSpec => ({ ...ROUTE_TABLE[0]!, path });

function buildApp(overrides: Partial<AppDeps> = {}): express.Express {
  return createApp({
    config: loadConfig({}, dir),
    store,
    keys,
    metrics,
    log,
    routers: [featureRouter()],
    // The routes declared for Allow: the operations routes and the feature router's.
    routes: [
      ...ROUTE_TABLE.filter((r) => r.tag === 'operations'),
      ...(['/v1/links/{id}', '/v1/boom', '/v1/busy'] as const).map((path) => GET(path)),
      { ...GET('/v1/echo'), method: 'POST' as const },
    ],
    ...overrides,
  });
}

before(async () => {
  store = new SqliteStore({ path: join(dir, 'data/linkvault.db'), log });
  keys = await LocalKeyProvider.load({
    keyFile: join(dir, 'data/master.key'),
    mayGenerate: true,
    metrics: new Metrics(),
  });
  metrics = new Metrics();
  app = buildApp();
});

after(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

function problem(
  code: string,
  status: number,
  title: string,
  requestId: string,
  more: Record<string, unknown> = {},
) {
  return {
    type: `https://linkvault.dev/problems/${code.replaceAll('_', '-')}`,
    title,
    status,
    code,
    ...more,
    request_id: requestId,
  };
}

describe('request id', () => {
  test('when a request has no X-Request-Id, then a UUID is generated and echoed', async () => {
    const res = await request(app).get('/healthz');
    assert.match(res.headers['x-request-id']!, UUID);
  });

  test('when the inbound X-Request-Id is safe, then it is kept and echoed, and logged', async () => {
    const id = 'req_01HZX-abc.def:42/7+9=';
    const res = await request(app).get('/v1/links/l1').set('X-Request-Id', id);
    assert.equal(res.headers['x-request-id'], id);
    assert.equal((await capture.requestLine(id)).request_id, id);
  });

  for (const [what, id] of [
    ['is longer than 128 characters', 'a'.repeat(129)],
    ['contains a space', 'abc def'],
    ['contains a quote', 'abc"def'],
    ['contains a non-ASCII letter', 'abcé'],
    ['is empty', ''],
  ] as const) {
    test(`when the inbound X-Request-Id ${what}, then it is replaced by a generated one`, async () => {
      const res = await request(app).get('/healthz').set('X-Request-Id', id);
      assert.match(res.headers['x-request-id']!, UUID);
    });
  }

  test('when the response is an error, then the problem body carries the echoed request id', async () => {
    const res = await request(app).get('/nowhere').set('X-Request-Id', 'trace-404');
    assert.equal(res.headers['x-request-id'], 'trace-404');
    assert.equal(res.body.request_id, 'trace-404');
  });
});

describe('problem+json', () => {
  test('when no route matches, then 404 not_found as problem+json', async () => {
    const res = await request(app).get('/v2/whatever?code=abc').set('X-Request-Id', 'r404');
    assert.equal(res.status, 404);
    assert.match(res.headers['content-type']!, /^application\/problem\+json; charset=utf-8$/);
    assert.deepEqual(res.body, problem('not_found', 404, 'No such resource', 'r404'));
  });

  test('when the path exists under another method, then 405 method_not_allowed with Allow', async () => {
    const res = await request(app).delete('/v1/links/l1').set('X-Request-Id', 'r405');
    assert.equal(res.status, 405);
    assert.equal(res.headers.allow, 'GET, HEAD');
    assert.deepEqual(
      res.body,
      problem('method_not_allowed', 405, 'Method not allowed on this route', 'r405'),
    );
  });

  test('when /healthz is POSTed, then 405 with Allow: GET, HEAD', async () => {
    const res = await request(app).post('/healthz');
    assert.equal(res.status, 405);
    assert.equal(res.headers.allow, 'GET, HEAD');
  });

  test('when the body exceeds 16 kB, then 413 payload_too_large', async () => {
    const res = await request(app)
      .post('/v1/echo')
      .set('Content-Type', 'application/json')
      .set('X-Request-Id', 'r413')
      .send(JSON.stringify({ pad: 'x'.repeat(17 * 1024) }));
    assert.equal(res.status, 413);
    assert.deepEqual(
      res.body,
      problem('payload_too_large', 413, 'The request body is too large', 'r413', {
        detail: 'The request body exceeds the size limit',
      }),
    );
  });

  test('when the body is not JSON-typed, then 415 unsupported_media_type', async () => {
    const res = await request(app)
      .post('/v1/echo')
      .set('Content-Type', 'application/x-www-form-urlencoded')
      .set('X-Request-Id', 'r415')
      .send('a=1');
    assert.equal(res.status, 415);
    assert.deepEqual(
      res.body,
      problem('unsupported_media_type', 415, 'The request body must be application/json', 'r415'),
    );
  });

  test('when a body comes without any Content-Type, then 415 unsupported_media_type', async () => {
    const res = await request(app)
      .post('/v1/echo')
      .set('X-Request-Id', 'r415b')
      .serialize((x: string) => x)
      .send('{"a":1}')
      .unset('Content-Type');
    assert.equal(res.status, 415);
    assert.equal(res.body.code, 'unsupported_media_type');
  });

  test('when a path outside the /v1 API gets a form post, then the body is left for its own router to parse', async () => {
    const forms = express.Router();
    forms.post(
      '/sandbox/interaction/:uid/login',
      express.urlencoded({ extended: false }),
      (req, res) => {
        res.json({ form: req.body });
      },
    );
    const res = await request(buildApp({ routers: [featureRouter(), forms] }))
      .post('/sandbox/interaction/u1/login')
      .set('Content-Type', 'application/x-www-form-urlencoded')
      .send('login=alice');
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { form: { login: 'alice' } });
  });

  test('when a POST has no body at all, then the route runs with no body', async () => {
    const res = await request(app).post('/v1/echo');
    assert.equal(res.status, 201);
    assert.deepEqual(res.body, { body: null });
  });

  test('when the JSON is valid, then the route gets it parsed', async () => {
    const res = await request(app)
      .post('/v1/echo')
      .set('Content-Type', 'application/json; charset=utf-8')
      .send('{"a":[1,2]}');
    assert.equal(res.status, 201);
    assert.deepEqual(res.body, { body: { a: [1, 2] } });
  });

  test('when the JSON is malformed, then 400 invalid_request and the body is not logged', async () => {
    const canary = 'canary-refresh-token-0d1e2f';
    const res = await request(app)
      .post('/v1/echo')
      .set('Content-Type', 'application/json')
      .set('X-Request-Id', 'r400')
      .send(`{"refresh_token": "${canary}"`);
    assert.equal(res.status, 400);
    assert.deepEqual(
      res.body,
      problem(
        'invalid_request',
        400,
        'The request is malformed or has invalid parameters',
        'r400',
        { detail: 'The request body is not valid JSON' },
      ),
    );
    await capture.requestLine('r400');
    assert.ok(
      !capture.raw.some((l) => l.includes(canary)),
      'the malformed body never reaches the log',
    );
  });

  test('when the JSON is a bare string (not an object or array), then 400 invalid_request', async () => {
    const res = await request(app)
      .post('/v1/echo')
      .set('Content-Type', 'application/json')
      .send('"text"');
    assert.equal(res.status, 400);
    assert.equal(res.body.code, 'invalid_request');
  });

  test('when a path parameter cannot be decoded, then 400 invalid_request', async () => {
    const res = await request(app).get('/v1/links/%E0%A4%A');
    assert.equal(res.status, 400);
    assert.equal(res.body.code, 'invalid_request');
  });

  test('when a route throws an unknown error, then 500 internal_error with nothing internal, and the cause is logged', async () => {
    const res = await request(app).get('/v1/boom').set('X-Request-Id', 'r500');
    assert.equal(res.status, 500);
    assert.deepEqual(res.body, problem('internal_error', 500, 'Internal error', 'r500'));
    assert.doesNotMatch(res.text, /hunter2|secret|stack|Error:/);
    const logged = await capture.waitFor(
      (l) => l.request_id === 'r500' && l.msg === 'request failed',
    );
    assert.equal(logged.level, 50);
    assert.equal(logged.error_code, 'internal_error');
    assert.match(JSON.stringify(logged.err), /hunter2/, 'the cause goes to the log');
  });

  test('when a route fails with a LinkvaultError, then its status, detail, extra and Retry-After are sent', async () => {
    const res = await request(app).get('/v1/busy').set('X-Request-Id', 'r503');
    assert.equal(res.status, 503);
    assert.equal(res.headers['retry-after'], '3');
    // `extra` never overrides a standard member (its `status: 999` is dropped).
    assert.deepEqual(
      res.body,
      problem('provider_unavailable', 503, 'The provider is unavailable; retry later', 'r503', {
        parameter: 'x',
        detail: 'try again shortly',
      }),
    );
  });
});

describe('security headers', () => {
  const expectBase = (res: request.Response) => {
    assert.equal(res.headers['x-content-type-options'], 'nosniff');
    assert.equal(res.headers['referrer-policy'], 'no-referrer');
    assert.equal(res.headers['x-frame-options'], 'DENY');
    assert.equal(
      res.headers['content-security-policy'],
      "default-src 'none'; frame-ancestors 'none'",
    );
    assert.equal(res.headers['x-powered-by'], undefined);
    assert.equal(res.headers.etag, undefined);
  };

  test('when any response is sent (success or error), then the base security headers are on it and X-Powered-By is not', async () => {
    expectBase(await request(app).get('/healthz'));
    expectBase(await request(app).get('/v1/links/l1'));
    expectBase(await request(app).get('/nope'));
    expectBase(await request(app).get('/v1/boom'));
  });

  test('when the path is under /v1, then Cache-Control: no-store', async () => {
    assert.equal((await request(app).get('/v1/links/l1')).headers['cache-control'], 'no-store');
    assert.equal((await request(app).get('/v1/nothing')).headers['cache-control'], 'no-store');
  });

  test('when the public URL is http, then no Strict-Transport-Security', async () => {
    assert.equal(
      (await request(app).get('/healthz')).headers['strict-transport-security'],
      undefined,
    );
  });

  test('when the public URL is https, then Strict-Transport-Security is sent', async () => {
    const httpsApp = createApp({
      config: loadConfig({ LINKVAULT_PUBLIC_URL: 'https://vault.example.com' }, dir),
      store,
      keys,
      metrics: new Metrics(),
      log,
    });
    assert.equal(
      (await request(httpsApp).get('/healthz')).headers['strict-transport-security'],
      'max-age=31536000',
    );
  });
});

describe('operational routes', () => {
  test('when /healthz is asked, then 200 {status: ok}', async () => {
    const res = await request(app).get('/healthz');
    assert.equal(res.status, 200);
    assert.match(res.headers['content-type']!, /^application\/json/);
    assert.deepEqual(res.body, { status: 'ok' });
  });

  test('when the store and the key provider answer, then /readyz is 200 with every check ok', async () => {
    const res = await request(app).get('/readyz');
    assert.equal(res.status, 200);
    assert.equal(res.headers['cache-control'], 'no-store');
    assert.deepEqual(res.body, { status: 'ready', checks: { store: 'ok', keys: 'ok' } });
  });

  test('when an extra readiness check hangs, then /readyz is 503 naming it as timed out, within the bound', async () => {
    const hanging = buildApp({
      readiness: [{ name: 'oauth', check: () => new Promise<void>(() => {}) }],
      readinessTimeoutMs: 100,
    });
    const started = Date.now();
    const res = await request(hanging).get('/readyz').set('X-Request-Id', 'ready-timeout');
    assert.ok(Date.now() - started < 2000);
    assert.equal(res.status, 503);
    assert.deepEqual(
      res.body,
      problem('not_ready', 503, 'A dependency of the service is not ready', 'ready-timeout', {
        detail: 'Not ready: oauth',
        checks: { store: 'ok', keys: 'ok', oauth: 'timeout' },
      }),
    );
  });

  test('when the store is closed, then /readyz is 503 naming the store and nothing internal', async () => {
    const brokenStore = new SqliteStore({ path: join(dir, 'closed.db') });
    await brokenStore.close();
    const broken = buildApp({ store: brokenStore });
    const res = await request(broken).get('/readyz').set('X-Request-Id', 'ready-503');
    assert.equal(res.status, 503);
    assert.match(res.headers['content-type']!, /^application\/problem\+json/);
    assert.deepEqual(
      res.body,
      problem('not_ready', 503, 'A dependency of the service is not ready', 'ready-503', {
        detail: 'Not ready: store',
        checks: { store: 'failed', keys: 'ok' },
      }),
    );
    assert.doesNotMatch(res.text, /closed|sqlite|\.db/);
  });

  test('when /metrics is asked, then Prometheus text 0.0.4 labelled by route template, never by raw path', async () => {
    await request(app).get('/v1/links/link-abc-123');
    await request(app).get('/v1/connect/hubspot?session=sess-canary-777');
    await request(app).get('/v1/unknown-thing-42');
    const res = await request(app).get('/metrics');
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
    assert.match(res.text, /^# HELP linkvault_http_requests_total /m);
    assert.match(res.text, /^# TYPE linkvault_http_requests_total counter$/m);
    assert.match(
      res.text,
      /^linkvault_http_requests_total\{route="\/v1\/links\/:id",method="GET",status="200"\} \d+$/m,
    );
    assert.match(
      res.text,
      /^linkvault_http_requests_total\{route="\/v1\/connect\/:providerId",method="GET",status="204"\} \d+$/m,
    );
    assert.match(
      res.text,
      /^linkvault_http_requests_total\{route="unmatched",method="GET",status="404"\} \d+$/m,
    );
    assert.match(
      res.text,
      /^linkvault_http_request_duration_seconds_bucket\{route="\/v1\/links\/:id",method="GET",le="\+Inf"\} \d+$/m,
    );
    assert.doesNotMatch(res.text, /link-abc-123|sess-canary-777|unknown-thing-42|hubspot/);
  });

  test('when the method is not a known one, then it is labelled OTHER', async () => {
    await request(app).purge('/v1/links/x');
    const res = await request(app).get('/metrics');
    assert.match(res.text, /method="OTHER"/);
    assert.doesNotMatch(res.text, /method="PURGE"/);
  });
});

describe('request log', () => {
  test('when a request is logged, then only allowlisted fields appear', async () => {
    await request(app)
      .get('/v1/links/l-77')
      .set('X-Request-Id', 'log-fields')
      .set('User-Agent', 'test-agent/1');
    const line = await capture.requestLine('log-fields');
    assert.deepEqual(Object.keys(line).sort(), [
      'duration_ms',
      'level',
      'method',
      'msg',
      'request_bytes',
      'request_id',
      'route',
      'service',
      'status',
      'time',
      'user_agent',
    ]);
    assert.equal(line.route, '/v1/links/:id');
    assert.equal(line.status, '200');
    assert.equal(line.user_agent, 'test-agent/1');
  });

  test('when secrets travel in the query, headers or body, then none reaches the log or the response', async () => {
    const canaries = [
      'canary-session-5a1',
      'canary-code-6b2',
      'canary-state-7c3',
      'canary-bearer-8d4',
      'canary-cookie-9e5',
      'canary-body-af6',
    ];
    const [session, code, state, bearer, cookie, body] = canaries;
    const r1 = await request(app)
      .get(`/v1/connect/sandbox?session=${session}`)
      .set('X-Request-Id', 'canary-1')
      .set('Authorization', `Bearer ${bearer}`);
    const r2 = await request(app)
      .get(`/v1/oauth/callback/sandbox?code=${code}&state=${state}`)
      .set('X-Request-Id', 'canary-2')
      .set('Cookie', `lv_flow=${cookie}`);
    const r3 = await request(app)
      .post('/v1/echo?x=1')
      .set('X-Request-Id', 'canary-3')
      .set('Content-Type', 'text/plain')
      .send(body);
    await Promise.all(['canary-1', 'canary-2', 'canary-3'].map((id) => capture.requestLine(id)));
    for (const res of [r1, r2, r3]) for (const c of canaries) assert.ok(!res.text.includes(c));
    const leaked = canaries.filter((c) => capture.raw.some((l) => l.includes(c)));
    assert.deepEqual(leaked, []);
  });

  test('when a caller logs a secret-named field, then a top-level secret is censored and nested provider answers (cause, response, body, headers) are not logged at all', () => {
    log.info(
      {
        access_token: 'redact-me-1',
        cause: {
          refresh_token: 'redact-me-2',
          response: { body: { id_token: 'redact-me-3', code: 'redact-me-4' } },
        },
        headers: { authorization: 'redact-me-5', 'set-cookie': 'redact-me-6' },
      },
      'redaction probe',
    );
    const line = capture.raw.find((l) => l.includes('redaction probe'))!;
    assert.doesNotMatch(line, /redact-me/);
    assert.match(line, /\[redacted\]/);
  });
});
