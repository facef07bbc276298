import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { testProviderEntry } from '../../support/test-catalogue.js';
import { startStack, tokenSet, type Stack } from './revocation-harness.js';

/** A user's session token manages that user's links and nobody else's; another's link is a plain 404. */
describe("a user's session cannot list or revoke another user's links", () => {
  let stack: Stack;

  before(async () => {
    stack = await startStack({
      providers: [
        {
          entry: testProviderEntry('plain', 'http://127.0.0.1:9', {
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

  it('when the session bearer is missing or unknown, then DELETE /v1/me/links answers 401', async () => {
    const link = await stack.createLink({
      tenantId: 'acme',
      userId: 'alice',
      providerId: 'plain',
      tokens: tokenSet('at-s-0', 'rt-s-0'),
    });
    const none = await request(stack.app).delete(`/v1/me/links/${link.id}`);
    assert.equal(none.status, 401);
    assert.equal(none.body.code, 'session_expired');
    const bogus = await request(stack.app)
      .delete(`/v1/me/links/${link.id}`)
      .set('Authorization', `Bearer ${'x'.repeat(43)}`);
    assert.equal(bogus.status, 401);
    // A service JWT is not a session.
    const jwt = await request(stack.app)
      .delete(`/v1/me/links/${link.id}`)
      .set('Authorization', stack.services.bearer('crm-hs'));
    assert.equal(jwt.status, 401);
    assert.equal((await stack.store.getLink(link.id))!.status, 'active');
  });

  it("when Bob lists and revokes Alice's link, then he sees nothing and gets 404 exactly like a missing link", async () => {
    const alices = await stack.createLink({
      tenantId: 'acme',
      userId: 'alice',
      providerId: 'plain',
      tokens: tokenSet('at-s-1', 'rt-s-1'),
    });
    const bobs = await stack.createLink({
      tenantId: 'acme',
      userId: 'bob',
      providerId: 'plain',
      tokens: tokenSet('at-s-2', 'rt-s-2'),
    });
    // Same user id in another tenant is another user.
    const otherTenant = await stack.createLink({
      tenantId: 'globex',
      userId: 'alice',
      providerId: 'plain',
      tokens: tokenSet('at-s-3', 'rt-s-3'),
    });
    const bob = await stack.sessionToken('acme', 'bob');

    const list = await request(stack.app).get('/v1/me/links').set('Authorization', `Bearer ${bob}`);
    assert.equal(list.status, 200);
    assert.deepEqual(
      list.body.links.map((l: { id: string }) => l.id),
      [bobs.id],
    );

    for (const target of [alices.id, otherTenant.id, 'lnk_does-not-exist']) {
      const res = await request(stack.app)
        .delete(`/v1/me/links/${target}`)
        .set('Authorization', `Bearer ${bob}`);
      assert.equal(res.status, 404, target);
      assert.equal(res.body.code, 'link_not_found');
      assert.equal(res.body.detail, undefined);
    }
    assert.equal((await stack.store.getLink(alices.id))!.status, 'active');
    assert.equal((await stack.store.getLink(otherTenant.id))!.status, 'active');
    assert.equal(await stack.store.getRevocation(alices.id), null);
  });

  it('when Alice revokes her own link with her session, then it is revoked by the user and Bob still cannot touch it', async () => {
    const link = await stack.createLink({
      tenantId: 'acme',
      userId: 'alice',
      providerId: 'plain',
      tokens: tokenSet('at-s-4', 'rt-s-4'),
    });
    const alice = await stack.sessionToken('acme', 'alice');
    const res = await request(stack.app)
      .delete(`/v1/me/links/${link.id}`)
      .set('Authorization', `Bearer ${alice}`);
    assert.equal(res.status, 200);
    assert.equal(res.body.revoked_by, 'user');
    assert.equal(res.body.reason, 'user_request');
    assert.equal(res.body.link_id, link.id);

    const own = await request(stack.app)
      .get(`/v1/me/links/${link.id}/revocation`)
      .set('Authorization', `Bearer ${alice}`);
    assert.equal(own.status, 200);
    assert.deepEqual(own.body, res.body);

    const bob = await stack.sessionToken('acme', 'bob');
    const again = await request(stack.app)
      .delete(`/v1/me/links/${link.id}`)
      .set('Authorization', `Bearer ${bob}`);
    assert.equal(again.status, 404);
    const peek = await request(stack.app)
      .get(`/v1/me/links/${link.id}/revocation`)
      .set('Authorization', `Bearer ${bob}`);
    assert.equal(peek.status, 404);
    assert.equal(peek.body.code, 'link_not_found');
    const mine = await request(stack.app)
      .get('/v1/me/links')
      .set('Authorization', `Bearer ${alice}`);
    const listed = mine.body.links.find((l: { id: string }) => l.id === link.id);
    assert.equal(listed.status, 'revoked');
  });
});
