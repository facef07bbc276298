import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import {
  REFRESH_FAILURES_KEY,
  REFRESH_RETRY_AT_KEY,
} from '../../../src/links/release/refresh-backoff.js';
import { REFRESH_UNCERTAIN_KEY } from '../../../src/links/release/refresh-coordinator.js';
import type { LinkRecord } from '../../../src/links/link.js';
import { openTokenSet } from '../../../src/links/sealing/token-vault.js';
import { isLinkvaultError } from '../../../src/errors.js';
import { expectedProblem } from '../../support/problem-body.js';
import {
  startTokenEndpointStandIn,
  type TokenEndpointStandIn,
} from '../../support/provider-stand-ins.js';
import { createTestOAuth } from '../../support/provider-link.js';
import { startRedis, type RedisServerHandle } from '../../support/redis-server.js';
import { makeTestServices } from '../../support/service-jwt.js';
import { startStack, type Stack } from '../../support/stack.js';
import { testProviderEntry } from '../../support/test-catalogue.js';

/**
 * What callers get, and what the provider sees, when the provider refuses refreshes: linkvault
 * remembers the provider's Retry-After (per provider for "not now" answers) and its own back-off
 * (per link for other failures) in the store, so that no replica asks again before then. The
 * clock is the stacks' own: time passing is the test moving it, never a sleep.
 */

const CALLERS = 50;
const ROUNDS = 5;

