import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import request from 'supertest';
import { expectedProblem } from '../support/problem-body.js';
import { startStack, type Stack } from '../support/stack.js';

/**
 * A path has one spelling (strict-router.ts), and OPTIONS is answered on purpose
 * (route-fallback.ts): what a caller gets for another case, a trailing slash, or OPTIONS.
 * Driven through the listener main.ts serves (the token fast path, then Express).
 */

describe('strict routing and OPTIONS', () => {
  let stack: Stack;
  let admin: string;
  before(async () => {
    stack = await startStack();
    admin = stack.services.bearer('crm-hs');
  });
  after(() => stack.close());

  test('when a route is spelt in another case or with a trailing slash, then 404 not_found problem+json (under any spelling of /v1, never stored by a cache)', async () => {
    const spellings: [method: 'get' | 'post', path: string][] = [
      ['get', '/V1/links'],
      ['get', '/v1/Links'],
      ['get', '/v1/links/'],
      ['get', '/v1/links/lnk_abc/'],
      ['get', '/HEALTHZ'],
      ['post', '/v1/grants/'],
      ['post', '/V1/links/lnk_abc/token'],
      ['post', '/v1/links/lnk_abc/TOKEN'],
    ];
    for (const [method, path] of spellings) {
      const res = await request(stack.listener)[method](path).set('Authorization', admin);
      assert.equal(res.status, 404, `${method} ${path}`);
      assert.match(String(res.headers['content-type']), /^application\/problem\+json/);
      assert.deepEqual(res.body, expectedProblem(res, 'not_found'), `${method} ${path}`);
      if (path.toLowerCase().startsWith('/v1/'))
        assert.equal(res.headers['cache-control'], 'no-store', `${method} ${path}`);
    }
  });

  test('when the route is spelt exactly, then it answers (the control)', async () => {
    const res = await request(stack.listener).get('/v1/links').set('Authorization', admin);
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { links: [] });
    assert.equal(res.headers['cache-control'], 'no-store');
  });

  test('when OPTIONS asks about a route, then 204 with Allow and a request id, no body and no CORS', async () => {
    const cases: [path: string, allow: string][] = [
      ['/v1/links', 'GET, HEAD'],
      ['/v1/links/lnk_abc/token', 'POST'],
      ['/v1/grants', 'GET, HEAD, POST'],
      ['/healthz', 'GET, HEAD'],
    ];
    for (const [path, allow] of cases) {
      const res = await request(stack.listener)
        .options(path)
        .set('Origin', 'https://elsewhere.example')
        .set('Access-Control-Request-Method', 'POST')
        .set('X-Request-Id', 'options-probe-1');
      assert.equal(res.status, 204, path);
      assert.equal(res.headers.allow, allow, path);
      assert.equal(res.headers['x-request-id'], 'options-probe-1');
      assert.equal(res.text, '');
      assert.equal(res.headers['access-control-allow-origin'], undefined);
      assert.equal(res.headers['access-control-allow-methods'], undefined);
    }
  });

  test('when OPTIONS asks about a path we do not serve (or another spelling), then 404 not_found problem+json', async () => {
    for (const path of ['/v1/nothing', '/V1/links', '/v1/links/']) {
      const res = await request(stack.listener).options(path);
      assert.equal(res.status, 404, path);
      assert.deepEqual(res.body, expectedProblem(res, 'not_found'));
      assert.equal(res.headers.allow, undefined);
    }
  });
});
