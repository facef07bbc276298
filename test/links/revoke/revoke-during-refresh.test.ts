import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { startOidcServer, type OidcServer } from '../../support/oidc-server.js';
import { startProviderSwitch, type ProviderSwitch } from './provider-switch.js';
import { obtainTokens, startStack, type Stack } from './revocation-harness.js';

const REDIRECT = 'http://127.0.0.1:3000/v1/oauth/callback/test-as';
const CLIENT = {
  client_id: 'lv-client',
  client_secret: 'lv-secret-0123456789',
  redirect_uris: [REDIRECT],
};

/**
 * A refresh is in flight (the provider has the request) when the link is revoked. The tombstone
 * wins: the refresh's compare-and-set write fails against it, no token is released after the
 * revoke, and the tokens that refresh obtained are revoked at the provider too.
 */
describe('revocation during an in-flight refresh', () => {
  let oidc: OidcServer;
  let front: ProviderSwitch;
  let stack: Stack;

  before(async () => {
    oidc = await startOidcServer({ mode: 'oauth', clients: [CLIENT], rotateRefreshTokens: true });
    front = await startProviderSwitch(oidc.url);
    const entry = oidc.catalogueEntry('test-as', { token_url: `${front.url}/token` });
    stack = await startStack({
      providers: [{ entry, clientId: CLIENT.client_id, clientSecret: CLIENT.client_secret }],
      startWorker: false,
    });
  });
  after(async () => {
    await stack.close();
    await front.close();
    await oidc.close();
  });

  it('when the link is revoked while its refresh is at the provider, then no token is ever released after the revoke and the new tokens die too', async () => {
    const obtained = await obtainTokens(stack, oidc, 'test-as', 'alice', REDIRECT);
    // Expired, so the next token request refreshes.
    const link = await stack.createLink({
      tenantId: 'acme',
      userId: 'alice',
      providerId: 'test-as',
      tokens: { ...obtained, expiresAtMs: Date.now() - 1000 },
    });
    const answersBefore = front.answers('/token').length;

    front.set('/token', { kind: 'hold' });
    const inFlight = request(stack.app)
      .post(`/v1/links/${link.id}/token`)
      .set('Authorization', stack.services.bearer('crm-hs'))
      .send({})
      .then((r) => r);
    await front.held(1);

    const revoked = await request(stack.app)
      .delete(`/v1/links/${link.id}`)
      .set('Authorization', stack.services.bearer('crm-hs'));
    assert.equal(revoked.status, 200);
    const meanwhile = await request(stack.app)
      .post(`/v1/links/${link.id}/token`)
      .set('Authorization', stack.services.bearer('crm-hs'))
      .send({});
    assert.equal(meanwhile.status, 410);

    // The provider answers the refresh now: it rotated the refresh token and issued a new access token.
    front.release();
    const late = await inFlight;
    assert.equal(
      late.status,
      410,
      `the in-flight refresh answered ${late.status} ${JSON.stringify(late.body)}`,
    );
    assert.equal(late.body.access_token, undefined);
    const issued = front.answers('/token').slice(answersBefore);
    assert.equal(issued.length, 1);
    const newAccess = String(issued[0]!.access_token);
    const newRefresh = String(issued[0]!.refresh_token);
    assert.notEqual(newRefresh, obtained.refreshToken!.reveal());

    // Nothing of the refresh was stored: the tombstone is intact.
    const stored = (await stack.store.getLink(link.id))!;
    assert.equal(stored.status, 'revoked');
    assert.equal(stored.tokens, null);

    await stack.worker.runOnce();
    for (const token of [
      newAccess,
      newRefresh,
      obtained.accessToken.reveal(),
      obtained.refreshToken!.reveal(),
    ]) {
      assert.equal((await oidc.introspect(token)).active, false);
    }

    // The audit trail shows no release for this link after the revocation was requested.
    const events = (await stack.auditEvents())
      .filter((e) => e.data.link_id === link.id)
      .map((e) => e.type);
    const requestedAt = events.indexOf('link.revocation_requested');
    assert.ok(requestedAt >= 0);
    assert.equal(events.slice(requestedAt).includes('token.released'), false);
    assert.equal(events.includes('link.refreshed'), false);
  });
});
