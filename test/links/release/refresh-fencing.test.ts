import { strict as assert } from 'node:assert';
import { after, before, describe, it } from 'node:test';
import { REFRESH_UNCERTAIN_KEY } from '../../../src/links/release/refresh-coordinator.js';
import { openTokenSet } from '../../../src/links/sealing/token-vault.js';
import { startHoldingProxy, type HoldingProxy } from '../../support/holding-proxy.js';
import { startOidcServer, type OidcServer } from '../../support/oidc-server.js';
import { TEST_REDIRECT_URI } from '../../support/provider-link.js';
import { startReleaseCluster, type ReleaseCluster } from '../../support/release-cluster.js';

/**
 * THE FENCING TEST: replica A takes the refresh lock and sends its refresh; the request is held
 * on the way (the provider never sees it) and A is frozen with SIGSTOP past the lock TTL. Replica
 * B takes the expired lock and refreshes (the provider rotates). A's request is then dropped and A
 * resumed: its answer is lost after sending, so it writes the "refresh uncertain" marker — a late
 * write with the version it read, which the store rejects. A re-reads and serves B's token; the
 * stored refresh token is B's (the old one is spent), and it works.
 */

const CLIENT = {
  client_id: 'fence-client',
  client_secret: 'fence-secret-that-is-long-enough-00',
  redirect_uris: [TEST_REDIRECT_URI],
};
const LOCK_TTL_SECONDS = 2;

describe('refresh fencing', () => {
  let oidc: OidcServer;
  let proxy: HoldingProxy;
  let cluster: ReleaseCluster;

  before(async () => {
    oidc = await startOidcServer({ mode: 'oauth', clients: [CLIENT], rotateRefreshTokens: true });
    proxy = await startHoldingProxy(oidc.url);
    cluster = await startReleaseCluster({
      replicas: 2,
      providerId: 'fenceas',
      entry: oidc.catalogueEntry('fenceas', { token_url: `${proxy.url}/token` }),
      clientId: CLIENT.client_id,
      clientSecret: CLIENT.client_secret,
      completeLogin: (u, o) => oidc.completeLogin(u, o),
      env: {
        LINKVAULT_PROVIDER_TIMEOUT_SECONDS: '1',
        LINKVAULT_REFRESH_LOCK_TTL_SECONDS: String(LOCK_TTL_SECONDS),
      },
    });
  });
  after(async () => {
    await cluster?.stop();
    await proxy?.close();
    await oidc?.close();
  });

  it('when the lock holder is frozen past the TTL while another replica refreshes, then its late write is rejected and the newer refresh token stays', async () => {
    const link = await cluster.connectLink({
      linkId: 'lnk_fence_1',
      accessTokenExpiresAtMs: Date.now() - 1000,
    });
    const old = await openTokenSet(cluster.vault, link, link.tokens!);
    const grant = await cluster.createGrant({
      service_id: 'billing',
      link_id: link.id,
      purpose: 'fencing test',
    });
    assert.equal(grant.status, 201);
    const a = cluster.replicas[0]!;

    // A takes the lock and sends its refresh; we catch it on the way and freeze A.
    const held = proxy.holdNext();
    const aCall = cluster.requestToken(0, link.id);
    const request = await held;
    assert.equal(request.path, '/token');
    a.pause();
    try {
      // Time is the subject here: A's lock must expire while A cannot act.
      await new Promise((r) => setTimeout(r, LOCK_TTL_SECONDS * 1000 + 500));
      const bResult = await cluster.requestToken(1, link.id);
      assert.equal(bResult.status, 200);
      assert.equal(
        oidc.tokenRequests().refresh_token,
        1,
        "B's refresh is the only one the provider saw",
      );
      const afterB = (await cluster.store.getLink(link.id))!;
      assert.equal(afterB.version, link.version + 1);

      // A's answer is lost after sending; A resumes.
      request.drop();
      a.resume();
      const aResult = await aCall;
      assert.equal(aResult.status, 200);
      assert.equal(aResult.body.access_token, bResult.body.access_token, "A serves B's token");

      const stored = (await cluster.store.getLink(link.id))!;
      assert.equal(stored.version, afterB.version, "A's late write was rejected");
      assert.ok(!(REFRESH_UNCERTAIN_KEY in stored.metadata));
      const tokens = await openTokenSet(cluster.vault, stored, stored.tokens!);
      assert.equal(tokens.accessToken.reveal(), bResult.body.access_token);
      assert.notEqual(tokens.refreshToken!.reveal(), old.refreshToken!.reveal());
      assert.ok(
        a.lines.some(
          (l) =>
            l.msg ===
            'refresh answer lost after sending; the provider may have rotated the refresh token',
        ),
        'A did attempt its late write',
      );
      const metrics = await (await fetch(`${a.url}/metrics`)).text();
      assert.match(
        metrics,
        /linkvault_refreshes_total\{provider="fenceas",outcome="maybe_delivered"\} 1/,
      );

      // The old refresh token is spent; the stored one is live.
      assert.equal((await oidc.introspect(tokens.refreshToken!.reveal())).active, true);
      // B's token was refreshed moments ago: a forced refresh is answered with it, not with another refresh.
      const again = await cluster.requestToken(0, link.id, { force_refresh: true });
      assert.equal(again.status, 200);
      assert.equal(again.body.access_token, bResult.body.access_token);
      assert.equal(oidc.tokenRequests().refresh_token, 1);
    } finally {
      a.resume();
    }
  });
});
