import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startOidcServer, type OidcServer } from '../../support/oidc-server.js';
import { TEST_REDIRECT_URI } from '../../support/provider-link.js';
import { startReleaseCluster, type ReleaseCluster } from '../../support/release-cluster.js';

/**
 * A deleted grant never releases a token once DELETE /v1/grants/:id has returned, on any replica:
 * two service processes on one Redis, both releasing the link in a loop (so any per-process state
 * about the grant is warm), the grant deleted through one of them mid-stream. Every request sent
 * after the DELETE answered is refused 403 no_grant on both replicas, and every 200 has its
 * token.released record (the atomic release step stored it before the grant went).
 */

const CLIENT = {
  client_id: 'grant-del-client',
  client_secret: 'grant-del-secret-that-is-long-enough-0',
  redirect_uris: [TEST_REDIRECT_URI],
};

describe('grant deletion seen by every replica', () => {
  let oidc: OidcServer;
  let cluster: ReleaseCluster;

  before(async () => {
    oidc = await startOidcServer({ mode: 'oauth', clients: [CLIENT], rotateRefreshTokens: true });
    cluster = await startReleaseCluster({
      replicas: 2,
      providerId: 'grantdelas',
      entry: oidc.catalogueEntry('grantdelas'),
      clientId: CLIENT.client_id,
      clientSecret: CLIENT.client_secret,
      completeLogin: (u, o) => oidc.completeLogin(u, o),
    });
  });
  after(async () => {
    await cluster?.stop();
    await oidc?.close();
  });

  async function deleteGrant(id: string): Promise<number> {
    const res = await fetch(`${cluster.replicas[0]!.url}/v1/grants/${id}`, {
      method: 'DELETE',
      headers: { authorization: cluster.services.bearer('crm-hs') },
    });
    await res.arrayBuffer();
    return res.status;
  }

  for (const shape of ['link', 'tenant'] as const) {
    it(`when a ${shape} grant is deleted while both replicas release, then no request sent after the DELETE returned gets a token`, async () => {
      const link = await cluster.connectLink({
        linkId: `lnk_grant_del_${shape}`,
        tenantId: `tenant-del-${shape}`,
      });
      const created = await cluster.createGrant({
        service_id: 'billing',
        ...(shape === 'link' ? { link_id: link.id } : { tenant_id: link.tenantId }),
        purpose: 'deletion test',
      });
      assert.equal(created.status, 201);
      const grantId = String(created.body.id);
      for (const replica of [0, 1])
        assert.equal((await cluster.requestToken(replica, link.id)).status, 200);

      let deletedAt: number | null = null;
      let stop = false;
      const outcomes: { sentAt: number; status: number; code: unknown }[] = [];
      const loop = async (replica: number): Promise<void> => {
        while (!stop) {
          const sentAt = performance.now();
          const res = await cluster.requestToken(replica, link.id);
          outcomes.push({ sentAt, status: res.status, code: res.body.code });
        }
      };
      const loops = [0, 0, 1, 1].map(loop);
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(await deleteGrant(grantId), 204);
      deletedAt = performance.now();
      await new Promise((resolve) => setTimeout(resolve, 300));
      stop = true;
      await Promise.all(loops);

      const after = outcomes.filter((o) => o.sentAt > deletedAt!);
      assert.ok(after.length > 0, 'requests were sent after the deletion');
      for (const o of after) assert.deepEqual([o.status, o.code], [403, 'no_grant']);
      assert.ok(outcomes.some((o) => o.sentAt < deletedAt! && o.status === 200));
      assert.ok(outcomes.every((o) => o.status === 200 || o.code === 'no_grant'));

      const shard = `t:${link.tenantId}`;
      const events = [];
      for (let cursor: string | undefined; ;) {
        const page = await cluster.store.readAuditShard(shard, cursor, 1000);
        if (page.length === 0) break;
        events.push(...page);
        cursor = page[page.length - 1]!.seq;
      }
      const released = events.filter(
        (e) => e.type === 'token.released' && e.data['grant_id'] === grantId,
      );
      const granted = outcomes.filter((o) => o.status === 200).length + 2;
      assert.equal(released.length, granted, 'every 200 has its release record, and only those');
    });
  }
});