describe('refresh back-off', () => {
  let standIn: TokenEndpointStandIn;
  let redis: RedisServerHandle;
  let a: Stack;
  let b: Stack;
  // A stopped clock that only the test moves: the Retry-After values are exact.
  let nowMs = Date.now();
  const clock = () => nowMs;

  before(async () => {
    standIn = await startTokenEndpointStandIn({ rotate: true });
    redis = await startRedis();
    const entry = testProviderEntry('backoffco', standIn.url, { account_id: { from: 'none' } });
    const credentials = {
      clientId: standIn.client.clientId,
      clientSecret: standIn.client.clientSecret,
    };
    const services = makeTestServices();
    // Two replicas: two stacks over one redis-server. Each has its own master key, so the audit
    // key is given to both and each serves links it sealed itself.
    const auditHmacKey = randomBytes(32);
    const replica = () =>
      startStack({
        oauth: createTestOAuth({ entry, ...credentials, providerTimeoutMs: 2000 }).oauth,
        redisUrl: redis.url,
        services,
        auditHmacKey,
        now: clock,
        providers: [{ entry, credentials, allowInsecureUrls: true }],
      });
    a = await replica();
    b = await replica();
    await a.addGrant({ serviceId: 'billing', tenantId: 'tenant-a' });
  });
  after(async () => {
    await a?.close();
    await b?.close();
    await redis?.stop();
    await standIn?.close();
  });

  const refreshes = () => standIn.tokenRequests().refresh_token ?? 0;

  async function expiredLink(on: Stack, expiresAtMs = clock() - 1000): Promise<LinkRecord> {
    const rt = `rt_${randomBytes(12).toString('base64url')}`;
    standIn.addRefreshToken(rt);
    return on.seedLink({
      providerId: 'backoffco',
      refreshToken: rt,
      expiresAtMs,
      grantedScopes: ['api:read'],
    });
  }

  const token = (on: Stack, linkId: string, body: object = {}) =>
    request(on.app)
      .post(`/v1/links/${linkId}/token`)
      .set('Authorization', on.services.bearer('billing-hs'))
      .send(body);

  /** CALLERS concurrent callers, each asking ROUNDS times in a row. */
  async function hammer(on: Stack, linkId: string) {
    const callers = Array.from({ length: CALLERS }, async () => {
      const answers = [];
      for (let i = 0; i < ROUNDS; i++) answers.push(await token(on, linkId));
      return answers;
    });
    return (await Promise.all(callers)).flat();
  }

  function assertAllUnavailable(answers: request.Response[], retryAfter: (s: number) => boolean) {
    for (const res of answers) {
      assert.equal(res.status, 503, res.text);
      assert.deepEqual(res.body, expectedProblem(res, 'provider_unavailable'));
      const seconds = Number(res.headers['retry-after']);
      assert.ok(retryAfter(seconds), `Retry-After ${res.headers['retry-after']}`);
    }
  }

  it('when the provider answers 429 Retry-After: 30, then 50 callers × 5 rounds cost one refresh, every caller gets 503 with a Retry-After that counts down, on every replica and for every link of the provider', async () => {
    const link = await expiredLink(a);
    const onB = await expiredLink(b);
    const valid = await expiredLink(a, clock() + 600_000);
    const before = refreshes();
    standIn.setDefault({ kind: 'status', status: 429, retryAfter: '30' });
    try {
      const answers = await hammer(a, link.id);
      assert.equal(answers.length, CALLERS * ROUNDS);
      assertAllUnavailable(answers, (s) => s === 30);
      assert.equal(refreshes(), before + 1, 'one refresh reached the provider');
      assert.equal((await a.store.getLink(link.id))!.version, link.version, 'link untouched');

      nowMs += 10_000;
      // The other replica, another link of the same provider: the pause holds there too.
      assertAllUnavailable([await token(b, onB.id)], (s) => s === 20);
      // A still-valid token is served during the pause, but not to a caller forcing a refresh.
      const served = await token(a, valid.id);
      assert.equal(served.status, 200, served.text);
      assert.equal(served.body.access_token, `at-${valid.id}`);
      assertAllUnavailable([await token(a, valid.id, { force_refresh: true })], (s) => s === 20);
      nowMs += 15_000;
      assertAllUnavailable([await token(a, link.id)], (s) => s === 5);
      // The background refresher skips the link too.
      assert.equal(await b.coordinator.refreshAhead(onB.id, 60_000), 'busy');
      assert.equal(refreshes(), before + 1, 'no replica asked during the pause');
    } finally {
      standIn.setDefault({ kind: 'normal' });
      nowMs += 6_000;
    }
    // Once the pause is over, the provider is asked again (and answers).
    const res = await token(b, onB.id);
    assert.equal(res.status, 200, res.text);
    assert.equal(refreshes(), before + 2);
  });

  it('when the provider answers 503 without Retry-After, then the link backs off exponentially (2 s, 4 s), shared by the replicas, and a success clears it', async () => {
    const link = await expiredLink(a);
    const before = refreshes();
    standIn.setDefault({ kind: 'status', status: 503 });
    try {
      assertAllUnavailable(await hammer(a, link.id), (s) => s === 2);
      assert.equal(refreshes(), before + 1);
      const backedOff = (await a.store.getLink(link.id))!;
      assert.equal(backedOff.metadata[REFRESH_FAILURES_KEY], '1');
      assert.ok(!(REFRESH_UNCERTAIN_KEY in backedOff.metadata), 'a 503 was not acted upon');

      // The other replica honours the link's back-off without asking the provider.
      // (It could not open the tokens itself: each stack has its own master key; they are given.)
      const tokens = await openTokenSet(a.vault, backedOff, backedOff.tokens!);
      await assert.rejects(
        b.coordinator.ensureFresh(backedOff, tokens, {
          minValidityMs: 60_000,
          force: false,
          requestId: null,
        }),
        (err: unknown) =>
          isLinkvaultError(err, 'provider_unavailable') && err.retryAfterSeconds === 2,
      );
      assert.equal(refreshes(), before + 1);

      nowMs += 2_100;
      assertAllUnavailable(await hammer(a, link.id), (s) => s === 4);
      assert.equal(refreshes(), before + 2, 'one more attempt after the back-off');
      assert.equal((await a.store.getLink(link.id))!.metadata[REFRESH_FAILURES_KEY], '2');
    } finally {
      standIn.setDefault({ kind: 'normal' });
    }
    nowMs += 4_100;
    const ok = await token(a, link.id);
    assert.equal(ok.status, 200, ok.text);
    assert.equal(refreshes(), before + 3);
    const cleared = (await a.store.getLink(link.id))!;
    assert.ok(!(REFRESH_FAILURES_KEY in cleared.metadata));
    assert.ok(!(REFRESH_RETRY_AT_KEY in cleared.metadata));
    assert.deepEqual(ok.body.metadata, {}, 'back-off bookkeeping never leaves with a token');
  });

  it('when the provider answers 500, then 50 callers × 5 rounds cost one refresh, the link is marked uncertain and backs off', async () => {
    const link = await expiredLink(a);
    const before = refreshes();
    standIn.setDefault({ kind: 'status', status: 500 });
    try {
      assertAllUnavailable(await hammer(a, link.id), (s) => s === 2);
      assert.equal(refreshes(), before + 1);
      const marked = (await a.store.getLink(link.id))!;
      assert.ok(REFRESH_UNCERTAIN_KEY in marked.metadata);
      assert.equal(marked.metadata[REFRESH_FAILURES_KEY], '1');
    } finally {
      standIn.setDefault({ kind: 'normal' });
    }
    nowMs += 2_100;
    const ok = await token(a, link.id);
    assert.equal(ok.status, 200, ok.text);
    assert.equal(refreshes(), before + 2);
  });

  it('when force_refresh is asked 30 times in a row (and 30 at once), then one refresh per 30 s window and every caller gets the new token', async () => {
    const link = await expiredLink(a, clock() + 600_000);
    const before = refreshes();
    const first = await token(a, link.id, { force_refresh: true });
    assert.equal(first.status, 200, first.text);
    assert.notEqual(first.body.access_token, `at-${link.id}`);
    for (let i = 0; i < 29; i++) {
      const res = await token(a, link.id, { force_refresh: true });
      assert.equal(res.status, 200, res.text);
      assert.equal(res.body.access_token, first.body.access_token);
    }
    const burst = await Promise.all(
      Array.from({ length: 30 }, () => token(a, link.id, { force_refresh: true })),
    );
    for (const res of burst) assert.equal(res.body.access_token, first.body.access_token);
    assert.equal(refreshes(), before + 1, 'one refresh for 60 forced calls');

    nowMs += 30_000;
    const later = await token(a, link.id, { force_refresh: true });
    assert.equal(later.status, 200, later.text);
    assert.notEqual(later.body.access_token, first.body.access_token);
    assert.equal(refreshes(), before + 2, 'the next window refreshes once more');
  });
});
