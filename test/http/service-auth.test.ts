import { strict as assert } from 'node:assert';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import express, { type NextFunction, type Request, type Response } from 'express';
import request from 'supertest';
import { createServiceAuth, type AuthenticatedService } from '../../src/http/service-auth.js';
import { isLinkvaultError } from '../../src/errors.js';
import { makeTestServices, signServiceJwt } from '../support/service-jwt.js';

/**
 * Service JWT authentication against every attack we know of. The app here is the middleware plus
 * a minimal problem handler (status + code), so that the test pins the middleware's own decisions.
 */

const t = makeTestServices();
const NOW_S = Math.floor(Date.now() / 1000);

function buildApp(now?: () => number) {
  const auth = createServiceAuth({
    services: t.services,
    audience: t.audience,
    ...(now ? { now } : {}),
  });
  const app = express();
  app.get('/who', auth.authenticate, (_req, res) => {
    const s = res.locals.service as AuthenticatedService;
    res.json({ id: s.id, roles: [...s.roles].sort() });
  });
  app.get(
    '/admin',
    auth.authenticate,
    auth.requireRole('admin'),
    (_req, res) => void res.json({ ok: true }),
  );
  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    if (isLinkvaultError(err))
      return void res.status(err.status).json({ code: err.code, detail: err.detail });
    res.status(500).json({ code: 'internal_error' });
  });
  return app;
}

const app = buildApp();

async function expect401(authorization: string | undefined): Promise<void> {
  const req = request(app).get('/who');
  if (authorization !== undefined) req.set('Authorization', authorization);
  const res = await req;
  assert.equal(res.status, 401, `expected 401, got ${res.status}`);
  assert.deepEqual(res.body, { code: 'unauthorized', detail: 'A valid service token is required' });
  assert.equal(res.headers['www-authenticate'], 'Bearer error="invalid_token"');
  const tokenPart = (authorization ?? '').slice(7, 40);
  if (tokenPart.length >= 8) assert.ok(!res.text.includes(tokenPart), 'the token is never echoed');
}

