import { strict as assert } from 'node:assert';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { createReleaseHarness, type ReleaseHarness } from '../support/release-harness.js';
import { expectedProblem } from '../support/problem-body.js';

/** POST/GET/DELETE /v1/grants: shapes, rules, roles and the audit trail. */

describe('grant routes', () => {
  let h: ReleaseHarness;
  let admin: string;
  before(async () => {
    h = await createReleaseHarness();
    admin = h.services.bearer('crm-es');
  });
  after(() => h.close());

  const post = (body: unknown, auth = admin) =>
    request(h.app)
      .post('/v1/grants')
      .set('Authorization', auth)
      .send(body as object);

  it('when the caller lacks the admin role, then 403 forbidden on every grant route', async () => {
    const billing = h.services.bearer('billing-hs');
    for (const res of [
      await post({ service_id: 'billing', tenant_id: 't', purpose: 'x' }, billing),
      await request(h.app).get('/v1/grants').set('Authorization', billing),
      await request(h.app).delete('/v1/grants/grt_x').set('Authorization', billing),
    ]) {
      assert.equal(res.status, 403);
      assert.deepEqual(
        res.body,
        expectedProblem(res, 'forbidden', { detail: 'This route requires the "admin" role' }),
      );
    }
  });

  it('when the body is invalid, then 400 invalid_request naming the parameter', async () => {
    const cases: [unknown, string, string][] = [
      [
        { service_id: 'billing', tenant_id: 't', purpose: 'p', extra: 1 },
        'extra',
        'Unknown member in the request body',
      ],
      [{ tenant_id: 't', purpose: 'p' }, 'service_id', 'service_id is required'],
      [
        { service_id: 'billing', tenant_id: 't' },
        'purpose',
        'purpose is required: 1-200 printable characters',
      ],
      [
        { service_id: 'billing', tenant_id: 't', purpose: '   ' },
        'purpose',
        'purpose is required: 1-200 printable characters',
      ],
      [
        { service_id: 'billing', tenant_id: 't', purpose: 'x'.repeat(201) },
        'purpose',
        'purpose is required: 1-200 printable characters',
      ],
      [
        { service_id: 'billing', purpose: 'p' },
        'tenant_id',
        'A grant must name a tenant_id or a link_id',
      ],
      [
        { service_id: 'billing', provider_id: 'acme', purpose: 'p' },
        'tenant_id',
        'A grant must name a tenant_id or a link_id',
      ],
      [
        { service_id: 'nobody', tenant_id: 't', purpose: 'p' },
        'service_id',
        'service_id is not a registered service',
      ],
      [
        { service_id: 'billing', tenant_id: 't', purpose: 'p', scopes: [] },
        'scopes',
        'scopes must be an array of 1-100 scope strings (omit it for every scope of the link)',
      ],
      [
        { service_id: 'billing', tenant_id: 't', purpose: 'p', scopes: ['a b'] },
        'scopes',
        'each scope must be a scope token (RFC 6749 §3.3)',
      ],
      [
        { service_id: 'billing', tenant_id: 't', purpose: 'p', expires_at: '2020-01-01T00:00:00Z' },
        'expires_at',
        'expires_at must be in the future',
      ],
      [
        { service_id: 'billing', tenant_id: 't', purpose: 'p', expires_at: 'tomorrow' },
        'expires_at',
        'expires_at must be an RFC 3339 date-time',
      ],
      [
        { service_id: 'billing', tenant_id: 't', purpose: 'p', expires_at: '2999-02-30T00:00:00Z' },
        'expires_at',
        'expires_at must be an RFC 3339 date-time',
      ],
      [
        { service_id: 'billing', tenant_id: 7, purpose: 'p' },
        'tenant_id',
        'tenant_id must be a string of 1-256 printable characters',
      ],
      [[1], 'body', 'The body must be a JSON object'],
    ];
    for (const [body, parameter, detail] of cases) {
      const res = await post(body);
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.deepEqual(
        res.body,
        expectedProblem(res, 'invalid_request', { detail, parameter }),
        JSON.stringify(body),
      );
    }
    assert.deepEqual(await h.store.listGrants(), [], 'nothing was stored');
  });

  it('when a link grant asks for scopes the link was not granted, then 422 scope_exceeds_link', async () => {
    const link = await h.seedLink({ grantedScopes: ['read'] });
    const res = await post({
      service_id: 'billing',
      link_id: link.id,
      scopes: ['read', 'write'],
      purpose: 'sync',
    });
    assert.equal(res.status, 422);
    assert.deepEqual(
      res.body,
      expectedProblem(res, 'scope_exceeds_link', { detail: 'The link was not granted: write' }),
    );
    const unknown = await post({ service_id: 'billing', link_id: 'lnk_nope', purpose: 'sync' });
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.code, 'link_not_found');
    const otherTenant = await post({
      service_id: 'billing',
      link_id: link.id,
      tenant_id: 'tenant-b',
      purpose: 'sync',
    });
    assert.equal(otherTenant.status, 400);
    assert.equal(otherTenant.body.parameter, 'tenant_id');
  });

  it('when a grant is created, listed and deleted, then the bodies are exact and each step is audited', async () => {
    const expiresAt = new Date(Date.now() + 86_400_000);
    expiresAt.setUTCMilliseconds(0);
    const res = await post({
      service_id: 'billing',
      tenant_id: 'tenant-a',
      provider_id: 'acme',
      scopes: ['read'],
      purpose: '  nightly invoice sync  ',
      expires_at: expiresAt.toISOString().replace('.000Z', '+00:00'),
    });
    assert.equal(res.status, 201);
    const id = res.body.id as string;
    assert.match(id, /^grt_[A-Za-z0-9_-]{22}$/);
    assert.deepEqual(res.body, {
      id,
      service_id: 'billing',
      tenant_id: 'tenant-a',
      provider_id: 'acme',
      link_id: null,
      scopes: ['read'],
      purpose: 'nightly invoice sync',
      created_at: res.body.created_at,
      expires_at: expiresAt.toISOString(),
    });
    assert.ok(Math.abs(Date.parse(res.body.created_at) - Date.now()) < 5000);

    const list = await request(h.app)
      .get('/v1/grants?service_id=billing')
      .set('Authorization', admin);
    assert.equal(list.status, 200);
    assert.deepEqual(list.body, { grants: [res.body] });
    const none = await request(h.app)
      .get('/v1/grants?service_id=auditor')
      .set('Authorization', admin);
    assert.deepEqual(none.body, { grants: [] });
    const badQuery = await request(h.app).get('/v1/grants?tenant_id=x').set('Authorization', admin);
    assert.equal(badQuery.status, 400);

    const del = await request(h.app).delete(`/v1/grants/${id}`).set('Authorization', admin);
    assert.equal(del.status, 204);
    assert.equal(del.text, '');
    const again = await request(h.app).delete(`/v1/grants/${id}`).set('Authorization', admin);
    assert.equal(again.status, 404);
    assert.deepEqual(again.body, expectedProblem(again, 'grant_not_found'));

    const events = (await h.store.readAudit()).filter((e) => e.data.grant_id === id);
    assert.deepEqual(
      events.map((e) => [e.type, e.data.actor_service_id, e.data.purpose]),
      [
        ['grant.created', 'crm-sync', 'nightly invoice sync'],
        ['grant.deleted', 'crm-sync', 'nightly invoice sync'],
      ],
    );
  });
});
