import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import request from 'supertest';
import { expectedProblem } from '../support/problem-body.js';
import { signServiceJwt, type SignServiceJwtOptions } from '../support/service-jwt.js';
import { startStack, type Stack } from '../support/stack.js';

/**
 * Service authentication: the audience must be linkvault's alone, `typ` must say JWT (or be
 * absent), and every refusal is the same 401 to the caller while the log says why, at debug,
 * under the request id, never with the token. Through the listener main.ts serves, so both the
 * Express routes and the token fast path are covered.
 */

describe('service auth: strict audience and typ, and a reason in the log for every 401', () => {
  let stack: Stack;
  before(async () => {
    stack = await startStack();
  });
  after(() => stack.close());

  const token = (overrides: Partial<SignServiceJwtOptions> = {}) =>
    stack.services.token('crm-hs', overrides);

  /** The debug line the problem handler wrote for the request with this id. */
  function logLineOf(requestId: string): Record<string, unknown> {
    const lines = stack
      .logText()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.request_id === requestId && l.msg === 'request rejected');
    assert.equal(lines.length, 1, `one rejection line for ${requestId}`);
    return lines[0]!;
  }

  const now = () => Math.floor(Date.now() / 1000);
  const cases: [name: string, authorization: () => string | undefined, reason: string][] = [
    ['no Authorization header', () => undefined, 'missing_authorization'],
    ['another scheme', () => 'Basic Y3JtOnNlY3JldA==', 'not_bearer'],
    ['an expired token', () => `Bearer ${token({ iat: now() - 400 })}`, 'expired'],
    ['a wrong audience', () => `Bearer ${token({ aud: 'someone-else' })}`, 'wrong_audience'],
    [
      'an audience list that includes linkvault',
      () => `Bearer ${token({ aud: ['linkvault', 'someone-else'] })}`,
      'wrong_audience',
    ],
    ['an unknown kid', () => `Bearer ${token({ kid: 'retired-key' })}`, 'unknown_kid'],
    [
      'a lifetime over 300 s',
      () => `Bearer ${token({ lifetimeSeconds: 301 })}`,
      'lifetime_too_long',
    ],
    ['a bad signature', () => `Bearer ${token({ key: Buffer.alloc(32, 7) })}`, 'bad_signature'],
    ['an alg the key is not pinned to', () => `Bearer ${token({ alg: 'HS384' })}`, 'alg_mismatch'],
    ['no iat', () => `Bearer ${token({ extraClaims: { iat: undefined } })}`, 'missing_claim'],
    ['another service as issuer', () => `Bearer ${token({ iss: 'billing' })}`, 'wrong_issuer'],
    [
      'typ at+jwt (an access token)',
      () => `Bearer ${token({ extraHeader: { typ: 'at+jwt' } })}`,
      'typ_not_accepted',
    ],
    ['a crit header', () => `Bearer ${token({ extraHeader: { crit: ['exp'] } })}`, 'crit_header'],
    [
      'nbf in the future',
      () => `Bearer ${token({ extraClaims: { nbf: now() + 120 } })}`,
      'not_yet_valid',
    ],
    ['a token that is not a JWT', () => 'Bearer not-a-jwt', 'malformed'],
  ];

  for (const [name, authorization, reason] of cases) {
    test(`when a service presents ${name}, then the same 401 as ever and the log says "${reason}" under the request id, without the token`, async () => {
      const value = authorization();
      for (const [method, path] of [
        ['get', '/v1/links'],
        ['post', '/v1/links/lnk_abc/token'],
      ] as const) {
        let req = request(stack.listener)[method](path);
        if (value !== undefined) req = req.set('Authorization', value);
        const res = await req;
        assert.equal(res.status, 401, `${method} ${path}`);
        assert.deepEqual(
          res.body,
          expectedProblem(res, 'unauthorized', { detail: 'A valid service token is required' }),
        );
        assert.equal(res.headers['www-authenticate'], 'Bearer error="invalid_token"');
        const line = logLineOf(String(res.headers['x-request-id']));
        assert.equal(line.level, 20); // debug
        const err = line.err as Record<string, unknown>;
        assert.equal(err.type, 'ServiceAuthRejection');
        assert.equal(err.reason, reason, `${method} ${path}`);
        if (value !== undefined) {
          const jwt = value.slice(value.indexOf(' ') + 1);
          assert.equal(stack.logText().includes(jwt), false, 'the token is never logged');
        }
      }
    });
  }

  test('when the token named a registered key, then the log line also names the kid and the service', async () => {
    const res = await request(stack.listener)
      .get('/v1/links')
      .set('Authorization', `Bearer ${token({ iat: now() - 400 })}`);
    const err = logLineOf(String(res.headers['x-request-id'])).err as Record<string, unknown>;
    assert.equal(err.kid, 'crm-hs');
    assert.equal(err.service_id, 'crm-sync');
  });

  test('when aud is linkvault alone (a string or a one-element list) and typ is absent or JWT in any case, then the token is accepted', async () => {
    for (const overrides of [
      {},
      { aud: ['linkvault'] },
      { extraHeader: { typ: undefined } },
      { extraHeader: { typ: 'jwt' } },
      { extraHeader: { typ: 'application/JWT' } },
    ] satisfies Partial<SignServiceJwtOptions>[]) {
      const res = await request(stack.listener)
        .get('/v1/links')
        .set('Authorization', `Bearer ${token(overrides)}`);
      assert.equal(res.status, 200, JSON.stringify(overrides));
    }
  });

  test('when a token signed by the ES256 key has a two-audience list, then 401 too (the check is the same for every key)', async () => {
    const k = stack.services.keys['crm-es']!;
    const jwt = signServiceJwt({
      kid: k.kid,
      alg: k.alg,
      key: k.signingKey,
      iss: k.iss,
      aud: ['linkvault', 'analytics'],
    });
    const res = await request(stack.listener)
      .get('/v1/links')
      .set('Authorization', `Bearer ${jwt}`);
    assert.equal(res.status, 401);
  });
});
