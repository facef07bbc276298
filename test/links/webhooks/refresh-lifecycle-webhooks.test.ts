import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { WEBHOOK_JOB_KIND } from '../../../src/links/webhooks/lifecycle-webhooks.js';
import {
  startTokenEndpointStandIn,
  type TokenEndpointStandIn,
} from '../../support/provider-stand-ins.js';
import { createTestOAuth } from '../../support/provider-link.js';
import { startStack, type Stack } from '../../support/stack.js';
import { testProviderEntry } from '../../support/test-catalogue.js';

/**
 * A provider outage during refreshes, as lifecycle events: the first failed refresh of a streak
 * queues link.refresh_failed (permanent: false), later failures of the same streak do not, and the
 * refresh that succeeds afterwards queues link.recovered.
 */
describe('refresh failures and recovery as webhook events', () => {
  let standIn: TokenEndpointStandIn;
  let stack: Stack;
  let nowMs = Date.now();

  before(async () => {
    standIn = await startTokenEndpointStandIn({ rotate: true });
    const entry = testProviderEntry('outageco', standIn.url, { account_id: { from: 'none' } });
    const credentials = {
      clientId: standIn.client.clientId,
      clientSecret: standIn.client.clientSecret,
    };
    stack = await startStack({
      oauth: createTestOAuth({ entry, ...credentials, providerTimeoutMs: 2000 }).oauth,
      auditHmacKey: randomBytes(32),
      now: () => nowMs,
      providers: [{ entry, credentials, allowInsecureUrls: true }],
    });
  });
  after(async () => {
    await stack?.close();
    await standIn?.close();
  });

  async function queuedEvents(): Promise<{ type: string; data: Record<string, unknown> }[]> {
    const found: { type: string; data: Record<string, unknown> }[] = [];
    for await (const job of stack.store.scanJobs())
      if (job.kind === WEBHOOK_JOB_KIND)
        found.push({
          type: String(job.payload.type),
          data: job.payload.data as Record<string, unknown>,
        });
    return found;
  }

  it('when refreshes fail twice and then succeed, then one refresh_failed and one recovered are queued', async () => {
    const endpoint = await request(stack.app)
      .post('/v1/webhook-endpoints')
      .set('Authorization', stack.services.bearer('crm-hs'))
      .send({ url: 'http://127.0.0.1:9/hooks' });
    assert.equal(endpoint.status, 201);
    const rt = `rt-${randomBytes(6).toString('hex')}`;
    standIn.addRefreshToken(rt);
    const link = await stack.seedLink({
      providerId: 'outageco',
      refreshToken: rt,
      expiresAtMs: nowMs - 1000,
    });
    await stack.addGrant({ serviceId: 'crm-sync', linkId: link.id });
    const token = () =>
      request(stack.app)
        .post(`/v1/links/${link.id}/token`)
        .set('Authorization', stack.services.bearer('crm-hs'))
        .send({});

    standIn.setDefault({ kind: 'status', status: 503 });
    assert.equal((await token()).status, 503);
    nowMs += 600_000; // past the link's back-off
    assert.equal((await token()).status, 503);
    assert.deepEqual(
      (await queuedEvents()).map((e) => e.type),
      ['link.refresh_failed'],
      'once per streak',
    );
    standIn.setDefault({ kind: 'normal' });
    nowMs += 600_000;
    const ok = await token();
    assert.equal(ok.status, 200, ok.text);
    const events = await queuedEvents();
    assert.deepEqual(events.map((e) => e.type).sort(), ['link.recovered', 'link.refresh_failed']);
    const failed = events.find((e) => e.type === 'link.refresh_failed')!;
    assert.deepEqual(failed.data, {
      link_id: link.id,
      tenant_id: link.tenantId,
      user_id: link.userId,
      provider_id: 'outageco',
      permanent: false,
      error_code: 'provider_unavailable',
    });
  });
});
