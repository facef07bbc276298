import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import request from 'supertest';
import { startStack, type Stack } from '../support/stack.js';
import { makeScopedServices } from './scoped-services.js';

/** A tenant-scoped admin and the admin routes added beside the scoping: webhook endpoints. */
describe('tenant-scoped admins and webhook endpoints', () => {
  let stack: Stack;
  before(async () => {
    stack = await startStack({
      services: makeScopedServices(),
      log: pino({ level: 'silent' }),
      auditHmacKey: randomBytes(32),
    });
  });
  after(async () => {
    await stack.close();
  });

  it('when a scoped admin registers, lists or removes endpoints, then only its tenants count and others look absent', async () => {
    const scoped = stack.services.bearer('acme-admin-hs');
    const unscoped = stack.services.bearer('crm-hs');
    const post = (bearer: string, body: Record<string, unknown>) =>
      request(stack.app).post('/v1/webhook-endpoints').set('Authorization', bearer).send(body);

    const everyTenant = await post(scoped, { url: 'http://127.0.0.1:9/all' });
    assert.deepEqual([everyTenant.status, everyTenant.body.code], [400, 'invalid_request']);
    const other = await post(scoped, { url: 'http://127.0.0.1:9/g', tenant_id: 'globex' });
    assert.deepEqual([other.status, other.body.code], [403, 'forbidden']);
    const mine = await post(scoped, { url: 'http://127.0.0.1:9/a', tenant_id: 'acme' });
    assert.equal(mine.status, 201);
    const theirs = await post(unscoped, { url: 'http://127.0.0.1:9/g', tenant_id: 'globex' });
    assert.equal(theirs.status, 201);

    const listed = await request(stack.app)
      .get('/v1/webhook-endpoints')
      .set('Authorization', scoped);
    assert.deepEqual(
      (listed.body.webhook_endpoints as { id: string }[]).map((e) => e.id),
      [mine.body.id],
    );
    for (const path of [`/v1/webhook-endpoints/${theirs.body.id}/deliveries`]) {
      const res = await request(stack.app).get(path).set('Authorization', scoped);
      assert.deepEqual([res.status, res.body.code], [404, 'webhook_endpoint_not_found']);
    }
    const removeTheirs = await request(stack.app)
      .delete(`/v1/webhook-endpoints/${theirs.body.id}`)
      .set('Authorization', scoped);
    assert.equal(removeTheirs.status, 404);
    const all = await request(stack.app)
      .get('/v1/webhook-endpoints')
      .set('Authorization', unscoped);
    assert.equal(
      all.body.webhook_endpoints.length,
      2,
      'the other tenant’s endpoint is still there',
    );
    const removeMine = await request(stack.app)
      .delete(`/v1/webhook-endpoints/${mine.body.id}`)
      .set('Authorization', scoped);
    assert.equal(removeMine.status, 204);
  });

  it('when a scoped admin reads the audit trail, then it must name one of its tenants', async () => {
    const scoped = stack.services.bearer('acme-admin-hs');
    const all = await request(stack.app).get('/v1/audit').set('Authorization', scoped);
    assert.deepEqual(
      [all.status, all.body.code, all.body.parameter],
      [400, 'invalid_request', 'tenant_id'],
    );
    const other = await request(stack.app)
      .get('/v1/audit?tenant_id=globex')
      .set('Authorization', scoped);
    assert.deepEqual([other.status, other.body.code], [403, 'forbidden']);
    const mine = await request(stack.app)
      .get('/v1/audit?tenant_id=acme')
      .set('Authorization', scoped);
    assert.equal(mine.status, 200);
    assert.ok((mine.body.events as { tenant_id?: string }[]).every((e) => e.tenant_id === 'acme'));
  });
});
