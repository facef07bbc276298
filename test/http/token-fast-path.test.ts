import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import request, { type Response } from 'supertest';
import type { Express } from 'express';
import { createApp } from '../../src/app.js';
import { LinkvaultError } from '../../src/errors.js';
import { createTokenFastPath } from '../../src/http/token-fast-path.js';
import { createTokenRouter } from '../../src/http/token-routes.js';
import type { Metrics } from '../../src/metrics.js';
import type { Store } from '../../src/store/store.js';
import { createReleaseHarness, type ReleaseHarness } from '../support/release-harness.js';

/**
 * The token fast path answers exactly as the Express route: every case is sent to the Express
 * app alone and to fast path + Express, and the answers must match (status, body without the
 * request id, the headers that matter, HSTS on and off), and so must what each path leaves
 * behind: the level of the request and problem log lines, and the labels of the request counted.
 * Plain cases must be taken by the fast path; unusual ones must be left to Express.
 */

const HEADERS = [
  'strict-transport-security',
  'content-type',
  'cache-control',
  'pragma',
  'x-content-type-options',
  'referrer-policy',
  'x-frame-options',
  'content-security-policy',
  'www-authenticate',
  'retry-after',
  'allow',
];

function normalise(res: Response): Record<string, unknown> {
  const headers: Record<string, unknown> = {};
  for (const h of HEADERS) headers[h] = res.headers[h];
  const body = res.headers['content-type']?.includes('json')
    ? { ...(res.body as Record<string, unknown>) }
    : res.text;
  if (typeof body === 'object') {
    assert.equal(
      body.request_id ?? res.headers['x-request-id'],
      res.headers['x-request-id'],
      'problem bodies carry the response’s request id',
    );
    delete body.request_id;
  }
  return { status: res.status, headers, body };
}

/** The log lines a request leaves that the two paths must agree on, as `msg@level`. */
const OBSERVED_LINES = new Set(['request', 'request failed', 'request rejected']);

interface Observed {
  readonly res: Response;
  /** `msg@level` of the request and problem lines, in order. */
  readonly lines: readonly string[];
  /** The http request counter's label sets incremented, as rendered. */
  readonly counted: readonly string[];
}

