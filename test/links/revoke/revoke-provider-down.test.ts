import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { PassThrough } from 'node:stream';
import request from 'supertest';
import { createLogger } from '../../../src/log.js';
import { isLinkvaultError } from '../../../src/errors.js';
import { parseRecord } from '../../../src/links/revoke/revocation.js';
import { startOidcServer, type OidcServer } from '../../support/oidc-server.js';
import { startProviderSwitch, type ProviderSwitch } from './provider-switch.js';
import { eventually, obtainTokens, startStack, type Stack } from './revocation-harness.js';

const REDIRECT = 'http://127.0.0.1:3000/v1/oauth/callback/test-as';
const CLIENT = {
  client_id: 'lv-client',
  client_secret: 'lv-secret-0123456789',
  redirect_uris: [REDIRECT],
};

/**
 * The provider step is durable and retried: a provider that hangs or answers 503 leaves the work
 * queued (RFC 7009 §2.2.1: a 503 means the token may still be alive), the link is dead for
 * callers at once, and the revocation completes when the provider answers again — or ends
 * `failed` after a bounded number of attempts, shredded all the same.
 */
describe('revocation while the provider is down', () => {
  let oidc: OidcServer;
  let front: ProviderSwitch;
  let stack: Stack;
  let logged = '';
  const issued: string[] = [];

  before(async () => {
    const lines = new PassThrough();
    lines.on('data', (chunk: Buffer) => (logged += chunk.toString('utf8')));
    oidc = await startOidcServer({ mode: 'oauth', clients: [CLIENT] });
    front = await startProviderSwitch(oidc.url);
    const entry = oidc.catalogueEntry('test-as', {
      revocation: {
        style: 'rfc7009',
        url: `${front.url}/token/revocation`,
        token_type_hint: 'refresh_token',
      },
    });
    stack = await startStack({
      providers: [{ entry, clientId: CLIENT.client_id, clientSecret: CLIENT.client_secret }],
      providerTimeoutSeconds: 1,
      worker: { maxAttempts: 4, backoffBaseMs: 100, backoffMaxMs: 300 },
      log: createLogger({ level: 'debug', destination: lines }),
    });
  });
  after(async () => {
    // Canary: every retry, timeout and failure above was logged, and no token reached a log line.
    assert.ok(logged.includes('revocation at the provider failed; will retry'));
    for (const token of issued)
      assert.equal(logged.includes(token), false, 'a token reached the log');
    await stack.close();
    await front.close();
    await oidc.close();
  });

  it('when the provider hangs, then the token route answers 410 at once and the revocation completes once the provider answers again', async () => {
    const tokens = await obtainTokens(stack, oidc, 'test-as', 'alice', REDIRECT);
    issued.push(tokens.accessToken.reveal(), tokens.refreshToken!.reveal());
    const link = await stack.createLink({
      tenantId: 'acme',
      userId: 'alice',
      providerId: 'test-as',
      tokens,
    });
    front.set('/token/revocation', { kind: 'hang' });

    const started = Date.now();
    const res = await request(stack.app)
      .delete(`/v1/links/${link.id}`)
      .set('Authorization', stack.services.bearer('crm-hs'));
    assert.equal(res.status, 200);
    assert.equal(res.body.provider_revocation.status, 'pending');
    const gone = await request(stack.app)
      .post(`/v1/links/${link.id}/token`)
      .set('Authorization', stack.services.bearer('crm-hs'))
      .send({});
    assert.equal(gone.status, 410);
    assert.equal(gone.body.code, 'link_revoked');
    assert.ok(
      Date.now() - started < 1000,
      'neither the revoke nor the token route waited for the provider',
    );

    // The worker reached the provider, which said nothing; the attempt times out and is rescheduled.
    await front.seen('/token/revocation', 1);
    const pending = await eventually(async () => {
      const row = await stack.store.getRevocation(link.id);
      const record = row && parseRecord(row.record);
      return record && record.provider_revocation.attempts >= 1 ? record : null;
    });
    assert.equal(pending.provider_revocation.status, 'pending');
    assert.equal(
      (await oidc.introspect(tokens.refreshToken!.reveal())).active,
      true,
      'the token is still alive while the provider is down',
    );
    assert.equal(await stack.store.countJobs(), 1, 'the work waits in the queue');

    front.set('/token/revocation', { kind: 'pass' });
    const done = await eventually(async () => {
      const row = await stack.store.getRevocation(link.id);
      const record = row && parseRecord(row.record);
      return record && record.provider_revocation.status !== 'pending' ? record : null;
    });
    assert.equal(done.provider_revocation.status, 'confirmed');
    assert.ok(done.provider_revocation.attempts >= 2);
    assert.equal((await oidc.introspect(tokens.refreshToken!.reveal())).active, false);
    await assert.rejects(
      stack.oauth.refresh({
        providerId: 'test-as',
        endpointVariables: {},
        refreshToken: tokens.refreshToken!,
      }),
      (err: unknown) => isLinkvaultError(err, 'reauth_required'),
    );
    await eventually(async () => (await stack.store.countJobs()) === 0);
  });

  it('when the provider answers 503 with Retry-After, then the retry waits that long', async () => {
    const tokens = await obtainTokens(stack, oidc, 'test-as', 'bob', REDIRECT);
    issued.push(tokens.accessToken.reveal(), tokens.refreshToken!.reveal());
    const link = await stack.createLink({
      tenantId: 'acme',
      userId: 'bob',
      providerId: 'test-as',
      tokens,
    });
    front.set('/token/revocation', { kind: 'status', status: 503, retryAfterSeconds: 1 });
    const seenBefore = front.requests.filter((r) => r.path === '/token/revocation').length;
    await request(stack.app)
      .delete(`/v1/links/${link.id}`)
      .set('Authorization', stack.services.bearer('crm-hs'))
      .expect(200);
    await front.seen('/token/revocation', seenBefore + 1);
    const firstAt = Date.now();
    front.set('/token/revocation', { kind: 'pass' });
    await front.seen('/token/revocation', seenBefore + 2);
    // Backoff alone would retry after ~100 ms; Retry-After: 1 holds it for a second.
    assert.ok(Date.now() - firstAt >= 800, `retried after ${Date.now() - firstAt} ms`);
    const done = await eventually(async () => {
      const record = parseRecord((await stack.store.getRevocation(link.id))!.record);
      return record.provider_revocation.status === 'pending' ? null : record;
    });
    assert.deepEqual(done.provider_revocation, { status: 'confirmed', attempts: 2 });
  });

  it('when the provider stays down, then the revocation is marked failed after the bounded attempts, audited, and the queued tokens are shredded', async () => {
    const tokens = await obtainTokens(stack, oidc, 'test-as', 'carol', REDIRECT);
    issued.push(tokens.accessToken.reveal(), tokens.refreshToken!.reveal());
    const link = await stack.createLink({
      tenantId: 'acme',
      userId: 'carol',
      providerId: 'test-as',
      tokens,
    });
    front.set('/token/revocation', { kind: 'status', status: 503 });
    await request(stack.app)
      .delete(`/v1/links/${link.id}`)
      .set('Authorization', stack.services.bearer('crm-hs'))
      .expect(200);
    const done = await eventually(async () => {
      const record = parseRecord((await stack.store.getRevocation(link.id))!.record);
      return record.provider_revocation.status === 'pending' ? null : record;
    });
    assert.deepEqual(done.provider_revocation, { status: 'failed', attempts: 4 });
    await eventually(async () => (await stack.store.countJobs()) === 0);
    const events = (await stack.auditEvents()).filter((e) => e.data.link_id === link.id);
    const final = events.find(
      (e) => e.type === 'link.provider_revocation' && e.data.final === true,
    );
    assert.equal(final?.data.outcome, 'failed');
    assert.equal(final?.data.error_code, 'provider_unavailable');
    assert.equal(
      events.filter((e) => e.type === 'link.provider_revocation' && e.data.outcome === 'retry')
        .length,
      3,
    );
    assert.ok(events.some((e) => e.type === 'link.shredded' && e.data.where === 'revocation_job'));
    front.set('/token/revocation', { kind: 'pass' });
  });
});
