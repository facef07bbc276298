import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { after, before, beforeEach, describe, it } from 'node:test';
import request from 'supertest';
import { REFRESH_UNCERTAIN_KEY } from '../../../src/links/release/refresh-coordinator.js';
import { openTokenSet } from '../../../src/links/sealing/token-vault.js';
import type { LinkRecord } from '../../../src/links/link.js';
import { expectedProblem } from '../../support/problem-body.js';
import {
  startTokenEndpointStandIn,
  type TokenEndpointStandIn,
} from '../../support/provider-stand-ins.js';
import { createTestOAuth } from '../../support/provider-link.js';
import { createReleaseHarness, type ReleaseHarness } from '../../support/release-harness.js';
import { testProviderEntry } from '../../support/test-catalogue.js';

/**
 * What callers get when the provider misbehaves during a refresh, against the fault-injecting
 * token endpoint through the real OAuth adapter: timeouts, 5xx, 429, invalid_grant,
 * invalid_client, an answer lost after the provider rotated, and a revocation racing a refresh.
 */

describe('refresh under provider faults', () => {
  let standIn: TokenEndpointStandIn;
  let h: ReleaseHarness;
  let rt: string;
  let link: LinkRecord;
  // After a failure the provider is not asked again for a while (refresh-backoff.ts): the tests
  // move the stack's clock past that instead of waiting.
  let skewMs = 0;
  const clock = () => Date.now() + skewMs;

  before(async () => {
    standIn = await startTokenEndpointStandIn({ rotate: true });
    const entry = testProviderEntry('faulty', standIn.url, { account_id: { from: 'none' } });
    const { oauth } = createTestOAuth({
      entry,
      clientId: standIn.client.clientId,
      clientSecret: standIn.client.clientSecret,
      providerTimeoutMs: 400,
    });
    // The provider is in the stack's catalogue too: the revocation worker revokes what a refresh racing a revocation obtained.
    h = await createReleaseHarness({
      oauth,
      providers: [
        {
          entry,
          credentials: {
            clientId: standIn.client.clientId,
            clientSecret: standIn.client.clientSecret,
          },
          allowInsecureUrls: true,
        },
      ],
      startWorker: true,
      now: clock,
    });
    await h.addGrant({ serviceId: 'billing', tenantId: 'tenant-a' });
  });
  after(async () => {
    await h.close();
    await standIn.close();
  });

  beforeEach(async () => {
    rt = `rt_${randomBytes(12).toString('base64url')}`;
    standIn.addRefreshToken(rt);
    link = await h.seedLink({
      providerId: 'faulty',
      refreshToken: rt,
      expiresAtMs: Date.now() - 1000,
      grantedScopes: ['api:read'],
    });
  });

  const token = (body: object = {}) =>
    request(h.app)
      .post(`/v1/links/${link.id}/token`)
      .set('Authorization', h.services.bearer('billing-hs'))
      .send(body);
  const refreshes = () => standIn.tokenRequests().refresh_token ?? 0;
  const current = async () => (await h.store.getLink(link.id))!;

  it('when the provider times out, then 503 with Retry-After, the link is marked uncertain, and the next call after the back-off retries the same refresh token', async () => {
    standIn.queue({ kind: 'hang' });
    const res = await token();
    assert.equal(res.status, 503);
    assert.equal(res.headers['retry-after'], '2');
    assert.deepEqual(res.body, expectedProblem(res, 'provider_unavailable'));
    assert.ok(REFRESH_UNCERTAIN_KEY in (await current()).metadata);
    const before = refreshes();
    const waiting = await token();
    assert.equal(waiting.status, 503);
    assert.deepEqual(waiting.body, expectedProblem(waiting, 'provider_unavailable'));
    assert.ok(Number(waiting.headers['retry-after']) <= 2);
    assert.equal(refreshes(), before, 'not asked again during the back-off');
    skewMs += 2000;
    const ok = await token();
    assert.equal(ok.status, 200);
    assert.deepEqual(Object.keys(ok.body.metadata), [], 'the marker never leaves with a token');
    const after = await current();
    assert.ok(!(REFRESH_UNCERTAIN_KEY in after.metadata), 'a successful refresh clears the marker');
    assert.equal(after.status, 'active');
  });

  it('when the provider times out but the current token is still valid, then the current token is served', async () => {
    const fresh = await h.seedLink({
      providerId: 'faulty',
      refreshToken: rt,
      expiresAtMs: Date.now() + 120_000,
      grantedScopes: ['api:read'],
    });
    standIn.queue({ kind: 'hang' });
    const res = await request(h.app)
      .post(`/v1/links/${fresh.id}/token`)
      .set('Authorization', h.services.bearer('billing-hs'))
      .send({ min_validity_seconds: 600 });
    assert.equal(res.status, 200);
    assert.equal(res.body.access_token, `at-${fresh.id}`);
    // ...but not to a caller that forces a refresh: it has just seen that token fail. (Nor is the
    // provider asked again: the link is backing off.)
    const before = refreshes();
    const forced = await request(h.app)
      .post(`/v1/links/${fresh.id}/token`)
      .set('Authorization', h.services.bearer('billing-hs'))
      .send({ force_refresh: true });
    assert.equal(forced.status, 503);
    assert.ok(!forced.text.includes(`at-${fresh.id}`));
    assert.equal(refreshes(), before);
  });

  it('when the provider answers 500, then 503 and the link is marked uncertain; 503 from the provider leaves it untouched', async () => {
    standIn.queue({ kind: 'status', status: 500 });
    const res = await token();
    assert.equal(res.status, 503);
    assert.equal(res.body.code, 'provider_unavailable');
    assert.ok(REFRESH_UNCERTAIN_KEY in (await current()).metadata);

    const other = await h.seedLink({
      providerId: 'faulty',
      refreshToken: rt,
      expiresAtMs: Date.now() - 1000,
      grantedScopes: ['api:read'],
    });
    standIn.queue({ kind: 'status', status: 503, retryAfter: '7' });
    const unavailable = await request(h.app)
      .post(`/v1/links/${other.id}/token`)
      .set('Authorization', h.services.bearer('billing-hs'))
      .send({});
    assert.equal(unavailable.status, 503);
    assert.equal(unavailable.headers['retry-after'], '7');
    assert.equal((await h.store.getLink(other.id))!.version, other.version, 'link untouched');
    skewMs += 7000; // past the provider's pause
  });

  it('when the provider rate-limits with 429 + Retry-After, then 503 with that Retry-After and the link untouched', async () => {
    standIn.queue({ kind: 'status', status: 429, retryAfter: '30' });
    const res = await token();
    assert.equal(res.status, 503);
    assert.equal(res.headers['retry-after'], '30');
    assert.deepEqual(res.body, expectedProblem(res, 'provider_unavailable'));
    assert.equal((await current()).version, link.version);
    skewMs += 30_000; // past the provider's pause
  });

  it('when the provider says invalid_grant, then 409 reauth_required, the link needs reauth (audited), and later calls never reach the provider', async () => {
    standIn.queue({ kind: 'error', error: 'invalid_grant' });
    const res = await token();
    assert.equal(res.status, 409);
    assert.deepEqual(res.body, expectedProblem(res, 'reauth_required'));
    const after = await current();
    assert.equal(after.status, 'needs_reauth');
    assert.equal(after.version, link.version + 1);
    const event = (await h.store.readAudit()).find(
      (e) => e.type === 'link.needs_reauth' && e.data.link_id === link.id,
    );
    assert.equal(event?.data.reason, 'refresh_token_rejected');
    const before = refreshes();
    for (let i = 0; i < 3; i++) assert.equal((await token()).status, 409);
    assert.equal(refreshes(), before, 'no further refresh attempts');
  });

  it('when the provider says invalid_client, then 503 provider_misconfigured and the link untouched', async () => {
    standIn.queue({ kind: 'error', error: 'invalid_client' });
    const res = await token();
    assert.equal(res.status, 503);
    assert.deepEqual(res.body, expectedProblem(res, 'provider_misconfigured'));
    assert.equal(res.headers['retry-after'], '60');
    const after = await current();
    assert.equal(after.version, link.version);
    assert.equal(after.status, 'active');
  });

  it('when the provider rotates and the answer is dropped, then 503, the old refresh token is kept and tried next, and the rejection makes the link need reauth', async () => {
    standIn.queue({ kind: 'rotate_then_drop' });
    const res = await token();
    assert.equal(res.status, 503);
    assert.equal(res.body.code, 'provider_unavailable');
    const marked = await current();
    assert.ok(REFRESH_UNCERTAIN_KEY in marked.metadata);
    const kept = await openTokenSet(h.vault, marked, marked.tokens!);
    assert.equal(kept.refreshToken!.reveal(), rt, 'the only refresh token we have is kept');
    assert.equal(standIn.isActive(rt), false, 'the provider rotated it away');

    skewMs += 2000; // past the link's back-off
    const next = await token();
    assert.equal(next.status, 409);
    assert.equal(next.body.code, 'reauth_required');
    assert.equal((await current()).status, 'needs_reauth');
    const event = (await h.store.readAudit()).find(
      (e) => e.type === 'link.needs_reauth' && e.data.link_id === link.id,
    );
    assert.equal(event?.data.reason, 'refresh_token_rejected_after_lost_answer');
  });

  it('when the link is revoked while a refresh is in flight, then 410 and the newly issued refresh token is revoked at the provider', async () => {
    standIn.queue({ kind: 'normal', delayMs: 200 });
    const revokedBefore = standIn.revocationCounts().revoked;
    const liveBefore = new Set(standIn.liveRefreshTokens());
    const refreshesBefore = refreshes();
    // supertest sends on then(): start it now.
    const pending = token().then((r) => r);
    // Revoke (tombstone: status revoked, tokens shredded, version bumped) once the provider has the request.
    for (let i = 0; refreshes() === refreshesBefore; i++) {
      assert.ok(i < 1000, 'the refresh never reached the provider');
      await new Promise((r) => setTimeout(r, 5));
    }
    const live = await current();
    assert.ok(
      await h.store.saveLink(
        {
          ...live,
          status: 'revoked',
          tokens: null,
          accessTokenExpiresAtMs: null,
          updatedAtMs: Date.now(),
        },
        live.version,
      ),
    );
    const res = await pending;
    assert.equal(res.status, 410);
    assert.deepEqual(res.body, expectedProblem(res, 'link_revoked'));
    // The durable revocation queue revokes them in the background: the new refresh token and the new access token.
    for (
      let i = 0;
      !(await h.auditEvents()).some(
        (e) => e.type === 'link.orphan_tokens_revoked' && e.data.link_id === link.id,
      );
      i++
    ) {
      assert.ok(i < 1000, 'the tokens were never revoked at the provider');
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.equal(standIn.revocationCounts().revoked, revokedBefore + 2);
    liveBefore.delete(rt);
    assert.deepEqual(
      new Set(standIn.liveRefreshTokens()),
      liveBefore,
      'the refresh token issued during the revocation is dead too',
    );
    const stored = await current();
    assert.equal(stored.status, 'revoked');
    assert.equal(stored.tokens, null);
  });
});
