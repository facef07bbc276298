import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { startStack, tokenSet, type Stack } from '../support/stack.js';

/** GET /v1/audit (admin) and GET /v1/me/links/{id}/activity (the link's user) over a real stack. */
describe('reading the audit trail over HTTP', () => {
  let stack: Stack;
  before(async () => {
    stack = await startStack();
  });
  after(async () => {
    await stack.close();
  });

  it('when two services release a link for different purposes, then its user sees who, why, how often and when; another user sees nothing', async () => {
    const link = await stack.createLink({
      tenantId: 'acme',
      userId: 'alice',
      providerId: 'sandbox-crm',
      tokens: tokenSet('at-activity-1', 'rt-activity-1'),
    });
    await stack.addGrant({ serviceId: 'billing', linkId: link.id, purpose: 'invoice sync' });
    for (const [kid, times] of [
      ['crm-hs', 3],
      ['billing-hs', 2],
    ] as const) {
      for (let i = 0; i < times; i++) {
        const res = await request(stack.app)
          .post(`/v1/links/${link.id}/token`)
          .set('Authorization', stack.services.bearer(kid))
          .send({});
        assert.equal(res.status, 200, JSON.stringify(res.body));
      }
    }
    const mine = await stack.sessionToken('acme', 'alice');
    const res = await request(stack.app)
      .get(`/v1/me/links/${link.id}/activity`)
      .set('Authorization', `Bearer ${mine}`);
    assert.equal(res.status, 200);
    assert.equal(res.headers['cache-control'], 'no-store');
    const summary = (res.body.summary as Record<string, unknown>[]).map(({ last_at, ...rest }) => {
      assert.match(String(last_at), /^\d{4}-\d\d-\d\dT/);
      return rest;
    });
    assert.deepEqual(
      summary.sort((a, b) => String(a.service_id).localeCompare(String(b.service_id))),
      [
        { service_id: 'billing', purpose: 'invoice sync', releases: 2 },
        { service_id: 'crm-sync', purpose: 'tests', releases: 3 },
      ],
    );
    const events = res.body.events as Record<string, unknown>[];
    assert.equal(events.length, 5);
    assert.deepEqual(Object.keys(events[0]!).sort(), ['at', 'purpose', 'service_id', 'type']);
    assert.equal(events[0]!.type, 'token.released');
    assert.equal(JSON.stringify(res.body).includes('at-activity-1'), false);
    assert.equal(JSON.stringify(res.body).includes('hmac-sha256'), false, 'no labels for users');

    const other = await stack.sessionToken('acme', 'mallory');
    const denied = await request(stack.app)
      .get(`/v1/me/links/${link.id}/activity`)
      .set('Authorization', `Bearer ${other}`);
    assert.equal(denied.status, 404);
    assert.equal(denied.body.code, 'link_not_found');
    const anonymous = await request(stack.app).get(`/v1/me/links/${link.id}/activity`);
    assert.equal(anonymous.status, 401);
  });

  it('when an admin reads /v1/audit, then filters and cursor paging work, and a token appears only as its label', async () => {
    const link = await stack.createLink({
      tenantId: 'globex',
      userId: 'bob',
      providerId: 'sandbox-crm',
      tokens: tokenSet('at-audit-route-1', 'rt-audit-route-1'),
    });
    for (let i = 0; i < 3; i++)
      await request(stack.app)
        .post(`/v1/links/${link.id}/token`)
        .set('Authorization', stack.services.bearer('crm-hs'))
        .send({});
    const admin = stack.services.bearer('crm-hs');
    const bad = await request(stack.app).get('/v1/audit?limit=0').set('Authorization', admin);
    assert.deepEqual(
      [bad.status, bad.body.code, bad.body.parameter],
      [400, 'invalid_request', 'limit'],
    );
    const unknown = await request(stack.app)
      .get('/v1/audit?colour=red')
      .set('Authorization', admin);
    assert.equal(unknown.status, 400);
    const forbidden = await request(stack.app)
      .get('/v1/audit')
      .set('Authorization', stack.services.bearer('billing-hs'));
    assert.deepEqual([forbidden.status, forbidden.body.code], [403, 'forbidden']);

    const first = await request(stack.app)
      .get(`/v1/audit?link_id=${link.id}&type=token.released&limit=2`)
      .set('Authorization', admin);
    assert.equal(first.status, 200);
    assert.equal(first.body.events.length, 2);
    assert.equal(typeof first.body.next, 'string');
    const second = await request(stack.app)
      .get(`/v1/audit?link_id=${link.id}&type=token.released&limit=2&after=${first.body.next}`)
      .set('Authorization', admin);
    assert.equal(second.body.events.length, 1);
    assert.equal(second.body.next, null);
    const all = [...first.body.events, ...second.body.events] as Record<string, unknown>[];
    assert.equal(new Set(all.map((e) => e.seq)).size, 3);
    for (const e of all) {
      assert.equal(e.type, 'token.released');
      assert.equal(e.link_id, link.id);
      assert.equal(e.tenant_id, 'globex');
      assert.equal(e.service_id, 'crm-sync');
      assert.match(
        String((e.data as Record<string, unknown>).access_token),
        /^hmac-sha256\/128:[A-Za-z0-9_-]{8}:[A-Za-z0-9_-]{22}$/,
      );
    }
    assert.equal(JSON.stringify(all).includes('at-audit-route-1'), false);
    const tenant = await request(stack.app)
      .get('/v1/audit?tenant_id=globex')
      .set('Authorization', admin);
    assert.ok(
      (tenant.body.events as { tenant_id?: string }[]).every((e) => e.tenant_id === 'globex'),
    );
  });
});