describe('service JWT authentication', () => {
  let jkuServer: Server;
  let jkuHits = 0;
  let jkuUrl = '';

  before(async () => {
    jkuServer = createServer((_req, res) => {
      jkuHits++;
      res.setHeader('content-type', 'application/json');
      res.end('{"keys":[]}');
    });
    await new Promise<void>((r) => jkuServer.listen(0, '127.0.0.1', r));
    jkuUrl = `http://127.0.0.1:${(jkuServer.address() as AddressInfo).port}/jwks.json`;
  });
  after(() => new Promise<void>((r) => jkuServer.close(() => r())));

  it('when the token is valid (HS256 and ES256), then the service and its roles are set', async () => {
    for (const kid of ['crm-hs', 'crm-es']) {
      const res = await request(app).get('/who').set('Authorization', t.bearer(kid));
      assert.equal(res.status, 200);
      assert.deepEqual(res.body, {
        id: 'crm-sync',
        roles: ['admin', 'links:read', 'links:revoke', 'sessions', 'tokens'],
      });
    }
    const res = await request(app)
      .get('/who')
      .set('Authorization', `bearer ${t.token('billing-hs')}`);
    assert.deepEqual(res.body, { id: 'billing', roles: ['links:read', 'tokens'] });
  });

  it('when there is no Authorization header or another scheme, then 401', async () => {
    await expect401(undefined);
    await expect401('');
    await expect401(`Basic ${Buffer.from('a:b').toString('base64')}`);
    await expect401('Bearer ');
  });

  it('when alg is none (signature empty or not), then 401', async () => {
    await expect401(
      `Bearer ${signServiceJwt({ kid: 'crm-hs', alg: 'none', iss: 'crm-sync', aud: t.audience })}`,
    );
    const valid = t.token('crm-hs').split('.');
    const noneHeader = Buffer.from(JSON.stringify({ alg: 'none', kid: 'crm-hs' })).toString(
      'base64url',
    );
    await expect401(`Bearer ${noneHeader}.${valid[1]}.${valid[2]}`);
    await expect401(`Bearer ${noneHeader}.${valid[1]}.`);
  });

  it('when HS256 is signed with the ES256 public key as the secret (alg confusion), then 401', async () => {
    await expect401(
      `Bearer ${signServiceJwt({ kid: 'crm-es', alg: 'HS256', key: t.esPublicKeyPem, iss: 'crm-sync', aud: t.audience })}`,
    );
  });

  it('when the kid is unknown or missing, then 401', async () => {
    await expect401(
      `Bearer ${signServiceJwt({ kid: 'nope', alg: 'HS256', key: t.keys['crm-hs']!.signingKey, iss: 'crm-sync', aud: t.audience })}`,
    );
    await expect401(`Bearer ${t.token('crm-hs', { extraHeader: { kid: undefined } })}`);
  });

  it('when the alg differs from the one pinned to the kid, then 401', async () => {
    await expect401(
      `Bearer ${signServiceJwt({ kid: 'crm-hs', alg: 'HS512', key: t.keys['crm-hs']!.signingKey, iss: 'crm-sync', aud: t.audience })}`,
    );
  });

  it('when the signature is wrong, then 401', async () => {
    await expect401(
      `Bearer ${signServiceJwt({ kid: 'crm-hs', alg: 'HS256', key: Buffer.alloc(32, 1), iss: 'crm-sync', aud: t.audience })}`,
    );
  });

  it('when the token expired (beyond the clock tolerance), then 401; within it, accepted', async () => {
    await expect401(t.bearer('crm-hs', { iat: NOW_S - 200, lifetimeSeconds: 100 }));
    const res = await request(app)
      .get('/who')
      .set('Authorization', t.bearer('crm-hs', { iat: NOW_S - 70, lifetimeSeconds: 60 }));
    assert.equal(res.status, 200);
  });

  it('when aud is wrong or missing, then 401', async () => {
    await expect401(t.bearer('crm-hs', { aud: 'someone-else' }));
    await expect401(t.bearer('crm-hs', { extraClaims: { aud: undefined } }));
  });

  it('when the lifetime exceeds 300 s, then 401 (exactly 300 s is accepted)', async () => {
    await expect401(t.bearer('crm-hs', { lifetimeSeconds: 301 }));
    const res = await request(app)
      .get('/who')
      .set('Authorization', t.bearer('crm-hs', { lifetimeSeconds: 300 }));
    assert.equal(res.status, 200);
  });

  it('when exp or iat is missing or not a number, then 401', async () => {
    await expect401(t.bearer('crm-hs', { extraClaims: { exp: undefined } }));
    await expect401(t.bearer('crm-hs', { extraClaims: { iat: undefined } }));
    await expect401(t.bearer('crm-hs', { extraClaims: { exp: String(NOW_S + 60) } }));
    await expect401(t.bearer('crm-hs', { extraClaims: { iat: String(NOW_S) } }));
  });

  it('when iat is in the future beyond the tolerance, then 401', async () => {
    await expect401(t.bearer('crm-hs', { iat: NOW_S + 120, lifetimeSeconds: 60 }));
  });

  it('when iss names another service than the kid belongs to, then 401', async () => {
    await expect401(t.bearer('crm-hs', { iss: 'billing' }));
    await expect401(t.bearer('billing-hs', { iss: 'crm-sync' }));
  });

  it('when the header embeds jwk / jku / x5u / x5c, then they are ignored and never fetched', async () => {
    const attacker = signServiceJwt({
      kid: 'crm-hs',
      alg: 'HS256',
      key: Buffer.alloc(32, 7),
      iss: 'crm-sync',
      aud: t.audience,
      extraHeader: { jku: jkuUrl },
    });
    await expect401(`Bearer ${attacker}`);
    const ec = (await import('node:crypto')).generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jwk = ec.publicKey.export({ format: 'jwk' });
    await expect401(
      `Bearer ${signServiceJwt({ kid: 'crm-es', alg: 'ES256', key: ec.privateKey, iss: 'crm-sync', aud: t.audience, extraHeader: { jwk, jku: jkuUrl, x5u: jkuUrl } })}`,
    );
    await expect401(
      `Bearer ${signServiceJwt({ kid: 'attacker', alg: 'ES256', key: ec.privateKey, iss: 'crm-sync', aud: t.audience, extraHeader: { jwk, jku: jkuUrl } })}`,
    );
    // A legitimately signed token that merely carries the members is verified with our key only.
    const res = await request(app)
      .get('/who')
      .set('Authorization', t.bearer('crm-hs', { extraHeader: { jku: jkuUrl, x5u: jkuUrl } }));
    assert.equal(res.status, 200);
    assert.equal(jkuHits, 0, 'jku / x5u must never be fetched');
  });

  it('when the header has crit, then 401', async () => {
    await expect401(t.bearer('crm-hs', { extraHeader: { crit: ['exp'] } }));
  });

  it('when the header is not JSON or not an object, then 401', async () => {
    const [, payload, sig] = t.token('crm-hs').split('.');
    for (const h of ['not json', '[1,2]', 'null', '"HS256"'])
      await expect401(`Bearer ${Buffer.from(h).toString('base64url')}.${payload}.${sig}`);
  });

  it('when the bearer is oversized (a huge header), then 401 without a 5xx or 431 from us', async () => {
    const big = t.token('crm-hs', { extraHeader: { pad: 'x'.repeat(9000) } });
    await expect401(`Bearer ${big}`);
    const bigPayload = t.token('crm-hs', { extraClaims: { pad: 'x'.repeat(9000) } });
    await expect401(`Bearer ${bigPayload}`);
  });

  it('when the service lacks the role, then 403 forbidden; with it, 200', async () => {
    const denied = await request(app).get('/admin').set('Authorization', t.bearer('billing-hs'));
    assert.equal(denied.status, 403);
    assert.deepEqual(denied.body, {
      code: 'forbidden',
      detail: 'This route requires the "admin" role',
    });
    const ok = await request(app).get('/admin').set('Authorization', t.bearer('crm-es'));
    assert.equal(ok.status, 200);
  });

  it('when a verified token is reused past its expiry, then the remembered verdict ends with it', async () => {
    let clock = NOW_S * 1000;
    const moving = buildApp(() => clock);
    const bearer = t.bearer('crm-hs', { iat: NOW_S, lifetimeSeconds: 60 });
    assert.equal((await request(moving).get('/who').set('Authorization', bearer)).status, 200);
    assert.equal((await request(moving).get('/who').set('Authorization', bearer)).status, 200);
    clock = (NOW_S + 60 + 31) * 1000; // past exp + the 30 s tolerance
    assert.equal((await request(moving).get('/who').set('Authorization', bearer)).status, 401);
  });

  it('when the clock is injected, then exp is judged against it', async () => {
    const future = buildApp(() => (NOW_S + 3600) * 1000);
    const res = await request(future).get('/who').set('Authorization', t.bearer('crm-hs'));
    assert.equal(res.status, 401);
  });
});
