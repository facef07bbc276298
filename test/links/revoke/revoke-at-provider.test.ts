import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { isLinkvaultError } from '../../../src/errors.js';
import { startOidcServer, type OidcServer } from '../../support/oidc-server.js';
import { obtainTokens, startStack, type Stack } from './revocation-harness.js';

const REDIRECT = 'http://127.0.0.1:3000/v1/oauth/callback/test-as';

/** RFC 7009 against node-oidc-provider: after a revoke, the provider itself no longer honours the tokens. */
describe('revocation at the provider (node-oidc-provider, RFC 7009)', () => {
  let oidc: OidcServer;
  let stack: Stack;

  before(async () => {
    oidc = await startOidcServer({
      mode: 'oauth',
      clients: [
        {
          client_id: 'lv-client',
          client_secret: 'lv-secret-0123456789',
          redirect_uris: [REDIRECT],
        },
      ],
    });
    stack = await startStack({
      providers: [
        {
          entry: oidc.catalogueEntry('test-as'),
          clientId: 'lv-client',
          clientSecret: 'lv-secret-0123456789',
        },
      ],
      startWorker: false,
    });
  });
  after(async () => {
    await stack.close();
    await oidc.close();
  });

  it('when a link is revoked, then the provider refuses the old refresh token and introspection reports both tokens inactive', async () => {
    const tokens = await obtainTokens(stack, oidc, 'test-as', 'alice', REDIRECT);
    const refreshToken = tokens.refreshToken!.reveal();
    const accessToken = tokens.accessToken.reveal();
    assert.equal((await oidc.introspect(refreshToken)).active, true);
    const link = await stack.createLink({
      tenantId: 'acme',
      userId: 'alice',
      providerId: 'test-as',
      tokens,
    });

    const res = await request(stack.app)
      .delete(`/v1/links/${link.id}`)
      .set('Authorization', stack.services.bearer('crm-hs'));
    assert.equal(res.status, 200);
    assert.deepEqual(res.body.provider_revocation, { status: 'pending', attempts: 0 });
    assert.equal(res.body.guidance.provider_name, 'Test AS test-as');
    // From the tombstone on, the token route says 410 even before the provider heard anything.
    const gone = await request(stack.app)
      .post(`/v1/links/${link.id}/token`)
      .set('Authorization', stack.services.bearer('crm-hs'))
      .send({});
    assert.equal(gone.status, 410);
    assert.equal(oidc.requestCounts().revocation, 0);

    assert.equal(await stack.worker.runOnce(), 1);

    const record = await request(stack.app)
      .get(`/v1/links/${link.id}/revocation`)
      .set('Authorization', stack.services.bearer('crm-hs'));
    assert.deepEqual(record.body.provider_revocation, { status: 'confirmed', attempts: 1 });
    // Refresh token first (it ends the grant), then the access token.
    assert.equal(oidc.requestCounts().revocation, 2);

    assert.equal((await oidc.introspect(refreshToken)).active, false);
    assert.equal((await oidc.introspect(accessToken)).active, false);
    await assert.rejects(
      stack.oauth.refresh({
        providerId: 'test-as',
        endpointVariables: {},
        refreshToken: tokens.refreshToken!,
      }),
      (err: unknown) => isLinkvaultError(err, 'reauth_required'),
    );

    // The job (the last sealed copy) is gone, and the whole sequence is audited.
    assert.equal(await stack.store.countJobs(), 0);
    const events = (await stack.auditEvents())
      .filter((e) => e.data.link_id === link.id)
      .map((e) => `${e.type}:${String(e.data.outcome ?? e.data.where ?? '')}`);
    assert.deepEqual(events, [
      'link.revocation_requested:',
      'link.tombstoned:',
      'link.provider_revocation:confirmed',
      'link.shredded:revocation_job',
    ]);
    const outcome = (await stack.auditEvents()).find(
      (e) => e.type === 'link.provider_revocation' && e.data.link_id === link.id,
    )!;
    assert.deepEqual(outcome.data.tokens_revoked, ['refresh_token', 'access_token']);
    assert.equal(stack.metrics.revocations.get({ provider: 'test-as', outcome: 'confirmed' }), 1);
  });

  it('when the link is revoked twice at once, then one provider revocation runs and both callers get the same record', async () => {
    const tokens = await obtainTokens(stack, oidc, 'test-as', 'bob', REDIRECT);
    const link = await stack.createLink({
      tenantId: 'acme',
      userId: 'bob',
      providerId: 'test-as',
      tokens,
    });
    const before = oidc.requestCounts().revocation;
    const [a, b] = await Promise.all([
      request(stack.app)
        .delete(`/v1/links/${link.id}`)
        .set('Authorization', stack.services.bearer('crm-hs')),
      request(stack.app)
        .delete(`/v1/links/${link.id}`)
        .set('Authorization', stack.services.bearer('crm-hs')),
    ]);
    assert.equal(a.status, 200);
    assert.equal(b.status, 200);
    assert.equal(a.body.link_id, b.body.link_id);
    assert.equal(await stack.store.countJobs(), 1);
    await stack.worker.runOnce();
    assert.equal(oidc.requestCounts().revocation - before, 2);
    assert.equal((await oidc.introspect(tokens.refreshToken!.reveal())).active, false);
  });
});
