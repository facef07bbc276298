import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { createJobWorker } from '../../../src/jobs/job-worker.js';
import { createConfirmationExpiryJob } from '../../../src/links/connect/confirmation-expiry-job.js';
import {
  CONFIRMATION_EXPIRY_JOB_KIND,
  CONFIRMATION_TTL_SECONDS,
  confirmationExpiryJobId,
} from '../../../src/links/connect/connect.js';
import type { LinkRecord } from '../../../src/links/link.js';
import { openTokenSet } from '../../../src/links/sealing/token-vault.js';
import {
  APP_ORIGIN,
  startConnectHarnessWithOidc,
  type OidcConnectHarness,
} from '../../support/connect-harness.js';
import { startRedis, type RedisServerHandle } from '../../support/redis-server.js';

/**
 * Host confirmation (issue 11 item 1): a session with require_confirmation holds its new link as
 * pending_confirmation until POST /v1/confirmations/{id} names the session's tenant and user; a
 * pending link left unconfirmed is discarded (revoked at the provider) by a durable queue job.
 * node-oidc-provider is the real provider; the clock is the features' own, moved by the test.
 */

const TENANT = 'tenant-cf';
const JSON_ACCEPT = { accept: 'application/json' };

for (const storeKind of ['sqlite', 'redis'] as const) {
  describe(`when a session requires confirmation (${storeKind} store)`, () => {
    let h: OidcConnectHarness;
    let redis: RedisServerHandle | undefined;
    let clock = Date.now();
    before(async () => {
      if (storeKind === 'redis') redis = await startRedis();
      // The clock moves only forward, by the test, past the confirmation deadline.
      h = await startConnectHarnessWithOidc(
        { mode: 'oidc' },
        {
          now: () => clock,
          env: { LINKVAULT_REQUIRE_CONNECT_CONFIRMATION: 'false' },
          ...(redis ? { redisUrl: redis.url } : {}),
        },
      );
    });
    after(async () => {
      await h?.close();
      await redis?.stop();
    });

    /** Connects `account` for `user` through a session with require_confirmation; returns the callback's JSON. */
    async function connectHeld(
      user: string,
      account: string,
    ): Promise<{ confirmationId: string; pending: LinkRecord }> {
      const session = await h.createSession({
        tenant_id: TENANT,
        user_id: user,
        require_confirmation: true,
      });
      const flow = await h.startFlow('acme', session.session_token);
      const done = await h.callback(
        await h.oidc.completeLogin(flow.authorizationUrl, { accountId: account }),
        flow.cookie,
        { headers: JSON_ACCEPT },
      );
      assert.equal(done.status, 200, done.text);
      assert.deepEqual(Object.keys(done.json!).sort(), ['confirmation_id', 'provider', 'status']);
      assert.equal(done.json!.status, 'confirm');
      const confirmationId = String(done.json!.confirmation_id);
      const pending = (await h.store.getLink(confirmationId.split('.')[0]!))!;
      assert.equal(pending.status, 'pending_confirmation');
      return { confirmationId, pending };
    }

    const confirm = (id: string, body: unknown, kid = 'crm-hs') =>
      h.request(`/v1/confirmations/${id}`, {
        method: 'POST',
        headers: { authorization: h.services.bearer(kid), 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });

    const release = (linkId: string) =>
      h.request(`/v1/links/${linkId}/token`, {
        method: 'POST',
        headers: { authorization: h.services.bearer('crm-hs'), 'content-type': 'application/json' },
        body: '{}',
      });

    test('then a confirmation for the session’s tenant and user makes the link active, releasable, and the id is spent', async () => {
      await h.addGrant({ serviceId: 'crm-sync', tenantId: TENANT, purpose: 'sync' });
      const { confirmationId, pending } = await connectHeld('ana', 'ana-account');
      assert.equal((await release(pending.id)).json?.code, 'link_not_found');

      // Invalid input first: malformed bodies, unknown members, the wrong role, unknown ids.
      for (const body of [{}, { tenant_id: TENANT }, { tenant_id: TENANT, user_id: 'ana', x: 1 }]) {
        const bad = await confirm(confirmationId, body);
        assert.equal(bad.status, 400, bad.text);
        assert.equal(bad.json?.code, 'invalid_request');
      }
      assert.equal(
        (await confirm(confirmationId, { tenant_id: TENANT, user_id: 'ana' }, 'billing-hs')).status,
        403,
      );
      const [linkId, secret] = confirmationId.split('.');
      for (const wrong of [
        'nope',
        `${linkId}.${'A'.repeat(43)}`,
        `${linkId}`,
        `lnk_other.${secret}`,
      ]) {
        const unknown = await confirm(wrong, { tenant_id: TENANT, user_id: 'ana' });
        assert.equal(unknown.status, 404, wrong);
        assert.equal(unknown.json?.code, 'confirmation_not_found');
      }
      assert.equal((await h.store.getLink(pending.id))!.status, 'pending_confirmation');

      const ok = await confirm(confirmationId, { tenant_id: TENANT, user_id: 'ana' });
      assert.equal(ok.status, 200, ok.text);
      assert.equal(ok.headers.get('cache-control'), 'no-store');
      assert.equal(ok.json?.id, pending.id);
      assert.equal(ok.json?.status, 'active');
      assert.equal(ok.json?.tenant_id, TENANT);
      assert.equal(ok.json?.user_id, 'ana');
      assert.deepEqual(ok.json?.metadata, {});
      const stored = (await h.store.getLink(pending.id))!;
      assert.deepEqual(
        Object.keys(stored.metadata).filter((k) => k.startsWith('linkvault.')),
        [],
        'the confirmation hash is gone',
      );
      const released = await release(pending.id);
      assert.equal(released.status, 200, released.text);

      // The confirmation secret is in no log line, audit event or stored record.
      assert.ok(!h.logText().includes(secret!), 'not logged');
      assert.ok(!JSON.stringify(await h.auditEvents()).includes(secret!), 'not audited');
      assert.ok(!JSON.stringify(pending).includes(secret!), 'only its hash is stored');
      const again = await confirm(confirmationId, { tenant_id: TENANT, user_id: 'ana' });
      assert.equal(again.status, 404);
      assert.equal(again.json?.code, 'confirmation_not_found');
      const types = (await h.auditEvents())
        .filter((e) => e.data.link_id === pending.id)
        .map((e) => e.type);
      assert.deepEqual(types.slice(0, 2), ['link.pending_confirmation', 'link.connected']);
    });

    test('then a reconnect of an active link is held apart, leaves the active link untouched until confirmed, and then moves into it', async () => {
      // An active link from a session without confirmation.
      const plain = await h.createSession({ tenant_id: TENANT, user_id: 'ben' });
      const first = await h.startFlow('acme', plain.session_token);
      const connected = await h.callback(
        await h.oidc.completeLogin(first.authorizationUrl, { accountId: 'ben-account' }),
        first.cookie,
        { headers: JSON_ACCEPT },
      );
      const activeId = String(connected.json!.link_id);
      const before = (await h.store.getLink(activeId))!;
      const oldRefresh = (
        await openTokenSet(h.vault, before, before.tokens!)
      ).refreshToken!.reveal();

      const { confirmationId, pending } = await connectHeld('ben', 'ben-account');
      assert.notEqual(pending.id, activeId);
      const untouched = (await h.store.getLink(activeId))!;
      assert.equal(untouched.status, 'active');
      assert.equal(untouched.version, before.version, 'the active link is not written at all');
      assert.equal((await h.oidc.introspect(oldRefresh)).active, true);
      const newRefresh = (
        await openTokenSet(h.vault, pending, pending.tokens!)
      ).refreshToken!.reveal();

      const ok = await confirm(confirmationId, { tenant_id: TENANT, user_id: 'ben' });
      assert.equal(ok.status, 200, ok.text);
      assert.equal(ok.json?.id, activeId, 'the confirmed reconnect keeps the link id');
      assert.equal(ok.json?.status, 'active');
      const after = (await h.store.getLink(activeId))!;
      assert.equal(
        (await openTokenSet(h.vault, after, after.tokens!)).refreshToken!.reveal(),
        newRefresh,
      );
      const merged = (await h.store.getLink(pending.id))!;
      assert.equal(merged.status, 'revoked');
      assert.equal(merged.tokens, null);
      await h.connect.idle();
      assert.equal((await h.oidc.introspect(newRefresh)).active, true);
      assert.equal(
        (await h.oidc.introspect(oldRefresh)).active,
        false,
        'the superseded one is revoked',
      );
      const live = (await h.store.listLinks({ tenantId: TENANT, userId: 'ben' })).filter(
        (l) => l.status !== 'revoked',
      );
      assert.deepEqual(
        live.map((l) => l.id),
        [activeId],
      );
    });

    test('then a user’s erasure revokes a held link too, and a late confirmation finds nothing', async () => {
      const { confirmationId, pending } = await connectHeld('fay', 'fay-account');
      const erase = await h.request('/v1/revocations', {
        method: 'POST',
        headers: {
          authorization: h.services.bearer('crm-hs'),
          'content-type': 'application/json',
        },
        body: JSON.stringify({ tenant_id: TENANT, user_id: 'fay', reason: 'gdpr erasure' }),
      });
      assert.equal(erase.status, 202, erase.text);
      assert.equal(erase.json?.matched, 1);
      for (let round = 0; round < 10; round++) {
        if ((await h.store.getLink(pending.id))!.status === 'revoked') break;
        await h.worker.runOnce();
      }
      assert.equal((await h.store.getLink(pending.id))!.status, 'revoked');
      const late = await confirm(confirmationId, { tenant_id: TENANT, user_id: 'fay' });
      assert.equal(late.status, 404, late.text);
      assert.equal(late.json?.code, 'confirmation_not_found');
    });

    test('then a pending link left unconfirmed is discarded by its durable job after 10 minutes, and its tokens revoked at the provider', async () => {
      const { confirmationId, pending } = await connectHeld('cy', 'cy-account');
      const refresh = (
        await openTokenSet(h.vault, pending, pending.tokens!)
      ).refreshToken!.reveal();
      // The job is in the store, due at the deadline, before anything runs it.
      const jobs: string[] = [];
      for await (const job of h.store.scanJobs()) jobs.push(job.id);
      assert.ok(jobs.includes(confirmationExpiryJobId(pending.id)), jobs.join(', '));

      // Not due yet: a worker round leaves it alone.
      await h.confirmationWorker.runOnce();
      assert.equal((await h.store.getLink(pending.id))!.status, 'pending_confirmation');

      // A restart: the running worker is stopped; a fresh worker over the same store finds the job.
      await h.confirmationWorker.stop(1000);
      clock += CONFIRMATION_TTL_SECONDS * 1000 + 1;
      const fresh = createJobWorker({
        name: 'confirmation worker (after restart)',
        store: h.store,
        handlers: {
          [CONFIRMATION_EXPIRY_JOB_KIND]: createConfirmationExpiryJob({
            connect: h.connect,
            log: pino({ level: 'silent' }),
          }),
        },
        log: pino({ level: 'silent' }),
        now: () => clock,
        options: {
          pollIntervalMs: 1000,
          batchSize: 32,
          concurrency: 1,
          leaseMs: 60_000,
          backoffBaseMs: 1000,
          backoffMaxMs: 1000,
        },
      });
      // Its job, and those of the links confirmed or erased above (completed, changing nothing).
      assert.equal(await fresh.runOnce(), 4);
      const confirmedEarlier = await h.store.listLinks({ tenantId: TENANT, status: 'active' });
      assert.deepEqual(confirmedEarlier.map((l) => l.userId).sort(), ['ana', 'ben']);
      const discarded = (await h.store.getLink(pending.id))!;
      assert.equal(discarded.status, 'revoked');
      assert.equal(discarded.tokens, null);

      await h.worker.runOnce();
      assert.equal((await h.oidc.introspect(refresh)).active, false);
      const record = await h.revocation.getRecord(pending.id);
      assert.equal(record.reason, 'confirmation_expired');
      assert.equal(record.provider_revocation.status, 'confirmed');

      // Too late to confirm, and the job is gone.
      await assert.rejects(
        h.connect.confirm(
          confirmationId,
          { tenantId: TENANT, userId: 'cy' },
          {
            serviceId: 'crm-sync',
            requestId: null,
          },
        ),
        (err: { code?: string }) => err.code === 'confirmation_not_found',
      );
      const left: string[] = [];
      for await (const job of h.store.scanJobs()) left.push(job.id);
      assert.ok(!left.includes(confirmationExpiryJobId(pending.id)));
    });

    test('then the callback sends a page flow with return_to back with status=confirm, and the result page says it waits', async () => {
      const session = await h.createSession({
        tenant_id: TENANT,
        user_id: 'dee',
        require_confirmation: true,
        return_to: `${APP_ORIGIN}/settings`,
      });
      const flow = await h.startFlow('acme', session.session_token);
      const back = await h.callback(
        await h.oidc.completeLogin(flow.authorizationUrl, { accountId: 'dee-account' }),
        flow.cookie,
        { headers: { accept: 'text/html' } },
      );
      assert.equal(back.status, 303);
      const to = back.location!;
      assert.equal(to.origin + to.pathname, `${APP_ORIGIN}/settings`);
      assert.deepEqual([...to.searchParams.keys()], ['status', 'confirmation_id', 'provider']);

      const noReturn = await h.createSession({
        tenant_id: TENANT,
        user_id: 'eve',
        require_confirmation: true,
      });
      const popup = await h.startFlow('acme', noReturn.session_token, { display: 'popup' });
      const result = await h.callback(
        await h.oidc.completeLogin(popup.authorizationUrl, { accountId: 'eve-account' }),
        popup.cookie,
        { headers: { accept: 'text/html' } },
      );
      assert.equal(result.status, 303);
      assert.equal(result.location!.pathname, '/connect/result');
      assert.equal(result.location!.searchParams.get('status'), 'confirm');
      const page = await h.request(result.location!.pathname + result.location!.search);
      assert.equal(page.status, 200);
      assert.match(page.text, /Waiting for confirmation/);
      assert.match(page.text, /data-confirmation-id="lnk_[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}"/);
    });
  });
}
