import { strict as assert } from 'node:assert';
import { after, before, describe, it } from 'node:test';
import { openTokenSet } from '../../../src/links/sealing/token-vault.js';
import { startOidcServer, type OidcServer } from '../../support/oidc-server.js';
import { TEST_REDIRECT_URI } from '../../support/provider-link.js';
import { startReleaseCluster, type ReleaseCluster } from '../../support/release-cluster.js';

/**
 * THE RACE: four service processes on one Redis, 50 concurrent callers each, one link whose access
 * token has expired, node-oidc-provider rotating refresh tokens (and revoking the whole grant when
 * a spent one is replayed, RFC 9700 §4.14.2). Exactly one refresh may reach the provider.
 */

const CLIENT = {
  client_id: 'race-client',
  client_secret: 'race-secret-that-is-long-enough-000',
  redirect_uris: [TEST_REDIRECT_URI],
};
const CALLERS_PER_REPLICA = 50;
let slowRefresh = false;

describe('refresh race across replicas', () => {
  let oidc: OidcServer;
  let cluster: ReleaseCluster;

  before(async () => {
    oidc = await startOidcServer({ mode: 'oauth', clients: [CLIENT], rotateRefreshTokens: true });
    // A provider that takes 300 ms to refresh: every caller arrives while the first refresh is in
    // flight, so the race is real rather than won by timing.
    oidc.provider.use(async (ctx, next) => {
      if (ctx.method === 'POST' && ctx.path === '/token' && slowRefresh)
        await new Promise((r) => setTimeout(r, 300));
      await next();
    });
    cluster = await startReleaseCluster({
      replicas: 4,
      providerId: 'raceas',
      entry: oidc.catalogueEntry('raceas'),
      clientId: CLIENT.client_id,
      clientSecret: CLIENT.client_secret,
      completeLogin: (u, o) => oidc.completeLogin(u, o),
    });
  });
  after(async () => {
    await cluster?.stop();
    await oidc?.close();
  });

  it('when 4 replicas × 50 callers ask for an expired token at once, then one refresh reaches the provider and all get the same new token', async () => {
    const link = await cluster.connectLink({
      linkId: 'lnk_race_1',
      accessTokenExpiresAtMs: Date.now() - 1000,
    });
    const old = await openTokenSet(cluster.vault, link, link.tokens!);
    const grant = await cluster.createGrant({
      service_id: 'billing',
      tenant_id: 'tenant-a',
      purpose: 'race test',
    });
    assert.equal(grant.status, 201);
    assert.equal(oidc.tokenRequests().refresh_token ?? 0, 0);

    slowRefresh = true;
    const calls = cluster.replicas.flatMap((_r, i) =>
      Array.from({ length: CALLERS_PER_REPLICA }, () => cluster.requestToken(i, link.id)),
    );
    const results = await Promise.all(calls);
    slowRefresh = false;

    assert.deepEqual(
      results.map((r) => r.status),
      results.map(() => 200),
    );
    const tokens = new Set(results.map((r) => r.body.access_token));
    assert.equal(tokens.size, 1, 'every caller got the same token');
    const [released] = tokens;
    assert.notEqual(released, old.accessToken.reveal());
    assert.equal(oidc.tokenRequests().refresh_token, 1, 'exactly one refresh reached the provider');

    const stored = (await cluster.store.getLink(link.id))!;
    const now = await openTokenSet(cluster.vault, stored, stored.tokens!);
    assert.equal(now.accessToken.reveal(), released);
    assert.notEqual(now.refreshToken!.reveal(), old.refreshToken!.reveal());
    assert.equal(stored.version, link.version + 1, 'one write');
    assert.equal((await oidc.introspect(String(released))).active, true);

    // The stored (rotated) refresh token is live at the provider.
    assert.equal((await oidc.introspect(now.refreshToken!.reveal())).active, true);
    // A token refreshed moments ago answers a forced refresh on any replica, without another refresh.
    const next = await cluster.requestToken(3, link.id, { force_refresh: true });
    assert.equal(next.status, 200);
    assert.equal(next.body.access_token, released);
    assert.equal(oidc.tokenRequests().refresh_token, 1);
  });
});