function countedRequests(metrics: Metrics): Map<string, number> {
  const values = new Map<string, number>();
  for (const line of metrics.httpRequests.render().split('\n')) {
    if (line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    values.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return values;
}

/** Sends one request and collects its log lines (once the request line is written on close) and counter increments. */
async function observe(
  logText: () => string,
  metrics: Metrics,
  send: () => PromiseLike<Response>,
): Promise<Observed> {
  const from = logText().length;
  const before = countedRequests(metrics);
  const res = await send();
  for (let i = 0; i < 200 && !logText().slice(from).includes('"msg":"request"'); i++)
    await new Promise((r) => setTimeout(r, 5));
  const lines: string[] = [];
  for (const raw of logText().slice(from).split('\n')) {
    if (raw === '') continue;
    const line = JSON.parse(raw) as { msg?: string; level?: unknown };
    if (line.msg !== undefined && OBSERVED_LINES.has(line.msg))
      lines.push(`${line.msg}@${String(line.level)}`);
  }
  const counted: string[] = [];
  for (const [labels, n] of countedRequests(metrics))
    if (n !== (before.get(labels) ?? 0)) counted.push(labels);
  return { res, lines, counted };
}

describe('token fast path', () => {
  let h: ReleaseHarness;
  let taken = 0;
  let listener: (req: IncomingMessage, res: ServerResponse) => void;
  let linkId: string;

  before(async () => {
    h = await createReleaseHarness();
    const fast = createTokenFastPath({
      auth: h.auth,
      release: h.release,
      metrics: h.metrics,
      log: h.log,
      hsts: false,
    });
    listener = (req, res) => {
      if (fast(req, res)) taken++;
      else h.app(req, res);
    };
    const link = await h.seedLink({ accessToken: 'fast-path-access-token' });
    linkId = link.id;
    await h.addGrant({ serviceId: 'billing', linkId });
  });
  after(() => h.close());

  interface Case {
    readonly name: string;
    readonly method?: 'post' | 'get';
    readonly path?: string;
    readonly headers?: Record<string, string>;
    readonly body?: string | undefined;
    readonly auth?: string | null;
    /** Whether the fast path must take it (else Express must). */
    readonly fast: boolean;
  }

  const cases = (): Case[] => [
    { name: 'happy path', body: '{}', fast: true },
    { name: 'with options', body: '{"min_validity_seconds":30,"scopes":["read"]}', fast: true },
    {
      name: 'no body (the client still declares Content-Length: 0)',
      body: undefined,
      headers: {},
      fast: true,
    },
    { name: 'invalid JSON', body: '{', fast: true },
    { name: 'JSON null', body: 'null', fast: true },
    { name: 'JSON string', body: '"x"', fast: true },
    { name: 'JSON array', body: '[1]', fast: true },
    { name: 'unknown member', body: '{"nope":1}', fast: true },
    { name: 'out of range', body: '{"min_validity_seconds":99999}', fast: true },
    { name: 'no Authorization', body: '{}', auth: null, fast: true },
    { name: 'bad Authorization', body: '{}', auth: 'Bearer abc.def.ghi', fast: true },
    {
      name: 'service without the tokens role',
      body: '{}',
      auth: h.services.bearer('auditor-hs'),
      fast: true,
    },
    { name: 'unknown link', body: '{}', path: '/v1/links/lnk_nope/token', fast: true },
    { name: 'no grant', body: '{}', auth: h.services.bearer('crm-hs'), fast: true },
    { name: 'query string', body: '{}', path: `/v1/links/${linkId}/token?x=1`, fast: true },
    {
      name: 'charset utf-8',
      body: '{}',
      headers: { 'content-type': 'application/json; charset=utf-8' },
      fast: true,
    },
    {
      name: 'inbound request id',
      body: '{}',
      headers: { 'x-request-id': 'caller-id-123' },
      fast: true,
    },
    {
      name: 'unsafe inbound request id',
      body: '{}',
      headers: { 'x-request-id': 'bad id\twith tab' },
      fast: true,
    },
    {
      name: 'text/plain body',
      body: 'hello',
      headers: { 'content-type': 'text/plain' },
      fast: false,
    },
    {
      name: 'latin-1 JSON',
      body: '{}',
      headers: { 'content-type': 'application/json; charset=iso-8859-1' },
      fast: false,
    },
    {
      name: 'declared empty body without a type',
      body: undefined,
      headers: { 'content-length': '0' },
      fast: true,
    },
    {
      name: 'empty body typed text/plain (fetch with body "")',
      body: undefined,
      headers: { 'content-type': 'text/plain;charset=UTF-8', 'content-length': '0' },
      fast: true,
    },
    {
      name: 'empty body typed as a form (curl -d "")',
      body: undefined,
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': '0' },
      fast: true,
    },
    { name: 'empty body typed JSON', body: '', fast: true },
    {
      name: 'empty body typed latin-1 JSON',
      body: undefined,
      headers: { 'content-type': 'application/json; charset=iso-8859-1', 'content-length': '0' },
      fast: false,
    },
    {
      name: 'form body',
      body: 'a=1',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      fast: false,
    },
    { name: 'oversized body', body: JSON.stringify({ scopes: ['x'.repeat(20_000)] }), fast: false },
    { name: 'trailing slash', body: '{}', path: `/v1/links/${linkId}/token/`, fast: false },
    { name: 'upper-case path', body: '{}', path: `/V1/LINKS/${linkId}/TOKEN`, fast: false },
    {
      name: 'percent-encoded id',
      body: '{}',
      path: `/v1/links/${encodeURIComponent(linkId).replace('_', '%5F')}/token`,
      fast: false,
    },
    { name: 'GET', method: 'get', fast: false },
  ];

  function send(target: Parameters<typeof request>[0], c: Case) {
    let req = request(target)[c.method ?? 'post'](c.path ?? `/v1/links/${linkId}/token`);
    const auth = c.auth === undefined ? h.services.bearer('billing-hs') : c.auth;
    if (auth !== null) req = req.set('Authorization', auth);
    if (c.body !== undefined) req = req.set('Content-Type', 'application/json');
    for (const [k, v] of Object.entries(c.headers ?? {})) req = req.set(k, v);
    return c.body === undefined ? req : req.send(c.body);
  }

  /** Every case through `app` alone and through `fast` in front of it: same answer, log levels and counted labels. */
  async function compareAll(
    app: Express,
    fast: (req: IncomingMessage, res: ServerResponse) => boolean,
    hsts: boolean,
  ): Promise<void> {
    const both = (req: IncomingMessage, res: ServerResponse) => {
      if (fast(req, res)) taken++;
      else app(req, res);
    };
    for (const c of cases()) {
      const name = `${c.name} (hsts ${hsts ? 'on' : 'off'})`;
      const viaExpress = await observe(h.logText, h.metrics, () => send(app, c));
      const before = taken;
      const viaFast = await observe(h.logText, h.metrics, () => send(both, c));
      assert.equal(
        taken - before,
        c.fast ? 1 : 0,
        `${name}: ${c.fast ? 'the fast path must take it' : 'Express must take it'}`,
      );
      assert.deepEqual(normalise(viaFast.res), normalise(viaExpress.res), name);
      assert.equal(
        viaFast.res.headers['strict-transport-security'],
        hsts ? 'max-age=31536000' : undefined,
        `${name}: HSTS`,
      );
      assert.deepEqual(viaFast.lines, viaExpress.lines, `${name}: log lines and levels`);
      assert.ok(
        viaExpress.lines.some((l) => l.startsWith('request@')),
        `${name}: a request line is logged`,
      );
      assert.deepEqual(viaFast.counted, viaExpress.counted, `${name}: counted labels`);
      assert.equal(viaExpress.counted.length, 1, `${name}: one request counted`);
    }
  }

  it('when HSTS is on, then each case answers, logs and counts identically on both paths, HSTS included', async () => {
    const app = createApp({
      config: { ...h.config, publicUrl: 'https://linkvault.example' },
      store: h.store,
      keys: h.keys,
      metrics: h.metrics,
      log: h.log,
      routers: [createTokenRouter({ auth: h.auth, release: h.release })],
    });
    await compareAll(
      app,
      createTokenFastPath({
        auth: h.auth,
        release: h.release,
        metrics: h.metrics,
        log: h.log,
        hsts: true,
      }),
      true,
    );
  });

  it('when each case is sent to Express alone and to the fast path, then the answers are identical', async () => {
    await compareAll(
      h.app,
      createTokenFastPath({
        auth: h.auth,
        release: h.release,
        metrics: h.metrics,
        log: h.log,
        hsts: false,
      }),
      false,
    );
    for (const c of cases()) {
      const viaExpress = await send(h.app, c);
      const before = taken;
      const viaFast = await send(listener, c);
      assert.equal(
        taken - before,
        c.fast ? 1 : 0,
        `${c.name}: ${c.fast ? 'the fast path must take it' : 'Express must take it'}`,
      );
      assert.deepEqual(normalise(viaFast), normalise(viaExpress), c.name);
      if (c.headers?.['x-request-id'] === 'caller-id-123')
        assert.equal(viaFast.headers['x-request-id'], 'caller-id-123');
      if (c.headers?.['x-request-id']?.includes('\t'))
        assert.match(viaFast.headers['x-request-id'] ?? '', /^[0-9a-f-]{36}$/);
    }
    const ok = await send(listener, { name: 'happy', body: '{}', fast: true });
    assert.equal(ok.body.access_token, 'fast-path-access-token');
  });

  it('when a POST carries no content, then whatever Content-Type it declares it is no body: the token is released on both paths', async () => {
    const empties: Record<string, string>[] = [
      { 'content-length': '0' },
      {},
      { 'content-type': 'text/plain;charset=UTF-8', 'content-length': '0' },
      { 'content-type': 'application/x-www-form-urlencoded', 'content-length': '0' },
      { 'content-type': 'application/json', 'content-length': '0' },
    ];
    for (const headers of empties) {
      for (const [name, target] of [
        ['Express', h.app],
        ['fast path', listener],
      ] as const) {
        const res = await send(target, { name: 'empty', body: undefined, headers, fast: true });
        assert.equal(
          res.status,
          200,
          `${name} ${JSON.stringify(headers)}: ${res.status} ${res.text}`,
        );
        assert.equal(res.body.access_token, 'fast-path-access-token');
      }
    }
    // A body is still a body: a non-JSON one stays 415.
    const form = await send(listener, {
      name: 'form',
      body: 'a=1',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      fast: false,
    });
    assert.equal(form.status, 415);
  });

  it('when the fast path answers, then the request is counted and logged under the route template', async () => {
    const before = h.metrics.httpRequests.get({
      route: '/v1/links/:id/token',
      method: 'POST',
      status: '200',
    });
    await send(listener, { name: 'happy', body: '{}', fast: true });
    assert.equal(
      h.metrics.httpRequests.get({ route: '/v1/links/:id/token', method: 'POST', status: '200' }),
      before + 1,
    );
    assert.ok(!h.logText().includes('fast-path-access-token'));
  });

  it('when 1000 random bearer values arrive on the fast path, then every answer is 401 and none is a 5xx', async () => {
    for (let i = 0; i < 1000; i++) {
      const value =
        i % 2
          ? `Bearer ${randomBytes(i % 300).toString('base64url')}.${randomBytes(40).toString('base64url')}.${randomBytes(32).toString('base64url')}`
          : randomBytes(1 + (i % 200))
              .toString('latin1')
              .replace(/[\r\n\0]/g, 'x');
      let res: Response;
      try {
        res = await request(listener)
          .post(`/v1/links/${linkId}/token`)
          .set('Authorization', value)
          .set('Content-Type', 'application/json')
          .send('{}');
      } catch {
        continue; // a header value the HTTP client itself refuses to send
      }
      assert.equal(res.status, 401, `variant ${i}`);
    }
  });
});

describe('token fast path with an audit log that cannot append', () => {
  it('when appendAudit fails, then 503 audit_unavailable with Retry-After, as through Express', async () => {
    let fail = false;
    const h = await createReleaseHarness({
      wrapStore: (real: Store): Store =>
        new Proxy(real, {
          get(target, prop, receiver) {
            if (prop === 'appendAudit')
              return (...a: Parameters<Store['appendAudit']>) =>
                fail
                  ? Promise.reject(new LinkvaultError('store_unavailable'))
                  : target.appendAudit(...a);
            if (prop === 'commitRelease')
              return (...a: Parameters<Store['commitRelease']>) =>
                fail
                  ? Promise.reject(new LinkvaultError('store_unavailable'))
                  : target.commitRelease(...a);
            const v: unknown = Reflect.get(target, prop, receiver);
            return typeof v === 'function' ? v.bind(target) : v;
          },
        }),
    });
    try {
      const link = await h.seedLink({ accessToken: 'never-leaves-on-503' });
      await h.addGrant({ serviceId: 'billing', linkId: link.id });
      fail = true;
      const post = (target: typeof h.app | typeof h.listener) => () =>
        request(target)
          .post(`/v1/links/${link.id}/token`)
          .set('Authorization', h.services.bearer('billing-hs'))
          .set('Content-Type', 'application/json')
          .send('{}');
      const viaExpress = await observe(h.logText, h.metrics, post(h.app));
      const viaFast = await observe(h.logText, h.metrics, post(h.listener));
      // A dependency's 503 is a warning on both paths, with the same request line and counted labels.
      assert.deepEqual(viaExpress.lines, ['request failed@40', 'request@30']);
      assert.deepEqual(viaFast.lines, viaExpress.lines);
      assert.deepEqual(viaFast.counted, viaExpress.counted);
      const [a, b] = [viaExpress.res, viaFast.res];
      assert.equal(b!.status, 503);
      assert.equal(b!.headers['retry-after'], '1');
      assert.equal(b!.body.code, 'audit_unavailable');
      assert.ok(!b!.text.includes('never-leaves-on-503'));
      assert.deepEqual(normalise(b!), normalise(a!));
    } finally {
      await h.close();
    }
  });
});

describe('token fast path when the client leaves before the answer', () => {
  it('when the client closes its connection while the release is held up, then the request is logged once, aborted, and counted aborted', async () => {
    let hold: Promise<void> | null = null;
    let letGo = (): void => undefined;
    let reached = (): void => undefined;
    const atCommit = new Promise<void>((resolve) => (reached = resolve));
    const h = await createReleaseHarness({
      wrapStore: (real: Store): Store =>
        new Proxy(real, {
          get(target, prop, receiver) {
            if (prop === 'commitRelease')
              return async (...a: Parameters<Store['commitRelease']>) => {
                if (hold) {
                  reached();
                  await hold;
                }
                return target.commitRelease(...a);
              };
            const v: unknown = Reflect.get(target, prop, receiver);
            return typeof v === 'function' ? v.bind(target) : v;
          },
        }),
    });
    const server = createServer(h.listener);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const link = await h.seedLink({ accessToken: 'never-reaches-a-gone-client' });
      await h.addGrant({ serviceId: 'billing', linkId: link.id });
      hold = new Promise<void>((resolve) => (letGo = resolve));
      const from = h.logText().length;
      const before = h.metrics.httpRequests.get({
        route: '/v1/links/:id/token',
        method: 'POST',
        status: 'aborted',
      });
      const socket = connect((server.address() as AddressInfo).port, '127.0.0.1');
      await new Promise<void>((resolve) => socket.once('connect', resolve));
      socket.write(
        `POST /v1/links/${link.id}/token HTTP/1.1\r\nHost: x\r\nAuthorization: ${h.services.bearer('billing-hs')}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}`,
      );
      await atCommit;
      socket.destroy();
      await new Promise((r) => setTimeout(r, 50));
      letGo();
      const requestLines = async (): Promise<Record<string, unknown>[]> =>
        h
          .logText()
          .slice(from)
          .split('\n')
          .filter((l) => l !== '')
          .map((l) => JSON.parse(l) as Record<string, unknown>)
          .filter((l) => l.msg === 'request');
      for (let i = 0; i < 200 && (await requestLines()).length === 0; i++)
        await new Promise((r) => setTimeout(r, 5));
      await new Promise((r) => setTimeout(r, 50));
      const lines = await requestLines();
      assert.equal(lines.length, 1, 'one request line');
      assert.equal(lines[0]!.aborted, true);
      assert.equal(lines[0]!.route, '/v1/links/:id/token');
      assert.equal(
        h.metrics.httpRequests.get({
          route: '/v1/links/:id/token',
          method: 'POST',
          status: 'aborted',
        }),
        before + 1,
      );
      assert.ok(!h.logText().includes('never-reaches-a-gone-client'));
    } finally {
      letGo();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      await h.close();
    }
  });
});
