import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { createBackgroundRefresher } from '../../../src/links/release/background-refresher.js';
import { buildFeatures } from '../../../src/features.js';
import { REFRESH_UNCERTAIN_KEY } from '../../../src/links/release/refresh-coordinator.js';
import {
  startTokenEndpointStandIn,
  type TokenEndpointStandIn,
} from '../../support/provider-stand-ins.js';
import type { Store } from '../../../src/store/store.js';
import { createTestOAuth, type TestOAuth } from '../../support/provider-link.js';
import { createReleaseHarness, type ReleaseHarness } from '../../support/release-harness.js';
import { testProviderEntry } from '../../support/test-catalogue.js';

/** Ahead-of-expiry refresh: which links, how often, one replica per link, clean stop. */

describe('background refresher', () => {
  let standIn: TokenEndpointStandIn;
  let t: TestOAuth;
  let h: ReleaseHarness;

  before(async () => {
    standIn = await startTokenEndpointStandIn({ rotate: true });
    t = createTestOAuth({
      entry: testProviderEntry('bg', standIn.url, { account_id: { from: 'none' } }),
      clientId: standIn.client.clientId,
      clientSecret: standIn.client.clientSecret,
    });
    h = await createReleaseHarness({ oauth: t.oauth });
  });
  after(async () => {
    await h.close();
    await standIn.close();
  });

  async function seed(
    expiresInMs: number | null,
    extra: {
      status?: 'active' | 'needs_reauth';
      metadata?: Record<string, string>;
      refresh?: boolean;
    } = {},
  ) {
    const rt = `rt_${randomBytes(12).toString('base64url')}`;
    standIn.addRefreshToken(rt);
    return h.seedLink({
      providerId: 'bg',
      refreshToken: extra.refresh === false ? null : rt,
      expiresAtMs: expiresInMs === null ? null : Date.now() + expiresInMs,
      grantedScopes: ['api:read'],
      ...(extra.status ? { status: extra.status } : {}),
      ...(extra.metadata ? { metadata: extra.metadata } : {}),
    });
  }

  it('when two replicas run a round over the same store, then exactly the due links are refreshed, each once', async () => {
    const soon = await seed(60_000);
    const expired = await seed(-5_000);
    const uncertain = await seed(3_600_000, {
      metadata: { [REFRESH_UNCERTAIN_KEY]: new Date().toISOString() },
    });
    const later = await seed(3_600_000);
    const never = await seed(null);
    const reauth = await seed(10_000, { status: 'needs_reauth' });
    const noRefresh = await seed(10_000, { refresh: false });
    const before = standIn.tokenRequests().refresh_token ?? 0;

    // A second replica: the same wiring over the same store and keys.
    const peer = await buildFeatures(h, {
      oauth: t.oauth,
      refreshLockTtlMs: 15_000,
      startRefresher: false,
      startWorker: false,
    });
    const second = peer.coordinator;
    const replicas = [h.coordinator, second].map((coordinator) =>
      createBackgroundRefresher({
        store: h.store,
        coordinator,
        log: h.log,
        now: Date.now,
        intervalMs: 60_000,
        leadMs: 300_000,
        jitterMs: 0,
      }),
    );
    const rounds = await Promise.all(replicas.map((r) => r.runOnce()));
    await Promise.all(peer.background.map((task) => task.stop()));

    assert.equal(
      (standIn.tokenRequests().refresh_token ?? 0) - before,
      3,
      'soon, expired and uncertain; each once',
    );
    assert.equal(rounds[0]!.refreshed + rounds[1]!.refreshed, 3);
    for (const link of [soon, expired, uncertain]) {
      const now = (await h.store.getLink(link.id))!;
      assert.equal(now.version, link.version + 1, link.id);
      assert.ok(now.accessTokenExpiresAtMs! > Date.now() + 3000_000);
      assert.ok(!(REFRESH_UNCERTAIN_KEY in now.metadata));
    }
    for (const link of [later, never, reauth, noRefresh])
      assert.equal((await h.store.getLink(link.id))!.version, link.version, link.id);
  });

  it('when a round runs, then its candidates come from the expiry index, soonest first and at most a batch, never from a scan of every link', async (ctx) => {
    // A store of its own: only these links exist.
    const own = await createReleaseHarness({ oauth: t.oauth });
    ctx.after(() => own.close());
    const seedOwn = async (expiresInMs: number) => {
      const rt = `rt_${randomBytes(12).toString('base64url')}`;
      standIn.addRefreshToken(rt);
      return own.seedLink({
        providerId: 'bg',
        refreshToken: rt,
        expiresAtMs: Date.now() + expiresInMs,
        grantedScopes: ['api:read'],
      });
    };
    const links = [await seedOwn(30_000), await seedOwn(10_000), await seedOwn(20_000)];
    await seedOwn(3_600_000);
    const asked: [number, number][] = [];
    const indexOnly: Pick<Store, 'listLinksExpiringBefore'> = {
      listLinksExpiringBefore: (cutoffMs, limit) => {
        asked.push([cutoffMs, limit]);
        return own.store.listLinksExpiringBefore(cutoffMs, limit);
      },
    };
    const order: string[] = [];
    const before = standIn.tokenRequests().refresh_token ?? 0;
    const refresher = createBackgroundRefresher({
      store: new Proxy(indexOnly as Store, {
        get(target, prop, receiver) {
          if (prop === 'scanLinkIds' || prop === 'getLink' || prop === 'listLinks')
            throw new Error(`the refresher must not call ${String(prop)}`);
          return Reflect.get(target, prop, receiver) as unknown;
        },
      }),
      coordinator: {
        refreshAhead: (id, leadMs) => (order.push(id), own.coordinator.refreshAhead(id, leadMs)),
      },
      log: own.log,
      now: Date.now,
      intervalMs: 60_000,
      leadMs: 300_000,
      jitterMs: 0,
      concurrency: 1,
      batchSize: 2,
    });
    const startedAt = Date.now();
    const round = await refresher.runOnce();
    assert.equal(asked.length, 1);
    assert.ok(
      asked[0]![0] >= startedAt + 300_000 && asked[0]![0] <= Date.now() + 300_000,
      'cutoff = now + lead',
    );
    assert.equal(asked[0]![1], 2);
    assert.deepEqual(order, [links[1]!.id, links[2]!.id], 'soonest first, one batch');
    assert.equal(round.refreshed, 2);
    assert.equal((standIn.tokenRequests().refresh_token ?? 0) - before, 2);
    // The next round takes the rest.
    await refresher.runOnce();
    assert.deepEqual(order.slice(2), [links[0]!.id]);
  });

  it('when started, then rounds run on the interval; stop() ends them and resolves', async () => {
    const due = await seed(1_000);
    const refresher = createBackgroundRefresher({
      store: h.store,
      coordinator: h.coordinator,
      log: h.log,
      now: Date.now,
      intervalMs: 20,
      leadMs: 300_000,
      jitterMs: 0,
    });
    refresher.start();
    for (let i = 0; (await h.store.getLink(due.id))!.version === due.version; i++) {
      assert.ok(i < 400, 'the scheduled round never refreshed the due link');
      await new Promise((r) => setTimeout(r, 10));
    }
    await refresher.stop();
    const count = standIn.tokenRequests().refresh_token ?? 0;
    await seed(1_000);
    await new Promise((r) => setTimeout(r, 100)); // time is the subject: no round may run after stop()
    assert.equal(standIn.tokenRequests().refresh_token ?? 0, count);
  });
});
