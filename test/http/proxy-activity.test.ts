import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { rawRequest, startProxyHarness, type ProxyHarness } from '../links/proxy/proxy-harness.js';

/** A proxied call is a use of the link: the user sees it in the link's activity, with the grant's purpose. */
describe('proxied calls in the user’s activity', () => {
  let h: ProxyHarness;
  before(async () => {
    h = await startProxyHarness();
  });
  after(() => h.close());

  it('when a service calls the provider through the proxy, then the link’s activity counts the call under its purpose', async () => {
    const link = await h.connect('lnk_proxy_activity_1');
    await h.stack.addGrant({
      serviceId: 'worker',
      linkId: link.id,
      purpose: 'contact sync',
      tokenRelease: false,
      proxy: { allow: [{ method: 'GET', path: '/crm/v3/objects/contacts' }] } as never,
    });
    for (let i = 0; i < 2; i++) {
      const res = await rawRequest(
        h.stack.publicUrl,
        'GET',
        `/v1/links/${link.id}/proxy/crm/v3/objects/contacts`,
        { authorization: h.services.bearer('worker') },
      );
      assert.equal(res.status, 200, res.body);
    }
    const session = await h.stack.sessionToken(link.tenantId, link.userId);
    const activity = await request(h.stack.app)
      .get(`/v1/me/links/${link.id}/activity`)
      .set('Authorization', `Bearer ${session}`);
    assert.equal(activity.status, 200);
    const summary = (activity.body.summary as Record<string, unknown>[]).map(
      ({ last_at: _at, ...rest }) => rest,
    );
    assert.deepEqual(summary, [{ service_id: 'worker', purpose: 'contact sync', releases: 2 }]);
    const types = (activity.body.events as { type: string }[]).map((e) => e.type);
    assert.deepEqual(types, ['proxy.requested', 'proxy.requested']);
  });
});
