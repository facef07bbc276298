import { strict as assert } from 'node:assert';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { sealTokenSet } from '../../../src/links/sealing/token-vault.js';
import type { GrantRecord } from '../../../src/links/release/grants.js';
import type { Store } from '../../../src/store/store.js';
import { startRedis, type RedisServerHandle } from '../../support/redis-server.js';
import { startStack, tokenSet, type Stack } from '../../support/stack.js';

/**
 * A release decides on the read it held from the previous release of the same link by the same
 * service, and the atomic step confirms that the link version and the grant are still exactly the
 * ones it decided on (one store step in steady state). What another replica changes meanwhile —
 * the link's tokens, its status, the grant's rules, the grant itself — must be seen by the very
 * next release on this process: the held read is never the answer, only a guess the store confirms.
 * Run against SQLite and a real redis-server.
 */

for (const kind of ['sqlite', 'redis'] as const) {
  describe(`held release reads (${kind})`, () => {
    let redis: RedisServerHandle | null = null;
    let h: Stack;
    let reads = 0;
    let n = 0;
    const counting = (real: Store): Store =>
      new Proxy(real, {
        get(target, prop, receiver) {
          if (prop === 'readForRelease')
            return (...args: Parameters<Store['readForRelease']>) => {
              reads++;
              return target.readForRelease(...args);
            };
          const value: unknown = Reflect.get(target, prop, receiver);
          return typeof value === 'function' ? value.bind(target) : value;
        },
      });

    before(async () => {
      if (kind === 'redis') redis = await startRedis();
      h = await startStack({
        wrapStore: counting,
        ...(redis ? { redisUrl: redis.url } : {}),
      });
    });
    after(async () => {
      await h.close();
      await redis?.stop();
    });

    const token = (linkId: string, body: Record<string, unknown> = {}) =>
      request(h.app)
        .post(`/v1/links/${linkId}/token`)
        .set('Authorization', h.services.bearer('billing-hs'))
        .send(body);

    async function linkWithGrant(scopes: string[] | null = null) {
      const link = await h.seedLink({
        id: `lnk_held_${kind}_${++n}`,
        accessToken: `access-${kind}-${n}`,
        grantedScopes: ['contacts.read', 'contacts.write'],
      });
      const grant = await h.addGrant({ serviceId: 'billing', linkId: link.id, scopes });
      return { link, grant };
    }

    /** What another replica's refresh leaves: the link re-sealed with new tokens, at the next version. */
    async function resealElsewhere(linkId: string, access: string, refresh: string) {
      const current = (await h.store.getLink(linkId))!;
      const sealed = await sealTokenSet(
        h.vault,
        current,
        tokenSet(access, refresh),
        current.tokens,
      );
      assert.ok(await h.store.saveLink({ ...current, tokens: sealed }, current.version));
    }

    const releasedCount = async (linkId: string) =>
      (await h.auditEvents()).filter(
        (e) => e.type === 'token.released' && e.data.link_id === linkId,
      ).length;

    it('when a service releases the same link again, then the release costs no read: the atomic step confirms the held one', async () => {
      const { link } = await linkWithGrant();
      assert.equal((await token(link.id)).status, 200);
      const before = reads;
      for (let i = 0; i < 10; i++) {
        const res = await token(link.id);
        assert.equal(res.status, 200);
        assert.equal(res.body.access_token, `access-${kind}-${n}`);
      }
      assert.equal(reads - before, 0);
      assert.equal(await releasedCount(link.id), 11);
    });

    it('when plain releases repeat, then each stores its own record (time, request id) with the same data, and a new token or a scoped or forced release makes new data', async () => {
      const { link } = await linkWithGrant();
      const events = async () => {
        const out: { type: string; data: Record<string, unknown>; requestId?: string | null }[] =
          [];
        let after: string | undefined;
        for (;;) {
          const page = await h.store.readAudit(after, 1000);
          for (const e of page)
            if (e.type === 'token.released' && e.data.link_id === link.id)
              out.push({ type: e.type, data: { ...e.data }, requestId: e.requestId ?? null });
          if (page.length < 1000) return out;
          after = page[page.length - 1]!.seq;
        }
      };
      for (let i = 0; i < 3; i++)
        assert.equal((await token(link.id).set('X-Request-Id', `plain-${i}`)).status, 200);
      const plain = await events();
      assert.equal(plain.length, 3);
      assert.deepEqual(
        plain.map((e) => e.requestId),
        ['plain-0', 'plain-1', 'plain-2'],
      );
      for (const e of plain) assert.deepEqual(e.data, plain[0]!.data);
      assert.equal(plain[0]!.data.requested_scopes, null);
      assert.equal(plain[0]!.data.forced, false);
      assert.match(String(plain[0]!.data.access_token), /^hmac-sha256\/128:/);
      // A scoped release records its scopes (not the plain data it follows).
      const scoped = await token(link.id, { scopes: ['contacts.read'] });
      assert.equal(scoped.status, 200);
      assert.deepEqual((await events()).at(-1)!.data.requested_scopes, ['contacts.read']);
      // New tokens (another replica's re-seal): the next plain record names the new token.
      await resealElsewhere(link.id, 'resealed-for-audit', 'refresh-3');
      assert.equal((await token(link.id)).body.access_token, 'resealed-for-audit');
      const after = (await events()).at(-1)!;
      assert.equal(after.data.requested_scopes, null);
      assert.notEqual(after.data.access_token, plain[0]!.data.access_token);
    });

    it('when another replica re-seals the link with new tokens, then the next release gives the new token', async () => {
      const { link } = await linkWithGrant();
      assert.equal((await token(link.id)).body.access_token, `access-${kind}-${n}`);
      await resealElsewhere(link.id, 'rotated-elsewhere', 'refresh-2');
      const res = await token(link.id);
      assert.equal(res.status, 200);
      assert.equal(res.body.access_token, 'rotated-elsewhere');
    });

    it('when the grant is narrowed in place (same id, fewer scopes), then the next release asking for a removed scope is refused and stores no record', async () => {
      const { link, grant } = await linkWithGrant(['contacts.read', 'contacts.write']);
      assert.equal((await token(link.id, { scopes: ['contacts.write'] })).status, 200);
      const narrowed: GrantRecord = { ...grant, scopes: ['contacts.read'] };
      await h.store.putGrant(narrowed);
      const res = await token(link.id, { scopes: ['contacts.write'] });
      assert.equal(res.status, 403);
      assert.equal(res.body.code, 'scope_not_granted');
      assert.equal(await releasedCount(link.id), 1);
      assert.equal((await token(link.id, { scopes: ['contacts.read'] })).status, 200);
    });

    it('when the grant is moved to another link or deleted, then the next release is refused (no_grant)', async () => {
      const { link, grant } = await linkWithGrant();
      const other = await h.seedLink({ id: `lnk_held_${kind}_other_${++n}` });
      assert.equal((await token(link.id)).status, 200);
      await h.store.putGrant({ ...grant, linkId: other.id });
      const moved = await token(link.id);
      assert.equal(moved.status, 403);
      assert.equal(moved.body.code, 'no_grant');
      assert.equal((await token(other.id)).status, 200);
      assert.equal((await token(other.id)).status, 200);
      assert.equal(await h.store.deleteGrant(grant.id), true);
      const deleted = await token(other.id);
      assert.equal(deleted.status, 403);
      assert.equal(deleted.body.code, 'no_grant');
      assert.equal(await releasedCount(link.id), 1);
      assert.equal(await releasedCount(other.id), 2);
    });

    it('when another replica revokes the link, then the next release answers 410 and stores no record', async () => {
      const { link } = await linkWithGrant();
      assert.equal((await token(link.id)).status, 200);
      const current = (await h.store.getLink(link.id))!;
      assert.ok(
        await h.store.saveLink({ ...current, status: 'revoked', tokens: null }, current.version),
      );
      const res = await token(link.id);
      assert.equal(res.status, 410);
      assert.equal(res.body.code, 'link_revoked');
      assert.ok(!JSON.stringify(res.body).includes('access-'));
      assert.equal(await releasedCount(link.id), 1);
    });

    it('when commitRelease is told a version or grant the store no longer holds, then it refuses (changed) and stores nothing', async () => {
      const { link, grant } = await linkWithGrant();
      const read = (await h.store.readForRelease('billing', link.id))!;
      const readGrant = read.grants.find((g) => g.id === grant.id)!;
      const event = {
        atMs: Date.now(),
        type: 'token.released',
        requestId: 'req-held',
        data: { link_id: link.id, tenant_id: link.tenantId },
      };
      assert.deepEqual(
        await h.store.commitRelease(link.id, grant.id, event, {
          linkVersion: read.link.version + 1,
          grant: readGrant,
        }),
        { released: false, reason: 'changed' },
      );
      assert.deepEqual(
        await h.store.commitRelease(link.id, grant.id, event, {
          linkVersion: read.link.version,
          grant: { ...readGrant, purpose: 'another purpose' },
        }),
        { released: false, reason: 'changed' },
      );
      await assert.rejects(
        h.store.commitRelease(link.id, grant.id, event, {
          linkVersion: read.link.version,
          grant: { ...readGrant, id: 'grt_other' },
        }),
        (err: { code?: string }) => err.code === 'invalid_request',
      );
      assert.equal(await releasedCount(link.id), 0);
      const ok = await h.store.commitRelease(link.id, grant.id, event, {
        linkVersion: read.link.version,
        grant: readGrant,
      });
      assert.equal(ok.released, true);
      assert.equal(await releasedCount(link.id), 1);
    });
  });
}
