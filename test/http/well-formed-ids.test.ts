import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import request from 'supertest';
import { expectedProblem } from '../support/problem-body.js';
import { startRedis, type RedisServerHandle } from '../support/redis-server.js';
import { startStack, type Stack } from '../support/stack.js';

/**
 * Ids with a lone UTF-16 surrogate (`"\ud800"` in JSON) cannot be written as UTF-8: on Redis they
 * broke later reads with 500s. They are refused at the edge (well-formed-input.ts), whichever
 * way they come in: JSON bodies, query strings, path parameters. On a real redis-server, through
 * the HTTP routes: what the caller got, and that nothing was stored.
 */

const LONE_HIGH = 'acme\ud800';
const LONE_LOW = '\udc00user';

describe('ids that are not well-formed Unicode, on Redis', () => {
  let redis: RedisServerHandle;
  let stack: Stack;
  let admin: string;
  before(async () => {
    redis = await startRedis();
    stack = await startStack({ redisUrl: redis.url, startWorker: false });
    admin = stack.services.bearer('crm-hs');
  });
  after(async () => {
    await stack?.close();
    await redis?.stop();
  });

  const invalid = (res: request.Response, parameter: string) =>
    expectedProblem(res, 'invalid_request', {
      detail: `${parameter} must be well-formed Unicode text (no lone surrogates)`,
      parameter,
    });

  test('when a session is asked for with a lone surrogate in tenant_id or user_id, then 400 naming it (nothing reaches the store)', async () => {
    for (const [body, parameter] of [
      [{ tenant_id: LONE_HIGH, user_id: 'u1' }, 'tenant_id'],
      [{ tenant_id: 'acme', user_id: LONE_LOW }, 'user_id'],
    ] as const) {
      const res = await request(stack.app)
        .post('/v1/sessions')
        .set('Authorization', admin)
        .send(body);
      assert.equal(res.status, 400);
      assert.deepEqual(res.body, invalid(res, parameter));
    }
  });

  test('when a bulk revocation names a lone-surrogate tenant or user, then 400 and no job is started', async () => {
    for (const [body, parameter] of [
      [{ tenant_id: LONE_HIGH, reason: 'offboarding' }, 'tenant_id'],
      [{ tenant_id: 'acme', user_id: LONE_LOW, reason: 'offboarding' }, 'user_id'],
    ] as const) {
      const res = await request(stack.app)
        .post('/v1/revocations')
        .set('Authorization', admin)
        .send(body);
      assert.equal(res.status, 400);
      assert.deepEqual(res.body, invalid(res, parameter));
    }
    assert.deepEqual(
      (await stack.auditEvents()).filter((e) => e.type.includes('bulk')),
      [],
    );
  });

  test('when a grant names a lone-surrogate tenant, then 400 and no grant exists', async () => {
    const res = await request(stack.app)
      .post('/v1/grants')
      .set('Authorization', admin)
      .send({ service_id: 'billing', tenant_id: LONE_HIGH, purpose: 'sync' });
    assert.equal(res.status, 400);
    assert.deepEqual(res.body, invalid(res, 'tenant_id'));
    const list = await request(stack.app).get('/v1/grants').set('Authorization', admin);
    assert.deepEqual(list.body, { grants: [] });
  });

  test('when a lone surrogate is nested in a body member, then 400 naming the top-level member', async () => {
    const res = await request(stack.app)
      .post('/v1/links/lnk_x/token')
      .set('Authorization', admin)
      .send({ scopes: ['read', LONE_LOW] });
    assert.equal(res.status, 400);
    assert.deepEqual(res.body, invalid(res, 'scopes'));
  });

  test('when a query string or a path parameter carries an encoded surrogate, then 400 invalid_request', async () => {
    const list = await request(stack.app)
      .get('/v1/links?tenant_id=%ED%A0%80')
      .set('Authorization', admin);
    assert.equal(list.status, 400);
    assert.equal(list.body.code, 'invalid_request');
    const session = await stack.sessionToken('acme', 'u1');
    const revoke = await request(stack.app)
      .delete('/v1/me/links/lnk_%ED%A0%80')
      .set('Authorization', `Bearer ${session}`);
    assert.equal(revoke.status, 400);
    assert.deepEqual(revoke.body, expectedProblem(revoke, 'invalid_request'));
  });

  test('when ids are well-formed beyond the BMP (a surrogate pair), then the session is made and its links list on Redis (the control)', async () => {
    const created = await request(stack.app)
      .post('/v1/sessions')
      .set('Authorization', admin)
      .send({ tenant_id: 'acme-😀', user_id: 'user-𝒳' });
    assert.equal(created.status, 201);
    const mine = await request(stack.app)
      .get('/v1/me/links')
      .set('Authorization', `Bearer ${created.body.session_token}`);
    assert.equal(mine.status, 200);
    assert.deepEqual(mine.body, { links: [] });
  });
});
