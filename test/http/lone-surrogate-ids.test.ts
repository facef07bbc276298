import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import request from 'supertest';
import { isLinkvaultError } from '../../src/errors.js';
import { expectedProblem } from '../support/problem-body.js';
import { startRedis, type RedisServerHandle } from '../support/redis-server.js';
import { startStack, type Stack } from '../support/stack.js';

/**
 * Lone UTF-16 surrogates in tenant and user ids, on a real redis-server (where they broke reads
 * with 500s). well-formed-ids.test.ts covers the edge (app.ts) for the Express routes; this file
 * covers what does not pass that edge: the id rule itself (checkCallerId, which every tenant and
 * user id goes through, whoever calls the domain) and the token fast path, which is served
 * without Express and must answer the same 400 as the Express route.
 */

const LONE_HIGH = 'acme\ud800';
const LONE_LOW = '\udc00user';

describe('lone surrogates in ids, past the edge, on Redis', () => {
  let redis: RedisServerHandle;
  let stack: Stack;
  before(async () => {
    redis = await startRedis();
    stack = await startStack({ redisUrl: redis.url });
  });
  after(async () => {
    await stack?.close();
    await redis?.stop();
  });

  test('when the domain is asked for a session whose tenant or user id has a lone surrogate, then invalid_request naming it, and /v1/me/links never sees such a session', async () => {
    for (const [input, parameter] of [
      [{ tenantId: LONE_HIGH, userId: 'u1' }, 'tenant_id'],
      [{ tenantId: 'acme', userId: LONE_LOW }, 'user_id'],
      [{ tenantId: '\ud800', userId: 'u1' }, 'tenant_id'],
    ] as const) {
      await assert.rejects(
        stack.sessions.createSession(input, 'crm-sync'),
        (err: unknown) =>
          isLinkvaultError(err, 'invalid_request') &&
          err.extra?.parameter === parameter &&
          err.detail === `${parameter} must be a string of 1-256 printable characters`,
        JSON.stringify(input),
      );
    }
    // The control: a well-formed id beyond the BMP makes a session whose links list on Redis.
    const created = await stack.sessions.createSession(
      { tenantId: 'acme-😀', userId: 'user-𝒳' },
      'crm-sync',
    );
    const mine = await request(stack.app)
      .get('/v1/me/links')
      .set('Authorization', `Bearer ${created.session_token}`);
    assert.equal(mine.status, 200);
    assert.deepEqual(mine.body, { links: [] });
  });

  test('when a token request body carries a lone surrogate, then the fast path answers the same 400 as the Express route', async () => {
    const body = '{"scopes":["read","\\udc00x"]}';
    const fast = await request(stack.listener)
      .post('/v1/links/lnk_x/token')
      .set('Authorization', stack.services.bearer('crm-hs'))
      .set('Content-Type', 'application/json')
      .send(body);
    const express = await request(stack.app)
      .post('/v1/links/lnk_x/token')
      .set('Authorization', stack.services.bearer('crm-hs'))
      .set('Content-Type', 'application/json')
      .send(body);
    for (const res of [fast, express]) {
      assert.equal(res.status, 400);
      assert.deepEqual(
        res.body,
        expectedProblem(res, 'invalid_request', {
          detail: 'scopes must be well-formed Unicode text (no lone surrogates)',
          parameter: 'scopes',
        }),
      );
    }
  });
});
