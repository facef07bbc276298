import { strict as assert } from 'node:assert';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import type { Store } from '../../src/store/store.js';
import { LinkvaultError } from '../../src/errors.js';
import { openTokenSet } from '../../src/links/sealing/token-vault.js';
import { startOidcServer, type OidcServer } from '../support/oidc-server.js';
import { expectedProblem } from '../support/problem-body.js';
import {
  connectViaProvider,
  createTestOAuth,
  TEST_REDIRECT_URI,
  type TestOAuth,
} from '../support/provider-link.js';
import { createReleaseHarness, type ReleaseHarness } from '../support/release-harness.js';

/**
 * POST /v1/links/:id/token against node-oidc-provider (refresh-token rotation on) through the real
 * OAuth adapter: validation, the happy path, min_validity_seconds, force_refresh, links without a
 * refresh token, audit fail-closed, and no key-service call in steady state.
 */

const CLIENT = {
  client_id: 'linkvault-test',
  client_secret: 'test-secret-that-is-long-enough-000',
  redirect_uris: [TEST_REDIRECT_URI],
};

describe('token route', () => {
  let oidc: OidcServer;
  let t: TestOAuth;
  let h: ReleaseHarness;
  let n = 0;

  before(async () => {
    oidc = await startOidcServer({ mode: 'oauth', clients: [CLIENT], rotateRefreshTokens: true });
    t = createTestOAuth({
      entry: oidc.catalogueEntry('acme'),
      clientId: CLIENT.client_id,
      clientSecret: CLIENT.client_secret,
    });
    h = await createReleaseHarness({ oauth: t.oauth });
    await h.addGrant({ serviceId: 'billing', tenantId: 'tenant-a' });
  });
  after(async () => {
    await h.close();
    await oidc.close();
  });

  const connect = (
    accessTokenExpiresAtMs?: number | null,
    connectedAtMs = Date.now() - 3_480_000,
  ) =>
    connectViaProvider({
      oauth: t.oauth,
      completeLogin: (u, o) => oidc.completeLogin(u, o),
      store: h.store,
      vault: h.vault,
      providerId: 'acme',
      linkId: `lnk_route_${++n}`,
      connectedAtMs,
      ...(accessTokenExpiresAtMs === undefined ? {} : { accessTokenExpiresAtMs }),
    });
  const token = (linkId: string, body?: unknown) => {
    const req = request(h.app)
      .post(`/v1/links/${linkId}/token`)
      .set('Authorization', h.services.bearer('billing-hs'));
    return body === undefined ? req : req.send(body as object);
  };
  const refreshes = () => oidc.tokenRequests().refresh_token ?? 0;
  const stored = async (linkId: string) => {
    const link = (await h.store.getLink(linkId))!;
    return { link, tokens: await openTokenSet(h.vault, link, link.tokens!) };
  };

  it('when the body is invalid, then 400 invalid_request naming the member, before any lookup', async () => {
    const cases: [unknown, string, string][] = [
      [{ scope: ['api:read'] }, 'scope', 'Unknown member in the request body'],
      [{ scopes: [] }, 'scopes', 'scopes must be an array of 1-100 scope strings'],
      [{ scopes: 'api:read' }, 'scopes', 'scopes must be an array of 1-100 scope strings'],
      [{ scopes: ['a b'] }, 'scopes', 'each scope must be a non-empty scope token (RFC 6749 §3.3)'],
      [
        { min_validity_seconds: -1 },
        'min_validity_seconds',
        'min_validity_seconds must be an integer from 0 to 86400',
      ],
      [
        { min_validity_seconds: 86_401 },
        'min_validity_seconds',
        'min_validity_seconds must be an integer from 0 to 86400',
      ],
      [
        { min_validity_seconds: 1.5 },
        'min_validity_seconds',
        'min_validity_seconds must be an integer from 0 to 86400',
      ],
      [
        { min_validity_seconds: '60' },
        'min_validity_seconds',
        'min_validity_seconds must be an integer from 0 to 86400',
      ],
      [{ force_refresh: 'yes' }, 'force_refresh', 'force_refresh must be a boolean'],
      [['force_refresh'], 'body', 'The body must be a JSON object'],
    ];
    for (const [body, parameter, detail] of cases) {
      const res = await token('lnk_does_not_matter', body);
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.deepEqual(
        res.body,
        expectedProblem(res, 'invalid_request', { detail, parameter }),
        JSON.stringify(body),
      );
      assert.equal(res.headers['cache-control'], 'no-store');
    }
  });

  it('when the token is fresh, then it is released as stored, audited as an HMAC, with no provider call', async () => {
    const link = await connect();
    const before = refreshes();
    const { tokens } = await stored(link.id);
    const res = await token(link.id);
    assert.equal(res.status, 200);
    assert.equal(res.headers['cache-control'], 'no-store');
    assert.match(res.headers['content-type'] ?? '', /^application\/json/);
    assert.deepEqual(res.body, {
      access_token: tokens.accessToken.reveal(),
      token_type: 'Bearer',
      expires_at: new Date(tokens.expiresAtMs!).toISOString(),
      scopes: ['api:read', 'api:write'],
      metadata: {},
    });
    assert.equal(refreshes(), before);
    assert.equal(
      (await oidc.introspect(res.body.access_token)).active,
      true,
      'the released token is the provider’s live token',
    );
    const event = (await h.store.readAudit())
      .filter((e) => e.type === 'token.released' && e.data.link_id === link.id)
      .at(-1);
    assert.ok(event);
    assert.equal(event.data.access_token, await h.audit.fingerprint(tokens.accessToken));
    assert.equal(event.data.service_id, 'billing');
    assert.equal(event.requestId, res.headers['x-request-id']);
    assert.ok(!JSON.stringify(await h.store.readAudit()).includes(tokens.accessToken.reveal()));
    assert.ok(!h.logText().includes(tokens.accessToken.reveal()));
    assert.ok(!h.logText().includes(tokens.refreshToken!.reveal()));
  });

  it('when min_validity_seconds exceeds what is left, then one refresh happens, the rotated token is stored first, and the new token is served', async () => {
    const link = await connect(Date.now() + 120_000);
    const old = await stored(link.id);
    const before = refreshes();

    const within = await token(link.id, { min_validity_seconds: 60 });
    assert.equal(within.status, 200);
    assert.equal(within.body.access_token, old.tokens.accessToken.reveal());
    assert.equal(refreshes(), before);

    const beyond = await token(link.id, { min_validity_seconds: 300 });
    assert.equal(beyond.status, 200);
    assert.equal(refreshes(), before + 1);
    assert.notEqual(beyond.body.access_token, old.tokens.accessToken.reveal());
    const now = await stored(link.id);
    assert.equal(now.link.version, old.link.version + 1);
    assert.equal(now.tokens.accessToken.reveal(), beyond.body.access_token);
    assert.notEqual(
      now.tokens.refreshToken!.reveal(),
      old.tokens.refreshToken!.reveal(),
      'the provider rotated; the new refresh token is stored',
    );
    assert.ok(Date.parse(beyond.body.expires_at) > Date.now() + 3000_000);
    assert.ok(now.link.lastRefreshedAtMs !== null);
    assert.equal((await oidc.introspect(beyond.body.access_token)).active, true);
  });

  it('when min_validity_seconds exceeds what a token just issued has, then it is served without refreshing again (unless forced)', async () => {
    const link = await connect(Date.now() + 120_000, Date.now());
    const before = refreshes();
    const res = await token(link.id, { min_validity_seconds: 300 });
    assert.equal(res.status, 200);
    assert.equal(
      refreshes(),
      before,
      'a token issued seconds ago is not refreshed for a longer one',
    );
    const forced = await token(link.id, { force_refresh: true });
    assert.equal(forced.status, 200);
    assert.equal(refreshes(), before + 1);
    // The refreshed token is "just issued" too: asking for more validity than it has does not refresh again.
    const again = await token(link.id, { min_validity_seconds: 86_400 });
    assert.equal(again.body.access_token, forced.body.access_token);
    assert.equal(refreshes(), before + 1);
  });

  it('when force_refresh is set, then the provider is asked even for a fresh token, and the next call reuses the result', async () => {
    const link = await connect();
    const old = await stored(link.id);
    const before = refreshes();
    const forced = await token(link.id, { force_refresh: true });
    assert.equal(forced.status, 200);
    assert.equal(refreshes(), before + 1);
    assert.notEqual(forced.body.access_token, old.tokens.accessToken.reveal());
    const next = await token(link.id);
    assert.equal(next.body.access_token, forced.body.access_token);
    assert.equal(refreshes(), before + 1);
    // A forced refresh moments after a refresh is served that refresh's token (one refresh for a
    // burst of callers that all saw the old token rejected).
    const burst = await token(link.id, { force_refresh: true });
    assert.equal(burst.body.access_token, forced.body.access_token);
    assert.equal(refreshes(), before + 1);
    // The stored (rotated) refresh token is the live one: once that window has passed, another
    // forced refresh works.
    const current = (await h.store.getLink(link.id))!;
    assert.ok(
      await h.store.saveLink(
        { ...current, lastRefreshedAtMs: current.lastRefreshedAtMs! - 60_000 },
        current.version,
      ),
    );
    const again = await token(link.id, { force_refresh: true });
    assert.equal(again.status, 200);
    assert.equal(refreshes(), before + 2);
  });

  it('when the link has no refresh token, then it is served while valid, force_refresh is 409 refresh_not_possible, and once expired 409 reauth_required', async () => {
    const valid = await h.seedLink({ refreshToken: null, expiresAtMs: Date.now() + 600_000 });
    const ok = await token(valid.id);
    assert.equal(ok.status, 200);
    assert.equal(ok.body.access_token, `at-${valid.id}`);
    const forced = await token(valid.id, { force_refresh: true });
    assert.equal(forced.status, 409);
    assert.deepEqual(
      forced.body,
      expectedProblem(forced, 'refresh_not_possible', {
        detail: 'The provider issued no refresh token for this link',
      }),
    );

    const never = await h.seedLink({ refreshToken: null, expiresAtMs: null });
    const served = await token(never.id, { min_validity_seconds: 86_400 });
    assert.equal(served.status, 200);
    assert.equal(served.body.expires_at, null);

    const expired = await h.seedLink({ refreshToken: null, expiresAtMs: Date.now() - 1000 });
    const gone = await token(expired.id);
    assert.equal(gone.status, 409);
    assert.equal(gone.body.code, 'reauth_required');
    assert.equal((await h.store.getLink(expired.id))!.status, 'needs_reauth');
  });

  it('when steady-state releases run, then the key service is not called', async () => {
    const link = await connect();
    await token(link.id);
    const calls = h.metrics.keyServiceCalls.total();
    for (let i = 0; i < 20; i++) assert.equal((await token(link.id)).status, 200);
    assert.equal(h.metrics.keyServiceCalls.total(), calls);
  });
});

