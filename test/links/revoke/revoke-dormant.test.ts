import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { parseRecord } from '../../../src/links/revoke/revocation.js';
import {
  startTokenEndpointStandIn,
  type TokenEndpointStandIn,
} from '../../support/provider-stand-ins.js';
import { testProviderEntry } from '../../support/test-catalogue.js';
import { startStack, tokenSet, type Stack } from './revocation-harness.js';

const DAY_MS = 86_400_000;

/** RFC 9700 §4.14.2: with LINKVAULT_DORMANT_LINK_DAYS set, links nobody used for that long are revoked, audited as dormant. */
describe('dormant links', () => {
  let standIn: TokenEndpointStandIn;
  let stack: Stack;

  before(async () => {
    standIn = await startTokenEndpointStandIn();
    stack = await startStack({
      providers: [
        {
          entry: testProviderEntry('std', standIn.url),
          clientId: standIn.client.clientId,
          clientSecret: standIn.client.clientSecret,
        },
      ],
      worker: { dormantLinkDays: 30 },
      startWorker: false,
    });
  });
  after(async () => {
    await stack.close();
    await standIn.close();
  });

  it('when the sweep runs, then links unused for longer than the limit are revoked as dormant and the others are left alone', async () => {
    const now = Date.now();
    standIn.addRefreshToken('rt_dormant_old');
    const neverUsed = await stack.createLink({
      tenantId: 'acme',
      userId: 'u1',
      providerId: 'std',
      tokens: tokenSet('at_d1', 'rt_dormant_old'),
      createdAtMs: now - 40 * DAY_MS,
    });
    const usedLongAgo = await stack.createLink({
      tenantId: 'acme',
      userId: 'u2',
      providerId: 'std',
      tokens: tokenSet('at_d2', 'rt_d2'),
      createdAtMs: now - 90 * DAY_MS,
      lastUsedAtMs: now - 31 * DAY_MS,
    });
    const usedRecently = await stack.createLink({
      tenantId: 'acme',
      userId: 'u3',
      providerId: 'std',
      tokens: tokenSet('at_d3', 'rt_d3'),
      createdAtMs: now - 90 * DAY_MS,
      lastUsedAtMs: now - 2 * DAY_MS,
    });
    const young = await stack.createLink({
      tenantId: 'acme',
      userId: 'u4',
      providerId: 'std',
      tokens: tokenSet('at_d4', 'rt_d4'),
      createdAtMs: now - 29 * DAY_MS,
    });

    assert.equal(await stack.worker.sweepDormant(), 2);
    for (const link of [neverUsed, usedLongAgo]) {
      assert.equal((await stack.store.getLink(link.id))!.status, 'revoked');
      const record = parseRecord((await stack.store.getRevocation(link.id))!.record);
      assert.equal(record.revoked_by, 'admin');
      assert.equal(record.reason, 'dormant');
    }
    for (const link of [usedRecently, young])
      assert.equal((await stack.store.getLink(link.id))!.status, 'active');

    // The provider step runs like any other revocation.
    await stack.worker.runOnce();
    assert.equal(standIn.liveRefreshTokens().includes('rt_dormant_old'), false);
    const requested = (await stack.auditEvents())
      .filter((e) => e.type === 'link.revocation_requested' && e.data.reason === 'dormant')
      .map((e) => e.data.link_id);
    assert.deepEqual(new Set(requested), new Set([neverUsed.id, usedLongAgo.id]));

    // A second sweep finds nothing more to do.
    assert.equal(await stack.worker.sweepDormant(), 0);
  });

  it('when another replica holds the sweep lock, then this one does not sweep', async () => {
    const old = await stack.createLink({
      tenantId: 'acme',
      userId: 'u5',
      providerId: 'std',
      tokens: tokenSet('at_d5', 'rt_d5'),
      createdAtMs: Date.now() - 45 * DAY_MS,
    });
    const owner = await stack.store.acquireLock('revocation:dormant-sweep', 10_000);
    assert.ok(owner);
    try {
      assert.equal(await stack.worker.sweepDormant(), 0);
      assert.equal((await stack.store.getLink(old.id))!.status, 'active');
    } finally {
      await stack.store.releaseLock('revocation:dormant-sweep', owner);
    }
    assert.equal(await stack.worker.sweepDormant(), 1);
  });
});
