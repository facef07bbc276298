import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  parseRecord,
  PROVIDER_REVOCATION_JOB_KIND,
  providerJobId,
  type ProviderRevocationPayload,
} from '../../../src/links/revoke/revocation.js';
import type { LinkRecord } from '../../../src/links/link.js';
import {
  startTokenEndpointStandIn,
  type TokenEndpointStandIn,
} from '../../support/provider-stand-ins.js';
import { sealTokenSet } from '../../../src/links/sealing/token-vault.js';
import { testProviderEntry } from '../../support/test-catalogue.js';
import { startStack, tokenSet, type Stack } from './revocation-harness.js';

/**
 * The queued job is the durable intent of a revocation: it is written before the tombstone. These
 * cases put the store in the state a process leaves when it dies between those writes.
 */
describe('a revocation interrupted between its writes', () => {
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
      startWorker: false,
      worker: { takeoverGraceMs: 10_000 },
    });
  });
  after(async () => {
    await stack.close();
    await standIn.close();
  });

  /** The job revokeLink writes first, as it would have written it `agoMs` ago. */
  async function queueIntent(link: LinkRecord, agoMs: number): Promise<void> {
    const payload: ProviderRevocationPayload = {
      link_id: link.id,
      tenant_id: link.tenantId,
      user_id: link.userId,
      provider_id: link.providerId,
      link_version: link.version,
      role: 'link',
      sealed: link.tokens!,
      endpoint_variables: {},
      revoked_by: 'user',
      service_id: 'crm-sync',
      reason: 'user_request',
      request_id: 'req-interrupted',
      bulk_job_id: null,
      requested_at_ms: Date.now() - agoMs,
    };
    await stack.store.enqueue({
      id: providerJobId(link.id, link.version),
      kind: PROVIDER_REVOCATION_JOB_KIND,
      payload: { ...payload },
      attempts: 0,
      runAtMs: Date.now() - agoMs,
    });
  }

  it('when the request may still be writing its tombstone, then the job waits instead of acting', async () => {
    standIn.addRefreshToken('rt_int_wait');
    const link = await stack.createLink({
      tenantId: 'acme',
      userId: 'u1',
      providerId: 'std',
      tokens: tokenSet('at_int_wait', 'rt_int_wait'),
    });
    await queueIntent(link, 0);
    const before = standIn.revocationCounts().requests;
    await stack.worker.runOnce();
    assert.equal((await stack.store.getLink(link.id))!.status, 'active');
    assert.equal(standIn.revocationCounts().requests, before);
    assert.equal(await stack.store.countJobs(), 1);
    assert.deepEqual(
      await stack.store.claimJobs(Date.now(), 10, 1000),
      [],
      'rescheduled to the end of the grace period',
    );
  });

  it('when the process died before the tombstone, then the worker finishes the revocation the job stands for', async () => {
    standIn.addRefreshToken('rt_int_dead');
    const link = await stack.createLink({
      tenantId: 'acme',
      userId: 'u2',
      providerId: 'std',
      tokens: tokenSet('at_int_dead', 'rt_int_dead'),
    });
    const queued = await stack.store.countJobs();
    await queueIntent(link, 60_000);
    await stack.worker.runOnce();
    const stored = (await stack.store.getLink(link.id))!;
    assert.equal(stored.status, 'revoked');
    assert.equal(stored.tokens, null);
    const record = parseRecord((await stack.store.getRevocation(link.id))!.record);
    assert.equal(record.revoked_by, 'user');
    assert.equal(record.reason, 'user_request');
    assert.deepEqual(record.provider_revocation, { status: 'confirmed', attempts: 1 });
    assert.equal(standIn.liveRefreshTokens().includes('rt_int_dead'), false);
    assert.equal(await stack.store.countJobs(), queued);
  });

  it('when the link moved on (refreshed) and was never tombstoned, then the stale job is dropped and the live grant is left alone', async () => {
    standIn.addRefreshToken('rt_int_stale');
    const link = await stack.createLink({
      tenantId: 'acme',
      userId: 'u3',
      providerId: 'std',
      tokens: tokenSet('at_int_stale', 'rt_int_stale'),
    });
    const queued = await stack.store.countJobs();
    await queueIntent(link, 60_000);
    // A refresh wrote the link after the job's copy was taken.
    const moved = await stack.store.saveLink({ ...link, updatedAtMs: Date.now() }, link.version);
    assert.ok(moved);
    const before = standIn.revocationCounts().requests;
    await stack.worker.runOnce();
    assert.equal((await stack.store.getLink(link.id))!.status, 'active');
    assert.equal(standIn.revocationCounts().requests, before);
    assert.equal(standIn.liveRefreshTokens().includes('rt_int_stale'), true);
    assert.equal(
      await stack.store.countJobs(),
      queued,
      'the stale copy of the sealed tokens is gone',
    );
  });

  it('when a refresh that lost to the tombstone hands over its new tokens, then they are revoked at the provider and never stored', async () => {
    standIn.addRefreshToken('rt_int_orphan_old');
    const link = await stack.createLink({
      tenantId: 'acme',
      userId: 'u4',
      providerId: 'std',
      tokens: tokenSet('at_int_orphan_old', 'rt_int_orphan_old'),
    });
    await stack.revocation.revokeLink(link.id, {
      revokedBy: 'user',
      serviceId: null,
      reason: 'user_request',
      requestId: null,
    });
    // What a refresh in flight obtained after the tombstone (a rotated refresh token).
    standIn.addRefreshToken('rt_int_orphan_new');
    const tombstoned = (await stack.store.getLink(link.id))!;
    const sealed = await sealTokenSet(
      stack.vault,
      tombstoned,
      tokenSet('at_int_orphan_new', 'rt_int_orphan_new'),
      null,
    );
    await stack.revocation.revokeOrphanedTokens(tombstoned, sealed, 'req-orphan');
    await stack.worker.runOnce();
    await stack.worker.runOnce();
    assert.deepEqual(
      standIn.liveRefreshTokens().filter((t) => t.startsWith('rt_int_orphan')),
      [],
    );
    const after = (await stack.store.getLink(link.id))!;
    assert.equal(after.tokens, null);
    assert.equal(after.version, tombstoned.version);
    const orphan = (await stack.auditEvents()).find(
      (e) => e.type === 'link.orphan_tokens_revoked' && e.data.link_id === link.id,
    );
    assert.equal(orphan?.data.outcome, 'confirmed');
    // The link's own record is the revocation's, untouched by the orphan job.
    assert.equal(
      parseRecord((await stack.store.getRevocation(link.id))!.record).revoked_by,
      'user',
    );
  });
});
