import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import request from 'supertest';
import type { LinkRecord } from '../../src/links/link.js';
import { expectedProblem } from '../support/problem-body.js';
import { startRedis, type RedisServerHandle } from '../support/redis-server.js';
import { startStack, tokenSet, type Stack } from '../support/stack.js';
import { testProviderEntry } from '../support/test-catalogue.js';
import { makeScopedServices } from './scoped-services.js';

/**
 * Tenant-scoped services (docs/service-auth.md, "Roles and tenants"), the red team's finding: a
 * service holding only `sessions` minted a session for globex/ceo, listed that user's links and
 * revoked one. With `tenants` in the services file a service acts only within its tenants, on
 * every route, through both the Express token route and the fast path; what lies outside answers
 * exactly like what does not exist. Run on a real SQLite file and on a real redis-server.
 */

const PROVIDER = 'plain';
const MISSING = 'lnk_does_not_exist_anywhere';

/** A problem body without its request id, to compare two answers. */
function shape(res: request.Response): Record<string, unknown> {
  const { request_id: _ignored, ...rest } = res.body as Record<string, unknown>;
  return { status: res.status, ...rest };
}

function scenario(storeName: 'SQLite' | 'Redis'): void {
  describe(`tenant-scoped services, on ${storeName}`, () => {
    let redis: RedisServerHandle | undefined;
    let stack: Stack;
    let acmeLink: LinkRecord;
    let acmeEuLink: LinkRecord;
    let globexLink: LinkRecord;
    let globexCeoLink: LinkRecord;
    const as = (kid: string) => stack.services.bearer(kid);

    before(async () => {
      if (storeName === 'Redis') redis = await startRedis();
      stack = await startStack({
        services: makeScopedServices(),
        ...(redis ? { redisUrl: redis.url } : {}),
        env: { LINKVAULT_ALLOW_INSECURE_PROVIDER_URLS: 'true' },
        providers: [
          {
            entry: testProviderEntry(PROVIDER, 'http://127.0.0.1:9', {
              revocation: { style: 'none', url: null },
            }),
            credentials: { clientId: 'c', clientSecret: 's' },
            allowInsecureUrls: true,
          },
        ],
        log: pino({ level: 'silent' }),
        auditHmacKey: randomBytes(32),
      });
      const t0 = Date.now() - 60_000;
      const link = (tenantId: string, userId: string, at: number) =>
        stack.createLink({
          tenantId,
          userId,
          providerId: PROVIDER,
          tokens: tokenSet(`at-${tenantId}-${userId}`, `rt-${tenantId}-${userId}`),
          createdAtMs: at,
        });
      acmeLink = await link('acme', 'alice', t0);
      globexLink = await link('globex', 'bob', t0 + 1000);
      acmeEuLink = await link('acme-eu', 'carol', t0 + 2000);
      globexCeoLink = await link('globex', 'ceo', t0 + 3000);
      // An unscoped admin grants the scoped app tokens in every tenant it names: acme and globex.
      for (const tenantId of ['acme', 'globex'])
        await stack.addGrant({ serviceId: 'acme-app', tenantId, purpose: 'sync' });
    });
    after(async () => {
      await stack?.close();
      await redis?.stop();
    });

    test('when a sessions-only service scoped to acme mints a session for globex/ceo, then 403 forbidden and no session exists; for acme, 201', async () => {
      const globex = await request(stack.app)
        .post('/v1/sessions')
        .set('Authorization', as('acme-sessions-hs'))
        .send({ tenant_id: 'globex', user_id: 'ceo' });
      assert.equal(globex.status, 403);
      assert.deepEqual(
        globex.body,
        expectedProblem(globex, 'forbidden', {
          detail: 'tenant_id is outside the tenants this service may act for',
          parameter: 'tenant_id',
        }),
      );
      assert.equal(globex.body.session_token, undefined);

      const acme = await request(stack.app)
        .post('/v1/sessions')
        .set('Authorization', as('acme-sessions-hs'))
        .send({ tenant_id: 'acme', user_id: 'alice' });
      assert.equal(acme.status, 201);
      // The session it could mint manages acme/alice's links only; a user revocation still says "user".
      const mine = await request(stack.app)
        .get('/v1/me/links')
        .set('Authorization', `Bearer ${acme.body.session_token}`);
      assert.deepEqual(
        mine.body.links.map((l: { id: string }) => l.id),
        [acmeLink.id],
      );
      const notMine = await request(stack.app)
        .delete(`/v1/me/links/${globexCeoLink.id}`)
        .set('Authorization', `Bearer ${acme.body.session_token}`);
      assert.equal(notMine.status, 404);
      assert.equal((await stack.store.getLink(globexCeoLink.id))!.status, 'active');
    });

    test('when an unscoped service mints a globex session, then 201 (the control: only scoped services are bound)', async () => {
      const res = await request(stack.app)
        .post('/v1/sessions')
        .set('Authorization', as('crm-hs'))
        .send({ tenant_id: 'globex', user_id: 'ceo' });
      assert.equal(res.status, 201);
    });

    test('when a scoped service lists links, then only its tenants, newest first, and a tenant_id outside gives an empty list', async () => {
      const all = await request(stack.app).get('/v1/links').set('Authorization', as('acme-app-hs'));
      assert.equal(all.status, 200);
      assert.deepEqual(
        all.body.links.map((l: { id: string }) => l.id),
        [acmeEuLink.id, acmeLink.id],
      );
      const globex = await request(stack.app)
        .get('/v1/links?tenant_id=globex')
        .set('Authorization', as('acme-app-hs'));
      assert.equal(globex.status, 200);
      assert.deepEqual(globex.body, { links: [] });
      const globexCeo = await request(stack.app)
        .get('/v1/links?tenant_id=globex&user_id=ceo')
        .set('Authorization', as('acme-app-hs'));
      assert.deepEqual(globexCeo.body, { links: [] });
      const byUser = await request(stack.app)
        .get('/v1/links?user_id=carol')
        .set('Authorization', as('acme-app-hs'));
      assert.deepEqual(
        byUser.body.links.map((l: { id: string }) => l.id),
        [acmeEuLink.id],
      );
      // The unscoped control sees every tenant.
      const unscoped = await request(stack.app).get('/v1/links').set('Authorization', as('crm-hs'));
      assert.deepEqual(
        unscoped.body.links.map((l: { id: string }) => l.id),
        [globexCeoLink.id, acmeEuLink.id, globexLink.id, acmeLink.id],
      );
    });

    test("when a scoped service reads, revokes or asks a token for another tenant's link, then each answers exactly as for a missing link, and the link stays active", async () => {
      const calls: [string, (id: string) => request.Test][] = [
        ['read', (id) => request(stack.app).get(`/v1/links/${id}`)],
        ['revocation', (id) => request(stack.app).get(`/v1/links/${id}/revocation`)],
        ['revoke', (id) => request(stack.app).delete(`/v1/links/${id}`)],
        ['token (Express)', (id) => request(stack.app).post(`/v1/links/${id}/token`).send({})],
        [
          'token (fast path)',
          (id) =>
            request(stack.listener)
              .post(`/v1/links/${id}/token`)
              .set('Content-Type', 'application/json')
              .send('{}'),
        ],
      ];
      for (const [name, call] of calls) {
        const outside = await call(globexLink.id).set('Authorization', as('acme-app-hs'));
        const missing = await call(MISSING).set('Authorization', as('acme-app-hs'));
        assert.equal(outside.status, 404, name);
        assert.deepEqual(shape(outside), shape(missing), name);
        assert.deepEqual(outside.body, expectedProblem(outside, 'link_not_found'), name);
      }
      assert.equal((await stack.store.getLink(globexLink.id))!.status, 'active');
      const released = (await stack.auditEvents()).filter((e) => e.type === 'token.released');
      assert.deepEqual(released, []);
    });

    test('when a scoped service asks a token for its own tenant, then it is released (the control, both paths)', async () => {
      const express = await request(stack.app)
        .post(`/v1/links/${acmeLink.id}/token`)
        .set('Authorization', as('acme-app-hs'))
        .send({});
      assert.equal(express.status, 200);
      assert.equal(express.body.access_token, 'at-acme-alice');
      const fast = await request(stack.listener)
        .post(`/v1/links/${acmeLink.id}/token`)
        .set('Authorization', as('acme-app-hs'))
        .set('Content-Type', 'application/json')
        .send('{}');
      assert.equal(fast.status, 200);
      assert.equal(fast.body.access_token, 'at-acme-alice');
    });

    test("when a scoped admin grants outside its tenants, then refused: no tenant 400, another tenant 403, another tenant's link 404 as a missing one", async () => {
      const post = (body: Record<string, unknown>) =>
        request(stack.app).post('/v1/grants').set('Authorization', as('acme-admin-hs')).send(body);
      const base = { service_id: 'billing', purpose: 'reporting' };

      const noTenant = await post({ ...base, link_id: acmeLink.id });
      assert.equal(noTenant.status, 400);
      assert.deepEqual(
        noTenant.body,
        expectedProblem(noTenant, 'invalid_request', {
          detail:
            'tenant_id is required: this service acts only within its tenants (a grant without one is not bound to a tenant)',
          parameter: 'tenant_id',
        }),
      );
      const globex = await post({ ...base, tenant_id: 'globex' });
      assert.equal(globex.status, 403);
      assert.deepEqual(
        globex.body,
        expectedProblem(globex, 'forbidden', {
          detail: 'tenant_id is outside the tenants this service may act for',
          parameter: 'tenant_id',
        }),
      );
      const otherLink = await post({ ...base, tenant_id: 'acme', link_id: globexLink.id });
      const missingLink = await post({ ...base, tenant_id: 'acme', link_id: MISSING });
      assert.equal(otherLink.status, 404);
      assert.deepEqual(shape(otherLink), shape(missingLink));

      const inside = await post({ ...base, tenant_id: 'acme' });
      assert.equal(inside.status, 201);
      assert.equal(inside.body.tenant_id, 'acme');
      const grants = await request(stack.app).get('/v1/grants').set('Authorization', as('crm-hs'));
      assert.deepEqual(
        grants.body.grants
          .filter((g: { service_id: string }) => g.service_id === 'billing')
          .map((g: { tenant_id: string }) => g.tenant_id),
        ['acme'],
      );
    });

    test("when a scoped admin lists or deletes grants, then it sees only its tenants' grants, and another tenant's grant is 404 as a missing one", async () => {
      const globexGrant = await stack.addGrant({
        serviceId: 'billing',
        tenantId: 'globex',
        purpose: 'audit',
      });
      const linkOnly = await stack.addGrant({
        serviceId: 'billing',
        linkId: acmeLink.id,
        purpose: 'one link',
      });
      const listed = await request(stack.app)
        .get('/v1/grants')
        .set('Authorization', as('acme-admin-hs'));
      assert.equal(listed.status, 200);
      const tenants = listed.body.grants.map((g: { tenant_id: string | null }) => g.tenant_id);
      assert.ok(tenants.length > 0);
      assert.ok(
        tenants.every((t: string | null) => t === 'acme'),
        JSON.stringify(tenants),
      );

      for (const id of [globexGrant.id, linkOnly.id]) {
        const outside = await request(stack.app)
          .delete(`/v1/grants/${id}`)
          .set('Authorization', as('acme-admin-hs'));
        const missing = await request(stack.app)
          .delete('/v1/grants/grt_missing')
          .set('Authorization', as('acme-admin-hs'));
        assert.equal(outside.status, 404);
        assert.deepEqual(shape(outside), shape(missing));
        assert.notEqual(await stack.store.getGrant(id), null);
      }
    });

    test('when a scoped admin bulk-revokes outside its tenants, then refused and nothing is revoked; its own tenant is accepted', async () => {
      const post = (body: Record<string, unknown>) =>
        request(stack.app)
          .post('/v1/revocations')
          .set('Authorization', as('acme-admin-hs'))
          .send(body);
      const globex = await post({ tenant_id: 'globex', reason: 'offboarding' });
      assert.equal(globex.status, 403);
      assert.deepEqual(
        globex.body,
        expectedProblem(globex, 'forbidden', {
          detail: 'tenant_id is outside the tenants this service may act for',
          parameter: 'tenant_id',
        }),
      );
      const everyTenant = await post({ provider_id: PROVIDER, reason: 'provider retired' });
      assert.equal(everyTenant.status, 400);
      assert.equal(everyTenant.body.parameter, 'tenant_id');
      const started = (await stack.auditEvents()).filter((e) => e.type.includes('bulk'));
      assert.deepEqual(started, []);

      const own = await post({ tenant_id: 'acme', user_id: 'nobody', reason: 'erasure' });
      assert.equal(own.status, 202);
      assert.equal(own.body.matched, 0);
      const status = await request(stack.app)
        .get(`/v1/revocations/${own.body.job_id}`)
        .set('Authorization', as('acme-admin-hs'));
      assert.equal(status.status, 200);

      // A job an unscoped admin started in globex is not there for the scoped admin.
      const theirs = await request(stack.app)
        .post('/v1/revocations')
        .set('Authorization', as('crm-hs'))
        .send({ tenant_id: 'globex', user_id: 'nobody', reason: 'erasure' });
      assert.equal(theirs.status, 202);
      const outside = await request(stack.app)
        .get(`/v1/revocations/${theirs.body.job_id}`)
        .set('Authorization', as('acme-admin-hs'));
      const missing = await request(stack.app)
        .get('/v1/revocations/rvj_00000000-0000-4000-8000-000000000000')
        .set('Authorization', as('acme-admin-hs'));
      assert.equal(outside.status, 404);
      assert.deepEqual(shape(outside), shape(missing));
      for (const link of [globexLink, globexCeoLink])
        assert.equal((await stack.store.getLink(link.id))!.status, 'active');
    });
  });
}

scenario('SQLite');
scenario('Redis');
