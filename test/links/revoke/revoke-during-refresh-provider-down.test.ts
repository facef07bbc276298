import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { PROVIDER_REVOCATION_JOB_KIND } from '../../../src/links/revoke/revocation.js';
import { SqliteStore } from '../../../src/store/sqlite/sqlite-store.js';
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
 * A refresh that loses to a revocation obtained new tokens the link will never hold. They go to
 * the durable revocation queue, not to a single inline attempt: when the provider's revocation
 * endpoint is down at that moment, the job is retried with backoff until the provider answers, and
 * the tokens die then.
 */
describe('revocation during an in-flight refresh, with the revocation endpoint down', () => {
  let dir: string;
  let store: SqliteStore;
  let oidc: OidcServer;
  let front: ProviderSwitch;
  let stack: Stack;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'lv-revoke-refresh-down-'));
    store = new SqliteStore({ path: join(dir, 'lv.db') });
    oidc = await startOidcServer({ mode: 'oauth', clients: [CLIENT], rotateRefreshTokens: true });
    front = await startProviderSwitch(oidc.url);
    const entry = oidc.catalogueEntry('test-as', {
      token_url: `${front.url}/token`,
      revocation: {
        style: 'rfc7009',
        url: `${front.url}/token/revocation`,
        token_type_hint: 'refresh_token',
      },
    });
    stack = await startStack({
      store,
      providers: [{ entry, clientId: CLIENT.client_id, clientSecret: CLIENT.client_secret }],
      startWorker: false,
      worker: { backoffBaseMs: 50, backoffMaxMs: 200 },
    });
  });
  after(async () => {
    await stack.close();
    await store.close();
    await front.close();
    await oidc.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('when the refresh loses to the revocation while the provider cannot revoke, then its new tokens are queued and revoked once the provider answers again', async () => {
    const obtained = await obtainTokens(stack, oidc, 'test-as', 'alice', REDIRECT);
    const link = await stack.createLink({
      tenantId: 'acme',
      userId: 'alice',
      providerId: 'test-as',
      tokens: { ...obtained, expiresAtMs: Date.now() - 1000 },
    });
    const answersBefore = front.answers('/token').length;

    // The revocation endpoint first (modes match in the order they were set), then hold refreshes.
    front.set('/token/revocation', { kind: 'status', status: 503, retryAfterSeconds: 0 });
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
    front.release();
    const late = await inFlight;
    assert.equal(
      late.status,
      410,
      `the in-flight refresh answered ${late.status} ${JSON.stringify(late.body)}`,
    );

    const issued = front
      .answers('/token')
      .slice(answersBefore)
      .filter((a) => typeof a.refresh_token === 'string');
    assert.equal(issued.length, 1);
    const newAccess = String(issued[0]!.access_token);
    const newRefresh = String(issued[0]!.refresh_token);
    assert.equal(
      (await oidc.introspect(newRefresh)).active,
      true,
      'the refresh rotated: a new live refresh token exists that the link never stored',
    );

    // Queued durably: the link's own revocation and the orphaned tokens' (a peek: a 1 ms lease that lapses at once).
    const queued = await store.claimJobs(Date.now(), 10, 1);
    assert.deepEqual(queued.map((j) => j.kind).sort(), [
      PROVIDER_REVOCATION_JOB_KIND,
      PROVIDER_REVOCATION_JOB_KIND,
    ]);
    assert.deepEqual(queued.map((j) => j.payload.role).sort(), ['link', 'orphan']);
    const revocationCalls = () =>
      front.requests.filter((r) => r.path === '/token/revocation').length;
    const callsBefore = revocationCalls();

    // The provider still cannot revoke: the worker's attempts fail and are rescheduled, nothing is lost.
    await eventually(async () => {
      await stack.worker.runOnce();
      return revocationCalls() >= callsBefore + 2 || null;
    });
    assert.equal((await oidc.introspect(newRefresh)).active, true);
    assert.equal(await store.countJobs(), 2);

    // The provider answers again: the retried jobs finish, every token of the link is dead.
    front.set('/token/revocation', { kind: 'pass' });
    await eventually(async () => {
      await stack.worker.runOnce();
      return (await store.countJobs()) === 0 || null;
    });
    for (const token of [
      newAccess,
      newRefresh,
      obtained.accessToken.reveal(),
      obtained.refreshToken!.reveal(),
    ]) {
      assert.equal((await oidc.introspect(token)).active, false);
    }
    const events = (await stack.auditEvents())
      .filter((e) => e.data.link_id === link.id)
      .map((e) => e.type);
    assert.ok(events.includes('link.orphan_tokens_revoked'));
    assert.equal(events.includes('token.released'), false);
  });
});
