import assert from 'node:assert/strict';
import { generateKeyPairSync, verify } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import {
  LinkvaultApiError,
  LinkvaultClient,
  type LinkvaultClientOptions,
} from '../../packages/node/src/client.js';
import { ServiceTokenMinter } from '../../packages/node/src/service-jwt.js';
import { startConnectHarness, type ConnectHarness } from '../support/connect-harness.js';
import { freePort } from '../support/free-port.js';
import { startOidcServer, type OidcServer } from '../support/oidc-server.js';
import { testProviderEntry } from '../support/test-catalogue.js';

/**
 * The Node SDK (packages/node) against a real linkvault (SQLite stack, listening) and a real
 * OAuth server (node-oidc-provider): session, connect, grant, cached getToken, typed errors.
 */

const ACME = { client_id: 'lv-acme', client_secret: 'acme-client-secret-0123456789abcdef' };

describe('@linkvault/node against a running linkvault', () => {
  let h: ConnectHarness;
  let oidc: OidcServer;
  /** Requests the SDK clients sent, as "METHOD /path". */
  const sent: string[] = [];
  let clockMs = Date.now();

  const countingFetch: typeof fetch = (input, init) => {
    const url = new URL(String(input));
    sent.push(`${init?.method ?? 'GET'} ${url.pathname}`);
    return fetch(input, init);
  };
  const sentTo = (method: string, path: string) =>
    sent.filter((s) => s === `${method} ${path}`).length;

  function client(
    serviceId: string,
    kid: string,
    key: LinkvaultClientOptions['key'],
    extra: Partial<LinkvaultClientOptions> = {},
  ): LinkvaultClient {
    return new LinkvaultClient({
      baseUrl: h.publicUrl,
      serviceId,
      kid,
      key,
      audience: h.services.audience,
      fetch: countingFetch,
      now: () => clockMs,
      ...extra,
    });
  }
  const crm = () => client('crm-sync', 'crm-hs', h.services.env.LV_TEST_CRM_SECRET!);
  const billing = (extra: Partial<LinkvaultClientOptions> = {}) =>
    client('billing', 'billing-hs', h.services.env.LV_TEST_BILLING_SECRET!, extra);

  before(async () => {
    const deadPort = await freePort();
    h = await startConnectHarness({
      providers: async (publicUrl) => {
        oidc = await startOidcServer({
          mode: 'oauth',
          clients: [{ ...ACME, redirect_uris: [`${publicUrl}/v1/oauth/callback/acme`] }],
        });
        return [
          {
            entry: oidc.catalogueEntry('acme'),
            credentials: { clientId: ACME.client_id, clientSecret: ACME.client_secret },
            allowInsecureUrls: true,
          },
          {
            // Nothing listens here: every exchange or refresh with it fails to connect.
            entry: testProviderEntry('dead', `http://127.0.0.1:${deadPort}`),
            credentials: { clientId: 'c', clientSecret: 's' },
            allowInsecureUrls: true,
          },
        ];
      },
    });
  });
  after(async () => {
    await h.close();
    await oidc.close();
  });

  /** Session through the SDK, then the user's real connect at the provider; returns the link id. */
  async function connectUser(lv: LinkvaultClient, userId: string): Promise<string> {
    const session = await lv.createSession({ tenant_id: 'tenant-a', user_id: userId });
    const flow = await h.startFlow('acme', session.session_token);
    const back = await oidc.completeLogin(flow.authorizationUrl, { accountId: userId });
    const answer = await h.callback(back, flow.cookie, { headers: { accept: 'application/json' } });
    assert.equal(answer.status, 200, answer.text);
    assert.equal(answer.json!.status, 'connected');
    return answer.json!.link_id as string;
  }

  test('when a service creates a session, the user connects and a grant is made, then 50 concurrent getToken callers send one request per link per token lifetime', async () => {
    const lv = crm();
    const linkId = await connectUser(lv, 'user-1');
    const link = await lv.getLink(linkId);
    assert.equal(link.status, 'active');
    assert.deepEqual(
      (await lv.listLinks({ tenant_id: 'tenant-a', user_id: 'user-1' })).map((l) => l.id),
      [linkId],
    );
    const grant = await lv.createGrant({ service_id: 'billing', link_id: linkId, purpose: 'sync' });
    assert.ok((await lv.listGrants('billing')).some((g) => g.id === grant.id));

    const sdk = billing();
    const path = `/v1/links/${linkId}/token`;
    const first = await Promise.all(Array.from({ length: 50 }, () => sdk.getToken(linkId)));
    assert.equal(sentTo('POST', path), 1);
    assert.equal(new Set(first.map((t) => t.access_token)).size, 1);
    // The token is the provider's own, live.
    assert.equal((await oidc.introspect(first[0]!.access_token)).active, true);

    // Within the lifetime: served from the cache.
    await Promise.all(Array.from({ length: 50 }, () => sdk.getToken(linkId)));
    assert.equal(sentTo('POST', path), 1);

    // Near expiry (inside the 60 s lead): one new request for all 50 callers.
    clockMs = Date.parse(first[0]!.expires_at!) - 59_000;
    await Promise.all(Array.from({ length: 50 }, () => sdk.getToken(linkId)));
    assert.equal(sentTo('POST', path), 2);
    // A second link is a second request, not a share of the first's.
    clockMs = Date.now();
    const second = await connectUser(lv, 'user-2');
    await lv.createGrant({ service_id: 'billing', link_id: second, purpose: 'sync' });
    await Promise.all(
      Array.from({ length: 50 }, (_, i) => sdk.getToken(i % 2 === 0 ? linkId : second)),
    );
    assert.equal(sentTo('POST', path), 2);
    assert.equal(sentTo('POST', `/v1/links/${second}/token`), 1);
    assert.equal(oidc.tokenRequests().authorization_code, 2);
  });

  test('when the caller lacks the role or the grant, then a typed 403 with the request id', async () => {
    const linkId = await connectUser(crm(), 'user-3');
    const auditor = client('auditor', 'auditor-hs', h.services.env.LV_TEST_AUDITOR_SECRET!);
    const forbidden = await auditor.getToken(linkId).catch((e: unknown) => e);
    assert.ok(forbidden instanceof LinkvaultApiError);
    assert.equal(forbidden.code, 'forbidden');
    assert.equal(forbidden.status, 403);
    assert.match(String(forbidden.requestId), /^[\w-]+$/);
    const noGrant = await billing()
      .getToken(linkId)
      .catch((e: unknown) => e);
    assert.ok(noGrant instanceof LinkvaultApiError);
    assert.deepEqual([noGrant.code, noGrant.status], ['no_grant', 403]);
  });

  test('when the link needs the user again, then a typed 409 reauth_required', async () => {
    const link = await h.seedLink({ providerId: 'acme', status: 'needs_reauth' });
    await h.addGrant({ serviceId: 'billing', linkId: link.id });
    const err = await billing()
      .getToken(link.id)
      .catch((e: unknown) => e);
    assert.ok(err instanceof LinkvaultApiError);
    assert.deepEqual([err.code, err.status], ['reauth_required', 409]);
  });

  test('when the link is revoked, then getToken raises a typed 410 and no cached token is served after invalidateToken', async () => {
    const lv = crm();
    const linkId = await connectUser(lv, 'user-4');
    await lv.createGrant({ service_id: 'billing', link_id: linkId, purpose: 'sync' });
    const sdk = billing();
    await sdk.getToken(linkId);
    const record = await lv.revokeLink(linkId, { reason: 'offboarding' });
    assert.deepEqual([record.link_id, record.revoked_by], [linkId, 'service']);
    sdk.invalidateToken(linkId);
    for (let i = 0; i < 2; i++) {
      const err = await sdk.getToken(linkId).catch((e: unknown) => e);
      assert.ok(err instanceof LinkvaultApiError);
      assert.deepEqual([err.code, err.status], ['link_revoked', 410]);
    }
    assert.equal(sentTo('POST', `/v1/links/${linkId}/token`), 3);
    assert.equal((await lv.getRevocation(linkId)).link_id, linkId);
  });

  test('when the provider is unavailable, then the SDK waits the Retry-After, retries, and raises a typed 503', async () => {
    const link = await h.seedLink({ providerId: 'dead', expiresAtMs: Date.now() - 1000 });
    await h.addGrant({ serviceId: 'billing', linkId: link.id });
    const waits: number[] = [];
    const sdk = billing({
      maxRetries: 1,
      sleep: async (ms) => {
        waits.push(ms);
      },
    });
    const err = await sdk.getToken(link.id).catch((e: unknown) => e);
    assert.ok(err instanceof LinkvaultApiError);
    assert.deepEqual([err.code, err.status], ['provider_unavailable', 503]);
    assert.ok(err.retryAfterSeconds !== null && err.retryAfterSeconds >= 1);
    assert.deepEqual(waits, [err.retryAfterSeconds * 1000]);
    assert.equal(sentTo('POST', `/v1/links/${link.id}/token`), 2);
  });

  test('when the service signs with ES256, then linkvault accepts it', async () => {
    const es = client('crm-sync', 'crm-es', h.services.keys['crm-es']!.signingKey);
    assert.ok(Array.isArray(await es.listLinks({ tenant_id: 'nobody' })));
    assert.ok((await es.listProviders()).some((p) => p.id === 'acme'));
  });
});

