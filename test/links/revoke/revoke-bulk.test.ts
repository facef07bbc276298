import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { Secret } from '../../../src/secret.js';
import {
  startTokenEndpointStandIn,
  type TokenEndpointStandIn,
} from '../../support/provider-stand-ins.js';
import { testProviderEntry } from '../../support/test-catalogue.js';
import { eventually, startStack, tokenSet, type Stack } from './revocation-harness.js';

const LINKS = 1000;
const PROVIDER_LIMIT_PER_SECOND = 150;
const WORKER_RATE_PER_SECOND = 125;

/**
 * Bulk revocation (an erasure, a tenant, a provider) runs as a background job with progress, and
 * is throttled per provider: 1,000 revocations against a provider that allows 150 a second
 * finish without a storm of 429s. Without the throttle the same run draws
 * hundreds of 429s (the worker alone goes faster than the provider allows).
 */
describe('bulk revocation', () => {
  let standIn: TokenEndpointStandIn;
  let stack: Stack;

  before(async () => {
    standIn = await startTokenEndpointStandIn({ rotate: false });
    standIn.setRevocationRateLimit(PROVIDER_LIMIT_PER_SECOND);
    const entry = testProviderEntry('rated', standIn.url);
    stack = await startStack({
      providers: [
        { entry, clientId: standIn.client.clientId, clientSecret: standIn.client.clientSecret },
        {
          entry: testProviderEntry('other', 'http://127.0.0.1:9', {
            revocation: { style: 'none', url: null },
          }),
          clientId: 'c',
          clientSecret: 's',
        },
      ],
      // Below the provider's limit, with a small burst: the throttle is what keeps 429s away.
      worker: { ratePerSecond: WORKER_RATE_PER_SECOND, burst: 10, concurrency: 16, batchSize: 64 },
    });
  });
  after(async () => {
    await stack.close();
    await standIn.close();
  });

  it('when the body is invalid, then POST /v1/revocations answers 400 and starts nothing', async () => {
    const admin = stack.services.bearer('crm-hs');
    for (const body of [
      {},
      { reason: 'x' },
      { tenant_id: 'acme' },
      { user_id: 'u', reason: 'x' },
      { tenant_id: 'acme', reason: 'x', extra: 1 },
      { provider_id: 'NOT AN ID', reason: 'x' },
    ]) {
      const res = await request(stack.app)
        .post('/v1/revocations')
        .set('Authorization', admin)
        .send(body);
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(res.body.code, 'invalid_request');
    }
    const forbidden = await request(stack.app)
      .post('/v1/revocations')
      .set('Authorization', stack.services.bearer('billing-hs'))
      .send({ tenant_id: 'acme', reason: 'x' });
    assert.equal(forbidden.status, 403);
    const unknownJob = await request(stack.app)
      .get('/v1/revocations/rvj_00000000-0000-0000-0000-000000000000')
      .set('Authorization', admin);
    assert.equal(unknownJob.status, 404);
    assert.equal(unknownJob.body.code, 'job_not_found');
  });

  it("when a user's erasure is asked, then only that user's links of that tenant are revoked", async () => {
    const mine = await stack.createLink({
      tenantId: 'erase',
      userId: 'u1',
      providerId: 'other',
      tokens: tokenSet('at-e-1', 'rt-e-1'),
    });
    const mine2 = await stack.createLink({
      tenantId: 'erase',
      userId: 'u1',
      providerId: 'other',
      tokens: tokenSet('at-e-2', null),
    });
    const someoneElse = await stack.createLink({
      tenantId: 'erase',
      userId: 'u2',
      providerId: 'other',
      tokens: tokenSet('at-e-3', 'rt-e-3'),
    });
    const otherTenant = await stack.createLink({
      tenantId: 'elsewhere',
      userId: 'u1',
      providerId: 'other',
      tokens: tokenSet('at-e-4', 'rt-e-4'),
    });
    const admin = stack.services.bearer('crm-hs');
    const started = await request(stack.app)
      .post('/v1/revocations')
      .set('Authorization', admin)
      .send({ tenant_id: 'erase', user_id: 'u1', reason: 'gdpr erasure' });
    assert.equal(started.status, 202);
    assert.equal(started.body.matched, 2);
    const done = await eventually(async () => {
      const res = await request(stack.app)
        .get(`/v1/revocations/${started.body.job_id}`)
        .set('Authorization', admin);
      return res.body.status === 'done' ? res.body : null;
    });
    assert.deepEqual(done, {
      job_id: started.body.job_id,
      status: 'done',
      total: 2,
      revoked: 2,
      provider_confirmed: 0,
      provider_failed: 0,
      provider_unsupported: 2,
    });
    for (const l of [mine, mine2]) {
      assert.equal((await stack.store.getLink(l.id))!.status, 'revoked');
      const record = await request(stack.app)
        .get(`/v1/links/${l.id}/revocation`)
        .set('Authorization', admin);
      assert.equal(record.body.revoked_by, 'admin');
      assert.equal(record.body.reason, 'gdpr erasure');
    }
    for (const l of [someoneElse, otherTenant])
      assert.equal((await stack.store.getLink(l.id))!.status, 'active');
  });

  it(`when ${LINKS} links at a rate-limited provider are revoked in bulk, then it completes with progress and at most a handful of 429s`, async () => {
    // Real access tokens from the stand-in (one refresh token, refreshed without rotation).
    const seed = 'rt_bulk_seed';
    standIn.addRefreshToken(seed);
    const accessTokens: string[] = [];
    for (let i = 0; i < LINKS; i++) {
      const fresh = await stack.oauth.refresh({
        providerId: 'rated',
        endpointVariables: {},
        refreshToken: new Secret(seed),
      });
      accessTokens.push(fresh.accessToken.reveal());
      await stack.createLink({
        tenantId: 'bulk-tenant',
        userId: `user-${i % 50}`,
        providerId: 'rated',
        tokens: { ...fresh, refreshToken: null },
      });
    }
    assert.ok(accessTokens.every((t) => standIn.isActive(t)));
    const countsBefore = standIn.revocationCounts();
    const admin = stack.services.bearer('crm-hs');
    const startedAt = Date.now();
    const started = await request(stack.app)
      .post('/v1/revocations')
      .set('Authorization', admin)
      .send({ tenant_id: 'bulk-tenant', provider_id: 'rated', reason: 'tenant offboarded' });
    assert.equal(started.status, 202);
    assert.equal(started.body.matched, LINKS);
    assert.match(started.body.job_id, /^rvj_/);

    const seen: { revoked: number; provider_confirmed: number; status: string }[] = [];
    const done = await eventually(
      async () => {
        const res = await request(stack.app)
          .get(`/v1/revocations/${started.body.job_id}`)
          .set('Authorization', admin);
        assert.equal(res.status, 200);
        seen.push(res.body);
        return res.body.status === 'done' ? res.body : null;
      },
      60_000,
      100,
    );
    const elapsedMs = Date.now() - startedAt;
    assert.deepEqual(done, {
      job_id: started.body.job_id,
      status: 'done',
      total: LINKS,
      revoked: LINKS,
      provider_confirmed: LINKS,
      provider_failed: 0,
      provider_unsupported: 0,
    });
    // Progress was visible on the way, and never went back.
    assert.ok(
      seen.some(
        (s) => s.status === 'running' && s.provider_confirmed > 0 && s.provider_confirmed < LINKS,
      ),
      JSON.stringify(seen.slice(0, 3)),
    );
    for (let i = 1; i < seen.length; i++)
      assert.ok(
        seen[i]!.provider_confirmed >= seen[i - 1]!.provider_confirmed,
        'progress never goes back',
      );

    const counts = standIn.revocationCounts();
    const rateLimited = counts.rateLimited - countsBefore.rateLimited;
    assert.ok(rateLimited <= 5, `${rateLimited} answers were 429`);
    assert.equal(counts.revoked - countsBefore.revoked, LINKS);
    assert.equal(
      accessTokens.filter((t) => standIn.isActive(t)).length,
      0,
      'every token is dead at the provider',
    );
    // The throttle, not the provider's refusals, set the pace: about LINKS / rate seconds.
    assert.ok(elapsedMs >= (LINKS / WORKER_RATE_PER_SECOND) * 1000 * 0.8, `took ${elapsedMs} ms`);
    assert.equal(await stack.store.countJobs(), 0);
  });
});
