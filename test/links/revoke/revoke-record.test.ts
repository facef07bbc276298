import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { testProviderEntry } from '../../support/test-catalogue.js';
import { startStack, tokenSet, type Stack } from './revocation-harness.js';

/**
 * The revocation record and the routes' edges, on a provider the catalogue says offers no
 * revocation (Microsoft-style `none`): no provider call is ever made, so these run without one.
 */
describe('revocation record and routes (provider without revocation)', () => {
  let stack: Stack;

  before(async () => {
    stack = await startStack({
      providers: [
        {
          entry: testProviderEntry('msft-like', 'http://127.0.0.1:9', {
            revocation: { style: 'none', url: null },
          }),
          clientId: 'c',
          clientSecret: 's',
        },
      ],
    });
  });
  after(async () => {
    await stack.close();
  });

  it('when the caller has no service token, then DELETE answers 401', async () => {
    const res = await request(stack.app).delete('/v1/links/lnk_x');
    assert.equal(res.status, 401);
    assert.equal(res.body.code, 'unauthorized');
  });

  it('when the service lacks links:revoke, then DELETE answers 403 forbidden', async () => {
    const res = await request(stack.app)
      .delete('/v1/links/lnk_x')
      .set('Authorization', stack.services.bearer('billing-hs'));
    assert.equal(res.status, 403);
    assert.equal(res.body.code, 'forbidden');
  });

  it('when the link does not exist, then DELETE answers 404 link_not_found', async () => {
    const res = await request(stack.app)
      .delete('/v1/links/lnk_missing')
      .set('Authorization', stack.services.bearer('crm-hs'));
    assert.equal(res.status, 404);
    assert.equal(res.body.code, 'link_not_found');
  });

  it('when the body carries an unknown member or a bad reason, then DELETE answers 400 and revokes nothing', async () => {
    const link = await stack.createLink({
      tenantId: 'acme',
      userId: 'u1',
      providerId: 'msft-like',
      tokens: tokenSet('at-rec-0', 'rt-rec-0'),
    });
    const unknown = await request(stack.app)
      .delete(`/v1/links/${link.id}`)
      .set('Authorization', stack.services.bearer('crm-hs'))
      .send({ force: true });
    assert.equal(unknown.status, 400);
    assert.equal(unknown.body.code, 'invalid_request');
    const badReason = await request(stack.app)
      .delete(`/v1/links/${link.id}`)
      .set('Authorization', stack.services.bearer('crm-hs'))
      .send({ reason: 42 });
    assert.equal(badReason.status, 400);
    assert.equal((await stack.store.getLink(link.id))!.status, 'active');
  });

  it('when a service revokes a link, then the record says who, when, why, unsupported and the guidance, and holds no token material', async () => {
    const link = await stack.createLink({
      tenantId: 'acme',
      userId: 'u1',
      providerId: 'msft-like',
      tokens: tokenSet('at-rec-canary-1', 'rt-rec-canary-1'),
    });
    const before = Date.now();
    const res = await request(stack.app)
      .delete(`/v1/links/${link.id}`)
      .set('Authorization', stack.services.bearer('crm-hs'))
      .send({ reason: 'customer offboarding' });
    assert.equal(res.status, 200);
    const revokedAt = Date.parse(res.body.revoked_at);
    assert.ok(revokedAt >= before - 5 && revokedAt <= Date.now());
    assert.deepEqual(res.body, {
      link_id: link.id,
      tenant_id: 'acme',
      user_id: 'u1',
      provider_id: 'msft-like',
      revoked_at: res.body.revoked_at,
      revoked_by: 'service',
      reason: 'customer offboarding',
      provider_revocation: { status: 'unsupported', attempts: 0 },
      guidance: {
        provider_name: 'Provider msft-like',
        settings_url: 'https://msft-like.example/settings/connected-apps',
        instructions:
          "Open msft-like's connected apps page and remove the app to stop all sharing.",
        privacy_policy_url: 'https://msft-like.example/privacy',
      },
    });
    assert.equal(JSON.stringify(res.body).includes('canary'), false);

    // Tombstoned and shredded: no sealed tokens left on the link, and no job holds a copy.
    const stored = (await stack.store.getLink(link.id))!;
    assert.equal(stored.status, 'revoked');
    assert.equal(stored.tokens, null);
    assert.equal(stored.version, link.version + 1);
    assert.equal(await stack.store.countJobs(), 0);

    // Retrievable later, and idempotent.
    const got = await request(stack.app)
      .get(`/v1/links/${link.id}/revocation`)
      .set('Authorization', stack.services.bearer('auditor-hs'));
    assert.equal(got.status, 200);
    assert.deepEqual(got.body, res.body);
    const again = await request(stack.app)
      .delete(`/v1/links/${link.id}`)
      .set('Authorization', stack.services.bearer('crm-hs'));
    assert.equal(again.status, 200);
    assert.deepEqual(again.body, res.body);

    assert.equal(
      stack.metrics.revocations.get({ provider: 'msft-like', outcome: 'unsupported' }),
      1,
    );

    // Every step audited, in order.
    const types = (await stack.auditEvents())
      .filter((e) => e.data.link_id === link.id)
      .map((e) => [e.type, e.data.outcome ?? e.data.where ?? null]);
    assert.deepEqual(types, [
      ['link.revocation_requested', null],
      ['link.tombstoned', null],
      ['link.provider_revocation', 'unsupported'],
      ['link.shredded', 'link'],
    ]);
  });

  it('when a revoked link is asked for a token, then the token route answers 410 link_revoked', async () => {
    const link = await stack.createLink({
      tenantId: 'acme',
      userId: 'u2',
      providerId: 'msft-like',
      tokens: tokenSet('at-rec-2', 'rt-rec-2'),
    });
    const ok = await request(stack.app)
      .post(`/v1/links/${link.id}/token`)
      .set('Authorization', stack.services.bearer('crm-hs'))
      .send({});
    assert.equal(ok.status, 200);
    assert.equal(ok.body.access_token, 'at-rec-2');
    await request(stack.app)
      .delete(`/v1/links/${link.id}`)
      .set('Authorization', stack.services.bearer('crm-hs'))
      .expect(200);
    const gone = await request(stack.app)
      .post(`/v1/links/${link.id}/token`)
      .set('Authorization', stack.services.bearer('crm-hs'))
      .send({});
    assert.equal(gone.status, 410);
    assert.equal(gone.body.code, 'link_revoked');
  });

  it('when a link is not revoked, then GET revocation answers 404 revocation_not_found', async () => {
    const link = await stack.createLink({
      tenantId: 'acme',
      userId: 'u3',
      providerId: 'msft-like',
      tokens: tokenSet('at-rec-3', null),
    });
    const res = await request(stack.app)
      .get(`/v1/links/${link.id}/revocation`)
      .set('Authorization', stack.services.bearer('auditor-hs'));
    assert.equal(res.status, 404);
    assert.equal(res.body.code, 'revocation_not_found');
    const missing = await request(stack.app)
      .get('/v1/links/lnk_nope/revocation')
      .set('Authorization', stack.services.bearer('auditor-hs'));
    assert.equal(missing.status, 404);
    assert.equal(missing.body.code, 'link_not_found');
  });
});