describe('service JWTs minted by the SDK', () => {
  const decode = (part: string) =>
    JSON.parse(Buffer.from(part, 'base64url').toString()) as Record<string, unknown>;

  test('when a JWT is minted, then it has kid, iss, aud, iat and exp at most 300 s later, and is reused until near expiry', () => {
    let now = 1_700_000_000_000;
    const minter = new ServiceTokenMinter(
      { serviceId: 'svc', kid: 'k1', key: 'x'.repeat(32), audience: 'lv' },
      () => now,
    );
    const token = minter.token();
    const [header, claims] = token.split('.').map((p, i) => (i < 2 ? decode(p) : p)) as [
      Record<string, unknown>,
      Record<string, unknown>,
    ];
    assert.deepEqual(header, { alg: 'HS256', typ: 'JWT', kid: 'k1' });
    assert.deepEqual(claims, { iss: 'svc', aud: 'lv', iat: 1_700_000_000, exp: 1_700_000_120 });
    now += 80_000;
    assert.equal(minter.token(), token);
    now += 11_000;
    assert.notEqual(minter.token(), token);
    assert.throws(
      () =>
        new ServiceTokenMinter({
          serviceId: 's',
          kid: 'k',
          key: 'x'.repeat(32),
          lifetimeSeconds: 301,
        }),
      RangeError,
    );
    assert.throws(
      () => new ServiceTokenMinter({ serviceId: 's', kid: 'k', key: 'short' }),
      TypeError,
    );
  });

  test('when an RS256 key signs, then node:crypto verifies the signature with the public key', () => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const pem = privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
    const minter = new ServiceTokenMinter({ serviceId: 'svc', kid: 'r1', key: pem });
    assert.equal(minter.alg, 'RS256');
    const [h64, c64, s64] = minter.token().split('.') as [string, string, string];
    assert.equal(decode(h64).alg, 'RS256');
    assert.ok(
      verify('sha256', Buffer.from(`${h64}.${c64}`), publicKey, Buffer.from(s64, 'base64url')),
    );
    assert.throws(
      () => new ServiceTokenMinter({ serviceId: 'svc', kid: 'r1', key: pem, alg: 'ES256' }),
      TypeError,
    );
  });
});
