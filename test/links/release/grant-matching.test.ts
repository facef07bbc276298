import { strict as assert } from 'node:assert';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { createReleaseHarness, type ReleaseHarness } from '../../support/release-harness.js';
import { expectedProblem } from '../../support/problem-body.js';

/** Which grants let a service obtain a token: deny by default, scopes, expiry, combinations. */

describe('grant matching at release', () => {
  let h: ReleaseHarness;
  let clock = Date.now();
  before(async () => {
    h = await createReleaseHarness({ now: () => clock });
  });
  after(() => h.close());

  const token = (linkId: string, body: object = {}, kid = 'billing-hs') =>
    request(h.app)
      .post(`/v1/links/${linkId}/token`)
      .set('Authorization', h.services.bearer(kid))
      .send(body);

  it('when no grant exists, then 403 no_grant (deny by default) and nothing is audited as released', async () => {
    const link = await h.seedLink();
    const res = await token(link.id);
    assert.equal(res.status, 403);
    assert.deepEqual(res.body, expectedProblem(res, 'no_grant'));
    assert.equal(res.headers['cache-control'], 'no-store');
    assert.ok(!(await h.store.readAudit()).some((e) => e.type === 'token.released'));
  });

  it('when grants exist for another service, tenant, provider or link, then 403 no_grant', async () => {
    const link = await h.seedLink({ tenantId: 'tenant-x', providerId: 'acme' });
    const other = await h.seedLink({ tenantId: 'tenant-x', providerId: 'acme' });
    await h.addGrant({ serviceId: 'crm-sync', tenantId: 'tenant-x' });
    await h.addGrant({ serviceId: 'billing', tenantId: 'tenant-y' });
    await h.addGrant({ serviceId: 'billing', tenantId: 'tenant-x', providerId: 'globex' });
    await h.addGrant({ serviceId: 'billing', linkId: other.id });
    const res = await token(link.id);
    assert.equal(res.status, 403);
    assert.equal(res.body.code, 'no_grant');
    const ok = await token(other.id);
    assert.equal(ok.status, 200);
  });

  it('when the link does not exist, then 404 link_not_found', async () => {
    const res = await token('lnk_missing');
    assert.equal(res.status, 404);
    assert.deepEqual(res.body, expectedProblem(res, 'link_not_found'));
  });

  it('when the requested scopes exceed the grant, then 403 scope_not_granted; within it, 200', async () => {
    const link = await h.seedLink({
      tenantId: 'tenant-s',
      grantedScopes: ['read', 'write', 'admin'],
    });
    await h.addGrant({ serviceId: 'billing', tenantId: 'tenant-s', scopes: ['read'] });
    const denied = await token(link.id, { scopes: ['read', 'write'] });
    assert.equal(denied.status, 403);
    assert.deepEqual(denied.body, expectedProblem(denied, 'scope_not_granted'));
    const ok = await token(link.id, { scopes: ['read'] });
    assert.equal(ok.status, 200);
    // The token carries the link's scopes, and says so.
    assert.deepEqual(ok.body.scopes, ['read', 'write', 'admin']);
  });

  it('when a tenant grant is wider than the link, then 403 no_grant for that link', async () => {
    const narrow = await h.seedLink({ tenantId: 'tenant-w', grantedScopes: ['read'] });
    const wide = await h.seedLink({ tenantId: 'tenant-w', grantedScopes: ['read', 'write'] });
    await h.addGrant({ serviceId: 'billing', tenantId: 'tenant-w', scopes: ['read', 'write'] });
    const res = await token(narrow.id);
    assert.equal(res.status, 403);
    assert.equal(res.body.code, 'no_grant');
    assert.equal((await token(wide.id)).status, 200);
  });

  it('when the grant has expired, then 403 no_grant', async () => {
    const link = await h.seedLink({ tenantId: 'tenant-e' });
    await h.addGrant({ serviceId: 'billing', tenantId: 'tenant-e', expiresAtMs: clock + 60_000 });
    assert.equal((await token(link.id)).status, 200);
    clock += 61_000;
    try {
      const res = await token(link.id);
      assert.equal(res.status, 403);
      assert.equal(res.body.code, 'no_grant');
    } finally {
      clock -= 61_000;
    }
  });

  it('when the link is revoked or needs reauth, then a granted service gets 410 / 409 and an ungranted one 403', async () => {
    const revoked = await h.seedLink({ tenantId: 'tenant-r', status: 'revoked' });
    const reauth = await h.seedLink({ tenantId: 'tenant-r', status: 'needs_reauth' });
    const noGrant = await token(revoked.id);
    assert.equal(noGrant.status, 403);
    await h.addGrant({ serviceId: 'billing', tenantId: 'tenant-r' });
    const gone = await token(revoked.id);
    assert.equal(gone.status, 410);
    assert.deepEqual(gone.body, expectedProblem(gone, 'link_revoked'));
    const conflict = await token(reauth.id);
    assert.equal(conflict.status, 409);
    assert.deepEqual(conflict.body, expectedProblem(conflict, 'reauth_required'));
  });

  it('when the service lacks the tokens role, then 403 forbidden before any grant check', async () => {
    const res = await token('anything', {}, 'auditor-hs');
    assert.equal(res.status, 403);
    assert.equal(res.body.code, 'forbidden');
  });
});