describe('token route with an audit log that cannot append', () => {
  it('when appendAudit fails, then 503 audit_unavailable with Retry-After and no token in the body', async () => {
    let failAudit = false;
    const failing = (real: Store): Store =>
      new Proxy(real, {
        get(target, prop, receiver) {
          if (prop === 'appendAudit') {
            return (...args: Parameters<Store['appendAudit']>) =>
              failAudit
                ? Promise.reject(new LinkvaultError('store_unavailable'))
                : target.appendAudit(...args);
          }
          if (prop === 'commitRelease') {
            return (...args: Parameters<Store['commitRelease']>) =>
              failAudit
                ? Promise.reject(new LinkvaultError('store_unavailable'))
                : target.commitRelease(...args);
          }
          const value: unknown = Reflect.get(target, prop, receiver);
          return typeof value === 'function' ? value.bind(target) : value;
        },
      });
    const h = await createReleaseHarness({ wrapStore: failing });
    try {
      const link = await h.seedLink({ accessToken: 'canary-access-token-123' });
      await h.addGrant({ serviceId: 'billing', linkId: link.id });
      failAudit = true;
      const res = await request(h.app)
        .post(`/v1/links/${link.id}/token`)
        .set('Authorization', h.services.bearer('billing-hs'))
        .send({});
      assert.equal(res.status, 503);
      assert.equal(res.headers['retry-after'], '1');
      assert.equal(res.headers['cache-control'], 'no-store');
      assert.deepEqual(res.body, expectedProblem(res, 'audit_unavailable'));
      assert.ok(!res.text.includes('canary-access-token-123'));
      failAudit = false;
      const ok = await request(h.app)
        .post(`/v1/links/${link.id}/token`)
        .set('Authorization', h.services.bearer('billing-hs'))
        .send({});
      assert.equal(ok.body.access_token, 'canary-access-token-123');
    } finally {
      await h.close();
    }
  });
});
