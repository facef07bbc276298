import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import {
  ACME_CLIENT,
  startConnectHarnessWithOidc,
  type OidcConnectHarness,
} from '../../support/connect-harness.js';
import { startOidcServer, type OidcServer } from '../../support/oidc-server.js';
import { startRedis, type RedisServerHandle } from '../../support/redis-server.js';
import { startStack, type Stack } from '../../support/stack.js';

const CAP = 3;
const ENV = { LINKVAULT_CONNECT_STARTS_PER_SESSION: String(CAP) };

function expectedCapProblem(requestId: string | null): Record<string, unknown> {
  return {
    type: 'https://linkvault.dev/problems/rate-limited',
    title: 'Too many requests',
    status: 429,
    code: 'rate_limited',
    detail: 'This session has started too many connect flows; mint a new session',
    request_id: requestId,
  };
}

describe('when one session starts more connect flows than its cap, then the next start is 429 rate_limited', () => {
  let h: OidcConnectHarness;
  before(async () => {
    h = await startConnectHarnessWithOidc({ mode: 'oidc' }, { env: ENV });
  });
  after(async () => {
    await h.close();
  });

  test('the cap-th start is a flow; the next is 429 with Retry-After until the session expires, and no provider work is done', async () => {
    const session = await h.createSession({ tenant_id: 'tenant-cap', user_id: 'user-cap' });
    for (let i = 0; i < CAP; i += 1) await h.startFlow('acme', session.session_token);
    const discoveriesBefore = h.oidc.requestCounts().discovery;
    const refused = await h.postConnect('acme', session.session_token);
    assert.equal(refused.status, 429, refused.text);
    assert.match(refused.headers.get('content-type') ?? '', /^application\/problem\+json/);
    assert.deepEqual(refused.json, expectedCapProblem(refused.headers.get('x-request-id')));
    const retryAfter = Number(refused.headers.get('retry-after'));
    const untilExpiry = (Date.parse(session.expires_at) - Date.now()) / 1000;
    assert.ok(
      retryAfter > 0 && retryAfter <= Math.ceil(untilExpiry) + 1,
      `Retry-After ${retryAfter}`,
    );
    assert.equal(h.oidc.requestCounts().discovery, discoveriesBefore, 'no provider work done');

    // Another session of the same user is counted on its own.
    const fresh = await h.createSession({ tenant_id: 'tenant-cap', user_id: 'user-cap' });
    await h.startFlow('acme', fresh.session_token);
  });

  test('a refused start (unknown provider parameter) does not use up the session', async () => {
    const session = await h.createSession({ tenant_id: 'tenant-cap', user_id: 'user-bad' });
    for (let i = 0; i < CAP + 2; i += 1) {
      const bad = await h.postConnect('acme', session.session_token, { nope: 'x' });
      assert.equal(bad.status, 400, bad.text);
    }
    for (let i = 0; i < CAP; i += 1) await h.startFlow('acme', session.session_token);
  });
});

describe('when two replicas share a Redis store, then the per-session cap counts the starts of both', () => {
  let redis: RedisServerHandle;
  let a: OidcConnectHarness;
  let b: Stack;
  let bOidc: OidcServer | undefined;
  before(async () => {
    redis = await startRedis();
    a = await startConnectHarnessWithOidc({ mode: 'oidc' }, { env: ENV, redisUrl: redis.url });
    // Replica B: the same Redis (and prefix), its own process state, its own provider stand-in.
    // Its audit key is given: a connect start needs neither it nor replica A's master key.
    b = await startStack({
      listen: true,
      redisUrl: redis.url,
      env: ENV,
      auditHmacKey: randomBytes(32),
      providers: async (publicUrl) => {
        bOidc = await startOidcServer({
          mode: 'oidc',
          clients: [{ ...ACME_CLIENT, redirect_uris: [`${publicUrl}/v1/oauth/callback/acme`] }],
        });
        return [
          {
            entry: bOidc.catalogueEntry('acme'),
            credentials: {
              clientId: ACME_CLIENT.client_id,
              clientSecret: ACME_CLIENT.client_secret,
            },
            allowInsecureUrls: true,
          },
        ];
      },
    });
  });
  after(async () => {
    await a?.close();
    await b?.close();
    await bOidc?.close();
    await redis?.stop();
  });

  const startOnB = (sessionToken: string) =>
    fetch(`${b.publicUrl}/v1/connect/acme`, {
      method: 'POST',
      redirect: 'manual',
      headers: {
        accept: 'application/json',
        'content-type': 'application/json',
        authorization: `Bearer ${sessionToken}`,
      },
      body: '{}',
    });

  test('starts split between the replicas reach the cap together', async () => {
    const session = await a.createSession({ tenant_id: 'tenant-cap', user_id: 'user-two' });
    await a.startFlow('acme', session.session_token);
    assert.equal((await startOnB(session.session_token)).status, 200);
    await a.startFlow('acme', session.session_token);
    const refused = await startOnB(session.session_token);
    assert.equal(refused.status, 429);
    assert.deepEqual(await refused.json(), expectedCapProblem(refused.headers.get('x-request-id')));
    const onA = await a.postConnect('acme', session.session_token);
    assert.equal(onA.status, 429, onA.text);
  });
});
