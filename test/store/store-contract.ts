/**
 * The one Store contract suite. Every adapter runs it (sqlite, standalone Redis, Redis Cluster):
 * `runStoreContract('sqlite', async () => ({ store, cleanup }))`. Each test gets a fresh, empty store.
 * Give it the store as production builds it (createStore, or checkedStore around an adapter): the
 * input checks live in that wrapper, not in the adapters.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { isLinkvaultError } from '../../src/errors.js';
import type { AuditEvent, ScannedJob, Store } from '../../src/store/store.js';
import type { GrantRecord } from '../../src/links/release/grants.js';
import type { LinkRecord } from '../../src/links/link.js';
import type { SessionRecord } from '../../src/links/connect/sessions.js';

export interface StoreUnderTest {
  readonly store: Store;
  cleanup(): Promise<void>;
}

function wait(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function rejectsWith(promise: Promise<unknown>, code: string, label: string): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isLinkvaultError(err), `${label}: expected a LinkvaultError, got ${String(err)}`);
    assert.equal(err.code, code, `${label}: expected ${code}, got ${err.code} (${err.message})`);
    return true;
  });
}

const NOW = Date.now();

/** A link with unique id; every field set so a round trip proves nothing is dropped. */
export function makeLink(overrides: Partial<LinkRecord> = {}): LinkRecord {
  return {
    id: `lnk_${randomUUID()}`,
    tenantId: 'tenant-a',
    userId: 'user-1',
    providerId: 'hubspot',
    status: 'active',
    version: 0,
    providerAccountId: 'hub-123',
    grantedScopes: ['crm.objects.contacts.read', 'oauth'],
    metadata: { hub_id: '123', api_domain: 'api.hubapi.com' },
    endpointVariables: {},
    tokens: {
      v: 1,
      alg: 'A256GCM',
      kid: 'local:k1',
      edk: 'ZWRr',
      iv: 'aXY',
      ct: 'Y3Q',
      tag: 'dGFn',
    },
    accessTokenExpiresAtMs: NOW + 3_600_000,
    createdAtMs: NOW,
    updatedAtMs: NOW,
    lastRefreshedAtMs: null,
    lastUsedAtMs: null,
    ...overrides,
  };
}

function makeSession(overrides: Partial<SessionRecord> = {}): SessionRecord {
  return {
    id: `ses_${randomUUID()}`,
    tenantId: 'tenant-a',
    userId: 'user-1',
    providers: ['hubspot'],
    returnTo: 'https://app.example.com/done',
    serviceId: 'crm-sync',
    createdAtMs: Date.now(),
    expiresAtMs: Date.now() + 60_000,
    ...overrides,
  };
}

function makeGrant(overrides: Partial<GrantRecord> = {}): GrantRecord {
  return {
    id: `grt_${randomUUID()}`,
    serviceId: 'crm-sync',
    tenantId: 'tenant-a',
    providerId: null,
    linkId: null,
    scopes: null,
    purpose: 'sync contacts',
    createdAtMs: NOW,
    expiresAtMs: null,
    ...overrides,
  };
}

function ids(links: readonly LinkRecord[]): string[] {
  return links.map((l) => l.id);
}

export function runStoreContract(name: string, makeStore: () => Promise<StoreUnderTest>): void {
  describe(`Store contract: ${name}`, () => {
    let ctx: StoreUnderTest;
    let store: Store;
    beforeEach(async () => {
      ctx = await makeStore();
      store = ctx.store;
    });
    afterEach(async () => {
      await ctx.cleanup();
    });

    // ---- invalid and edge input first ----

    it('when given invalid input, then every method rejects invalid_request and stores nothing', async () => {
      const link = makeLink();
      const job = { id: 'job-1', kind: 'revoke', payload: {}, attempts: 0, runAtMs: NOW };
      const cases: [string, () => Promise<unknown>][] = [
        ['getLink empty id', () => store.getLink('')],
        ['getLink overlong id', () => store.getLink('x'.repeat(513))],
        ['getLink non-string id', () => store.getLink(42 as unknown as string)],
        ['listLinks bad status', () => store.listLinks({ status: 'gone' as 'active' })],
        ['listLinks empty tenant', () => store.listLinks({ tenantId: '' })],
        ['listLinks zero limit', () => store.listLinks({}, 0)],
        ['listLinks fractional limit', () => store.listLinks({}, 1.5)],
        ['listLinks huge limit', () => store.listLinks({}, 10_001)],
        [
          'saveLink bad status',
          () => store.saveLink({ ...link, status: 'gone' as 'active' }, null),
        ],
        ['saveLink empty tenant', () => store.saveLink({ ...link, tenantId: '' }, null)],
        ['saveLink empty user', () => store.saveLink({ ...link, userId: '' }, null)],
        [
          'saveLink NaN createdAt',
          () => store.saveLink({ ...link, createdAtMs: Number.NaN }, null),
        ],
        [
          'saveLink fractional updatedAt',
          () => store.saveLink({ ...link, updatedAtMs: 1.5 }, null),
        ],
        [
          'saveLink scopes not strings',
          () => store.saveLink({ ...link, grantedScopes: [1] as unknown as string[] }, null),
        ],
        ['saveLink expectedVersion 0', () => store.saveLink(link, 0)],
        ['saveLink expectedVersion negative', () => store.saveLink(link, -1)],
        ['saveLink expectedVersion fractional', () => store.saveLink(link, 1.5)],
        ['touchLink empty id', () => store.touchLink('', NOW)],
        ['touchLink negative time', () => store.touchLink(link.id, -1)],
        ['listLinksExpiringBefore negative cutoff', () => store.listLinksExpiringBefore(-1, 10)],
        ['listLinksExpiringBefore fractional cutoff', () => store.listLinksExpiringBefore(1.5, 10)],
        [
          'listLinksExpiringBefore string cutoff',
          () => store.listLinksExpiringBefore('1' as unknown as number, 10),
        ],
        ['listLinksExpiringBefore zero limit', () => store.listLinksExpiringBefore(NOW, 0)],
        ['listLinksExpiringBefore huge limit', () => store.listLinksExpiringBefore(NOW, 10_001)],
        ['putFlowState empty key', () => store.putFlowState('', {}, 10)],
        ['putFlowState zero ttl', () => store.putFlowState('k', {}, 0)],
        ['putFlowState negative ttl', () => store.putFlowState('k', {}, -5)],
        ['putFlowState ttl over a day', () => store.putFlowState('k', {}, 86_401)],
        [
          'putFlowState null value',
          () => store.putFlowState('k', null as unknown as Record<string, unknown>, 10),
        ],
        ['takeFlowState empty key', () => store.takeFlowState('')],
        ['putSession empty id', () => store.putSession(makeSession({ id: '' }))],
        ['getSession empty id', () => store.getSession('')],
        ['deleteSession empty id', () => store.deleteSession('')],
        ['putGrant empty service', () => store.putGrant(makeGrant({ serviceId: '' }))],
        ['getGrant empty id', () => store.getGrant('')],
        ['listGrants empty service', () => store.listGrants('')],
        ['deleteGrant empty id', () => store.deleteGrant('')],
        ['putRevocation empty link', () => store.putRevocation({ linkId: '', record: {} })],
        ['getRevocation empty link', () => store.getRevocation('')],
        ['acquireLock empty name', () => store.acquireLock('', 100)],
        ['acquireLock zero ttl', () => store.acquireLock('n', 0)],
        ['acquireLock fractional ttl', () => store.acquireLock('n', 1.5)],
        ['extendLock empty owner', () => store.extendLock('n', '', 100)],
        ['extendLock zero ttl', () => store.extendLock('n', 'o', 0)],
        ['releaseLock empty name', () => store.releaseLock('', 'o')],
        ['appendAudit negative time', () => store.appendAudit({ atMs: -1, type: 't', data: {} })],
        ['appendAudit empty type', () => store.appendAudit({ atMs: NOW, type: '', data: {} })],
        [
          'appendAudit array data',
          () =>
            store.appendAudit({
              atMs: NOW,
              type: 't',
              data: [] as unknown as Record<string, unknown>,
            }),
        ],
        ['readAudit foreign cursor', () => store.readAudit('not-a-seq')],
        ['readAudit zero limit', () => store.readAudit(undefined, 0)],
        ['enqueue empty id', () => store.enqueue({ ...job, id: '' })],
        ['enqueue empty kind', () => store.enqueue({ ...job, kind: '' })],
        ['enqueue negative attempts', () => store.enqueue({ ...job, attempts: -1 })],
        ['enqueue NaN runAt', () => store.enqueue({ ...job, runAtMs: Number.NaN })],
        ['claimJobs zero limit', () => store.claimJobs(NOW, 0, 1000)],
        ['claimJobs zero lease', () => store.claimJobs(NOW, 1, 0)],
        ['claimJobs NaN now', () => store.claimJobs(Number.NaN, 1, 1000)],
        ['completeJob empty token', () => store.completeJob('job-1', '')],
        ['rescheduleJob negative runAt', () => store.rescheduleJob('job-1', 'tok', -1, 0)],
        ['rescheduleJob negative attempts', () => store.rescheduleJob('job-1', 'tok', NOW, -1)],
        [
          'rescheduleJob array payload',
          () =>
            store.rescheduleJob('job-1', 'tok', NOW, 1, [] as unknown as Record<string, unknown>),
        ],
        ['putJobStatus empty id', () => store.putJobStatus({ id: '', status: {} })],
        ['getJobStatus empty id', () => store.getJobStatus('')],
      ];
      for (const [label, call] of cases) await rejectsWith(call(), 'invalid_request', label);

      assert.equal(await store.getLink(link.id), null);
      assert.deepEqual(await store.listLinks({}), []);
      assert.equal(await store.countJobs(), 0);
      assert.deepEqual(await store.readAudit(), []);
      assert.equal(await store.takeFlowState('k'), null);
      assert.ok(await store.acquireLock('n', 1000), 'no lock was taken by a refused call');
    });

    it('when nothing was stored, then reads return null or empty and touch is a no-op', async () => {
      assert.equal(await store.getLink('lnk_missing'), null);
      await store.touchLink('lnk_missing', NOW);
      assert.equal(await store.getLink('lnk_missing'), null);
      assert.deepEqual(await store.listLinks({ tenantId: 'tenant-none' }), []);
      assert.deepEqual(await store.listLinks({}), []);
      assert.equal(await store.takeFlowState('missing'), null);
      assert.equal(await store.getSession('missing'), null);
      await store.deleteSession('missing');
      assert.equal(await store.getGrant('missing'), null);
      assert.deepEqual(await store.listGrants(), []);
      assert.equal(await store.deleteGrant('missing'), false);
      assert.equal(await store.getRevocation('missing'), null);
      assert.equal(await store.releaseLock('missing', 'owner'), false);
      assert.equal(await store.extendLock('missing', 'owner', 1000), false);
      assert.equal(await store.getJobStatus('missing'), null);
      assert.equal(await store.completeJob('missing', 'token'), false);
      assert.equal(await store.rescheduleJob('missing', 'token', NOW, 1), false);
      assert.deepEqual(await store.claimJobs(NOW, 10, 1000), []);
      assert.deepEqual(await store.listLinksExpiringBefore(Number.MAX_SAFE_INTEGER, 10), []);
      const scanned: string[] = [];
      for await (const id of store.scanLinkIds()) scanned.push(id);
      assert.deepEqual(scanned, []);
    });

    it('when ids contain separators and braces, then they stay distinct records', async () => {
      const a = makeLink({
        id: 'a:b{c}',
        tenantId: 't:{x}',
        userId: 'u}:1',
        providerAccountId: '{acct}',
      });
      const b = makeLink({ id: 'a:b', tenantId: 't:{x}}', userId: 'u' });
      assert.ok(await store.saveLink(a, null));
      assert.ok(await store.saveLink(b, null));
      assert.deepEqual(await store.getLink('a:b{c}'), { ...a, version: 1 });
      assert.deepEqual(await store.getLink('a:b'), { ...b, version: 1 });
      assert.deepEqual(ids(await store.listLinks({ tenantId: 't:{x}' })), ['a:b{c}']);
      assert.deepEqual(ids(await store.listLinks({ tenantId: 't:{x}', userId: 'u}:1' })), [
        'a:b{c}',
      ]);
    });

    it('when the store is closed, then close is idempotent and calls reject store_unavailable', async () => {
      await store.ping();
      await store.close();
      await store.close();
      await rejectsWith(store.getLink('lnk_x'), 'store_unavailable', 'getLink after close');
      await rejectsWith(
        store.appendAudit({ atMs: NOW, type: 't', data: {} }),
        'store_unavailable',
        'appendAudit after close',
      );
    });

    // ---- links ----

    it('when a link is created, then it reads back whole with version 1', async () => {
      const link = makeLink({ lastRefreshedAtMs: NOW - 5, endpointVariables: { instance: 'eu1' } });
      const saved = await store.saveLink(link, null);
      assert.deepEqual(saved, { ...link, version: 1 });
      assert.deepEqual(await store.getLink(link.id), { ...link, version: 1 });
    });

    it('when a link id already exists, then create fails with null and the stored link is unchanged', async () => {
      const link = makeLink();
      await store.saveLink(link, null);
      assert.equal(await store.saveLink({ ...link, userId: 'intruder' }, null), null);
      // The same id under another tenant is the same id: also refused.
      assert.equal(await store.saveLink({ ...link, tenantId: 'tenant-b' }, null), null);
      assert.deepEqual(await store.getLink(link.id), { ...link, version: 1 });
      assert.deepEqual(ids(await store.listLinks({ tenantId: 'tenant-b' })), []);
    });

    it('when a link is updated with the current version, then the version advances; a stale version gets null', async () => {
      const link = makeLink();
      await store.saveLink(link, null);
      const v2 = await store.saveLink({ ...link, status: 'needs_reauth', updatedAtMs: NOW + 1 }, 1);
      assert.equal(v2?.version, 2);
      assert.equal(await store.saveLink({ ...link, status: 'revoked' }, 1), null, 'stale version');
      assert.equal(await store.saveLink({ ...link, status: 'revoked' }, 7), null, 'future version');
      assert.equal(
        await store.saveLink(makeLink(), 1),
        null,
        'update of a link that does not exist',
      );
      const v3 = await store.saveLink({ ...link, tokens: null, status: 'revoked' }, 2);
      assert.deepEqual(v3, { ...link, tokens: null, status: 'revoked', version: 3 });
      assert.deepEqual(await store.getLink(link.id), v3);
    });

    it('when two writers update with the same expected version, then exactly one wins', async () => {
      const link = makeLink();
      await store.saveLink(link, null);
      for (let round = 1; round <= 10; round++) {
        const results = await Promise.all([
          store.saveLink({ ...link, metadata: { writer: 'a' } }, round),
          store.saveLink({ ...link, metadata: { writer: 'b' } }, round),
        ]);
        const winners = results.filter((r) => r !== null);
        assert.equal(winners.length, 1, `round ${round}: exactly one writer wins`);
        assert.deepEqual(await store.getLink(link.id), winners[0]);
        assert.equal(winners[0]!.version, round + 1);
      }
    });

    it('when an update moves a link to another tenant, then it is refused', async () => {
      const link = makeLink();
      await store.saveLink(link, null);
      await rejectsWith(
        store.saveLink({ ...link, tenantId: 'tenant-b' }, 1),
        'invalid_request',
        'tenant change',
      );
      assert.deepEqual(await store.getLink(link.id), { ...link, version: 1 });
    });

    it('when links are listed, then every filter matches, newest first, within the limit', async () => {
      const t = `tenant-${randomUUID()}`;
      const a = makeLink({
        tenantId: t,
        userId: 'u1',
        providerId: 'p1',
        providerAccountId: 'acct-1',
        createdAtMs: NOW + 1,
      });
      const b = makeLink({
        tenantId: t,
        userId: 'u1',
        providerId: 'p2',
        providerAccountId: 'acct-2',
        createdAtMs: NOW + 2,
      });
      const c = makeLink({
        tenantId: t,
        userId: 'u2',
        providerId: 'p1',
        providerAccountId: null,
        createdAtMs: NOW + 3,
        status: 'needs_reauth',
      });
      const other = makeLink({
        tenantId: `${t}-other`,
        userId: 'u1',
        providerId: 'p1',
        providerAccountId: 'acct-1',
        createdAtMs: NOW + 4,
      });
      for (const l of [a, b, c, other]) await store.saveLink(l, null);

      assert.deepEqual(ids(await store.listLinks({ tenantId: t })), [c.id, b.id, a.id]);
      assert.deepEqual(ids(await store.listLinks({ tenantId: t, userId: 'u1' })), [b.id, a.id]);
      assert.deepEqual(ids(await store.listLinks({ tenantId: t, providerId: 'p1' })), [c.id, a.id]);
      assert.deepEqual(
        ids(await store.listLinks({ tenantId: t, userId: 'u1', providerId: 'p1' })),
        [a.id],
      );
      assert.deepEqual(ids(await store.listLinks({ tenantId: t, status: 'active' })), [b.id, a.id]);
      assert.deepEqual(ids(await store.listLinks({ tenantId: t, status: 'needs_reauth' })), [c.id]);
      assert.deepEqual(ids(await store.listLinks({ tenantId: t, providerAccountId: 'acct-1' })), [
        a.id,
      ]);
      assert.deepEqual(ids(await store.listLinks({ tenantId: t }, 2)), [c.id, b.id]);
      // Without a tenant, across tenants.
      assert.deepEqual(ids(await store.listLinks({ providerAccountId: 'acct-1' })), [
        other.id,
        a.id,
      ]);
      assert.deepEqual(
        ids(await store.listLinks({ providerAccountId: 'acct-1', providerId: 'p1' }, 1)),
        [other.id],
      );
      assert.deepEqual(ids(await store.listLinks({ userId: 'u1', providerId: 'p1' })), [
        other.id,
        a.id,
      ]);
      assert.deepEqual(ids(await store.listLinks({})), [other.id, c.id, b.id, a.id]);
      assert.deepEqual(await store.listLinks({ tenantId: t, userId: 'u2' }), [
        { ...c, version: 1 },
      ]);
    });

    it('when a link changes status, account or user, then the listings follow at once', async () => {
      const t = `tenant-${randomUUID()}`;
      const link = makeLink({ tenantId: t, providerAccountId: 'acct-old' });
      await store.saveLink(link, null);
      await store.saveLink(
        { ...link, status: 'revoked', providerAccountId: 'acct-new', userId: 'user-2' },
        1,
      );
      assert.deepEqual(ids(await store.listLinks({ tenantId: t, status: 'active' })), []);
      assert.deepEqual(ids(await store.listLinks({ tenantId: t, status: 'revoked' })), [link.id]);
      assert.deepEqual(ids(await store.listLinks({ status: 'active' })), []);
      assert.deepEqual(
        ids(await store.listLinks({ tenantId: t, providerAccountId: 'acct-old' })),
        [],
      );
      assert.deepEqual(ids(await store.listLinks({ tenantId: t, providerAccountId: 'acct-new' })), [
        link.id,
      ]);
      assert.deepEqual(ids(await store.listLinks({ tenantId: t, userId: link.userId })), []);
      assert.deepEqual(ids(await store.listLinks({ tenantId: t, userId: 'user-2' })), [link.id]);
      await store.saveLink(
        { ...link, status: 'active', providerAccountId: null, userId: 'user-2' },
        2,
      );
      assert.deepEqual(ids(await store.listLinks({ tenantId: t, status: 'revoked' })), []);
      assert.deepEqual(ids(await store.listLinks({ tenantId: t, status: 'active' })), [link.id]);
      assert.deepEqual(
        ids(await store.listLinks({ tenantId: t, providerAccountId: 'acct-new' })),
        [],
      );
    });

    it('when a link is touched, then lastUsedAtMs only moves forward and the version stays', async () => {
      const link = makeLink();
      await store.saveLink(link, null);
      await store.touchLink(link.id, NOW + 1000);
      assert.equal((await store.getLink(link.id))?.lastUsedAtMs, NOW + 1000);
      await store.touchLink(link.id, NOW + 500);
      assert.equal((await store.getLink(link.id))?.lastUsedAtMs, NOW + 1000, 'never backwards');
      await Promise.all([
        store.touchLink(link.id, NOW + 3000),
        store.touchLink(link.id, NOW + 2000),
      ]);
      const touched = await store.getLink(link.id);
      assert.equal(touched?.lastUsedAtMs, NOW + 3000);
      assert.equal(touched?.version, 1, 'no version bump');
      // A save carrying an older read does not undo the touch.
      const saved = await store.saveLink(
        { ...link, status: 'needs_reauth', lastUsedAtMs: null },
        1,
      );
      assert.equal(saved?.lastUsedAtMs, NOW + 3000);
      assert.equal((await store.getLink(link.id))?.lastUsedAtMs, NOW + 3000);
      const later = await store.saveLink({ ...link, lastUsedAtMs: NOW + 9000 }, 2);
      assert.equal(later?.lastUsedAtMs, NOW + 9000);
      assert.deepEqual(
        (await store.listLinks({ tenantId: link.tenantId, userId: link.userId })).find(
          (l) => l.id === link.id,
        ),
        later,
      );
    });

    it('when links expire at different times across tenants, then listLinksExpiringBefore returns the active ones expiring before the cutoff, soonest first', async () => {
      const save = async (overrides: Partial<LinkRecord>): Promise<LinkRecord> => {
        const saved = await store.saveLink(makeLink(overrides), null);
        assert.ok(saved);
        return saved;
      };
      const first = await save({
        id: 'lnk_exp_1',
        tenantId: 'exp-a',
        accessTokenExpiresAtMs: NOW + 1000,
      });
      const tie = await save({
        id: 'lnk_exp_0',
        tenantId: 'exp-b',
        accessTokenExpiresAtMs: NOW + 1000,
      });
      const second = await save({ tenantId: 'exp-b', accessTokenExpiresAtMs: NOW + 2000 });
      const expired = await save({ tenantId: 'exp-c', accessTokenExpiresAtMs: NOW - 60_000 });
      const atCutoff = await save({ tenantId: 'exp-a', accessTokenExpiresAtMs: NOW + 5000 });
      // A lost refresh answer is due at once, whatever its token's expiry (it sorts first).
      const uncertain = await save({
        tenantId: 'exp-c',
        accessTokenExpiresAtMs: NOW + 3_600_000,
        metadata: { 'linkvault.refresh_uncertain_since': new Date(NOW).toISOString() },
      });
      await save({ tenantId: 'exp-a', accessTokenExpiresAtMs: NOW + 60_000 }); // after the cutoff
      await save({ tenantId: 'exp-a', accessTokenExpiresAtMs: null }); // never expires
      await save({ tenantId: 'exp-b', status: 'needs_reauth', accessTokenExpiresAtMs: NOW + 500 });
      await save({
        tenantId: 'exp-b',
        status: 'revoked',
        tokens: null,
        accessTokenExpiresAtMs: null,
      });
      await save({ tenantId: 'exp-c', status: 'revoked', accessTokenExpiresAtMs: NOW + 500 });

      const all = await store.listLinksExpiringBefore(NOW + 5000, 100);
      assert.deepEqual(
        ids(all),
        [uncertain.id, expired.id, tie.id, first.id, second.id],
        'strictly before the cutoff; ties by id',
      );
      assert.deepEqual(all[2], tie, 'whole records');
      assert.deepEqual(ids(await store.listLinksExpiringBefore(NOW + 5000, 2)), [
        uncertain.id,
        expired.id,
      ]);
      assert.deepEqual(
        ids(await store.listLinksExpiringBefore(NOW + 5001, 100)).at(-1),
        atCutoff.id,
      );
      assert.deepEqual(ids(await store.listLinksExpiringBefore(1, 100)), [uncertain.id]);
    });

    it('when a link is refreshed, revoked, marked or reconnected, then the expiry index follows at once', async () => {
      const cutoff = NOW + 5000;
      const listed = async () => ids(await store.listLinksExpiringBefore(cutoff, 100));
      const link = makeLink({ tenantId: 'exp-moves', accessTokenExpiresAtMs: NOW + 1000 });
      await store.saveLink(link, null);
      assert.deepEqual(await listed(), [link.id]);
      // Refreshed: a later expiry leaves the window.
      await store.saveLink({ ...link, accessTokenExpiresAtMs: NOW + 3_600_000 }, 1);
      assert.deepEqual(await listed(), []);
      // A stale write changes nothing, the index neither.
      assert.equal(await store.saveLink({ ...link, accessTokenExpiresAtMs: NOW + 1000 }, 1), null);
      assert.deepEqual(await listed(), []);
      // A lost refresh answer: due at once; the marker cleared: back to its expiry.
      const marked = {
        ...link,
        accessTokenExpiresAtMs: NOW + 3_600_000,
        metadata: {
          ...link.metadata,
          'linkvault.refresh_uncertain_since': new Date(NOW).toISOString(),
        },
      };
      await store.saveLink(marked, 2);
      assert.deepEqual(await listed(), [link.id]);
      await store.saveLink({ ...marked, metadata: link.metadata }, 3);
      assert.deepEqual(await listed(), []);
      await store.saveLink({ ...link, accessTokenExpiresAtMs: NOW + 2000 }, 4);
      assert.deepEqual(await listed(), [link.id]);
      await store.touchLink(link.id, NOW + 10);
      assert.deepEqual(await listed(), [link.id], 'a touch does not move it');
      await store.saveLink(
        { ...link, status: 'needs_reauth', accessTokenExpiresAtMs: NOW + 2000 },
        5,
      );
      assert.deepEqual(await listed(), []);
      await store.saveLink({ ...link, status: 'active', accessTokenExpiresAtMs: NOW + 2000 }, 6); // reconnected
      assert.deepEqual(await listed(), [link.id]);
      await store.saveLink(
        { ...link, status: 'revoked', tokens: null, accessTokenExpiresAtMs: null },
        7,
      );
      assert.deepEqual(await listed(), []);
    });

    it('when many links exist across tenants, then scanLinkIds yields every id exactly once', async () => {
      const expected = new Set<string>();
      const tenants = ['scan-a', 'scan-b', 'scan-c'];
      const batch: Promise<unknown>[] = [];
      for (let i = 0; i < 620; i++) {
        const link = makeLink({
          tenantId: tenants[i % 3]!,
          id: `lnk_${String(i).padStart(4, '0')}_${randomUUID()}`,
        });
        expected.add(link.id);
        batch.push(store.saveLink(link, null));
        if (batch.length === 50) await Promise.all(batch.splice(0));
      }
      await Promise.all(batch);
      const seen: string[] = [];
      for await (const id of store.scanLinkIds()) seen.push(id);
      assert.equal(seen.length, expected.size, 'no duplicates, none missing');
      assert.deepEqual(new Set(seen), expected);
    });

    // ---- flow state ----

    it('when flow state is taken, then it is returned once and gone afterwards', async () => {
      const value = {
        provider_id: 'hubspot',
        verifier_sealed: 'x',
        nested: { list: [1, 'a'], empty: [] },
      };
      await store.putFlowState('state-hash-1', value, 60);
      assert.deepEqual(await store.takeFlowState('state-hash-1'), value);
      assert.equal(await store.takeFlowState('state-hash-1'), null);
    });

    it('when 50 callers take the same flow state at once, then exactly one gets it', async () => {
      await store.putFlowState('state-race', { n: 1 }, 60);
      const results = await Promise.all(
        Array.from({ length: 50 }, () => store.takeFlowState('state-race')),
      );
      assert.equal(results.filter((r) => r !== null).length, 1);
      assert.deepEqual(
        results.find((r) => r !== null),
        { n: 1 },
      );
    });

    it('when flow state outlives its TTL, then take returns null', async () => {
      await store.putFlowState('state-short', { n: 1 }, 0.2);
      await store.putFlowState('state-long', { n: 2 }, 60);
      await wait(400);
      assert.equal(await store.takeFlowState('state-short'), null);
      assert.deepEqual(await store.takeFlowState('state-long'), { n: 2 });
    });

    // ---- sessions ----

    it('when a session is stored, then it reads back until deleted', async () => {
      const session = makeSession({ providers: [], returnTo: null });
      await store.putSession(session);
      assert.deepEqual(await store.getSession(session.id), session);
      await store.deleteSession(session.id);
      assert.equal(await store.getSession(session.id), null);
    });

    it('when a session expires, then it is no longer returned', async () => {
      const short = makeSession({ expiresAtMs: Date.now() + 200 });
      const past = makeSession({ expiresAtMs: Date.now() - 1 });
      await store.putSession(short);
      await store.putSession(past);
      assert.equal(await store.getSession(past.id), null);
      assert.deepEqual(await store.getSession(short.id), short);
      await wait(400);
      assert.equal(await store.getSession(short.id), null);
    });

    // ---- grants ----

    it('when grants are stored, then they list per service oldest first and delete once', async () => {
      const g1 = makeGrant({ serviceId: 'svc-a', createdAtMs: NOW + 2 });
      const g2 = makeGrant({
        serviceId: 'svc-a',
        createdAtMs: NOW + 1,
        scopes: ['read'],
        linkId: 'lnk_1',
        expiresAtMs: NOW + 99,
      });
      const g3 = makeGrant({ serviceId: 'svc-b', createdAtMs: NOW + 3 });
      for (const g of [g1, g2, g3]) await store.putGrant(g);
      assert.deepEqual(await store.getGrant(g2.id), g2);
      assert.deepEqual(await store.listGrants('svc-a'), [g2, g1]);
      assert.deepEqual(await store.listGrants('svc-b'), [g3]);
      assert.deepEqual(await store.listGrants('svc-none'), []);
      assert.deepEqual(await store.listGrants(), [g2, g1, g3]);
      // Re-putting a grant for another service moves it.
      const moved = { ...g1, serviceId: 'svc-b' };
      await store.putGrant(moved);
      assert.deepEqual(await store.listGrants('svc-a'), [g2]);
      assert.deepEqual(await store.listGrants('svc-b'), [moved, g3]);
      assert.equal(await store.deleteGrant(g2.id), true);
      assert.equal(await store.deleteGrant(g2.id), false);
      assert.equal(await store.getGrant(g2.id), null);
      assert.deepEqual(await store.listGrants('svc-a'), []);
      assert.deepEqual(await store.listGrants(), [moved, g3]);
    });

    // ---- revocation records and job status ----

    it('when a revocation record is stored, then it reads back and can be replaced', async () => {
      const record = {
        link_id: 'lnk_1',
        revoked_by: 'user',
        provider_revocation: { status: 'pending', attempts: 0 },
        guidance: { settings_url: null },
      };
      await store.putRevocation({ linkId: 'lnk_1', record });
      assert.deepEqual(await store.getRevocation('lnk_1'), { linkId: 'lnk_1', record });
      const confirmed = { ...record, provider_revocation: { status: 'confirmed', attempts: 1 } };
      await store.putRevocation({ linkId: 'lnk_1', record: confirmed });
      assert.deepEqual(await store.getRevocation('lnk_1'), { linkId: 'lnk_1', record: confirmed });
    });

    it('when a job status is stored, then it reads back and can be replaced', async () => {
      await store.putJobStatus({
        id: 'job-s',
        status: { status: 'running', total: 3, revoked: 0 },
      });
      assert.deepEqual(await store.getJobStatus('job-s'), {
        id: 'job-s',
        status: { status: 'running', total: 3, revoked: 0 },
      });
      await store.putJobStatus({ id: 'job-s', status: { status: 'done', total: 3, revoked: 3 } });
      assert.deepEqual(await store.getJobStatus('job-s'), {
        id: 'job-s',
        status: { status: 'done', total: 3, revoked: 3 },
      });
    });

    // ---- webhooks ----

    it('when webhook endpoints are stored, then they list oldest first, read back whole and delete with their deliveries', async () => {
      const secret = { v: 1, alg: 'A256GCM', kid: 'k', edk: 'e', iv: 'i', ct: 'c', tag: 't' };
      const make = (id: string, createdAtMs: number) => ({
        id,
        url: `https://hooks.example/${id}`,
        events: id === 'wh-b' ? null : ['link.revoked'],
        tenantId: id === 'wh-b' ? null : 'acme',
        secret: secret as never,
        createdAtMs,
        disabledAtMs: null,
        disabledReason: null,
      });
      await store.putWebhookEndpoint(make('wh-b', 2000));
      await store.putWebhookEndpoint(make('wh-a:{x}', 1000));
      assert.deepEqual(
        (await store.listWebhookEndpoints()).map((e) => e.id),
        ['wh-a:{x}', 'wh-b'],
      );
      assert.deepEqual(await store.getWebhookEndpoint('wh-b'), make('wh-b', 2000));
      await store.putWebhookEndpoint({
        ...make('wh-b', 2000),
        disabledAtMs: 5,
        disabledReason: 'gone',
      });
      assert.equal((await store.getWebhookEndpoint('wh-b'))?.disabledReason, 'gone');

      for (let i = 0; i < 105; i++)
        await store.putWebhookDelivery({
          endpointId: 'wh-b',
          eventId: `evt-${i}`,
          type: 'link.revoked',
          status: 'retrying',
          attempts: 1,
          lastStatusCode: 500,
          nextAttemptAtMs: 10_000 + i,
          updatedAtMs: 1000 + i,
        });
      await store.putWebhookDelivery({
        endpointId: 'wh-b',
        eventId: 'evt-103',
        type: 'link.revoked',
        status: 'delivered',
        attempts: 2,
        lastStatusCode: 204,
        nextAttemptAtMs: null,
        updatedAtMs: 9000,
      });
      const recent = await store.listWebhookDeliveries('wh-b', 1000);
      assert.equal(recent.length, 100, 'only the newest 100 are kept');
      assert.deepEqual(recent[0], {
        endpointId: 'wh-b',
        eventId: 'evt-103',
        type: 'link.revoked',
        status: 'delivered',
        attempts: 2,
        lastStatusCode: 204,
        nextAttemptAtMs: null,
        updatedAtMs: 9000,
      });
      assert.equal(recent[1]!.eventId, 'evt-104');
      assert.ok(!recent.some((d) => ['evt-0', 'evt-4'].includes(d.eventId)), 'the oldest went');
      assert.equal((await store.listWebhookDeliveries('wh-b', 3)).length, 3);
      assert.deepEqual(await store.listWebhookDeliveries('wh-a:{x}', 10), []);

      assert.equal(await store.deleteWebhookEndpoint('wh-b'), true);
      assert.equal(await store.deleteWebhookEndpoint('wh-b'), false);
      assert.equal(await store.getWebhookEndpoint('wh-b'), null);
      assert.deepEqual(await store.listWebhookDeliveries('wh-b', 10), []);
      assert.deepEqual(
        (await store.listWebhookEndpoints()).map((e) => e.id),
        ['wh-a:{x}'],
      );
    });

    // ---- locks ----

    it('when a lock is held, then only its owner extends or releases it', async () => {
      const owner = await store.acquireLock('refresh:lnk_1', 5000);
      assert.equal(typeof owner, 'string');
      assert.equal(await store.acquireLock('refresh:lnk_1', 5000), null);
      assert.ok(await store.acquireLock('refresh:lnk_2', 5000), 'another name is independent');
      assert.equal(await store.extendLock('refresh:lnk_1', 'not-the-owner', 5000), false);
      assert.equal(await store.releaseLock('refresh:lnk_1', 'not-the-owner'), false);
      assert.equal(await store.acquireLock('refresh:lnk_1', 5000), null, 'still held');
      assert.equal(await store.extendLock('refresh:lnk_1', owner!, 5000), true);
      assert.equal(await store.releaseLock('refresh:lnk_1', owner!), true);
      assert.equal(await store.releaseLock('refresh:lnk_1', owner!), false, 'released once');
      const next = await store.acquireLock('refresh:lnk_1', 5000);
      assert.ok(next && next !== owner, 'a new owner token');
    });

    it('when many callers acquire one lock at once, then exactly one gets it', async () => {
      const owners = await Promise.all(
        Array.from({ length: 20 }, () => store.acquireLock('race', 5000)),
      );
      assert.equal(owners.filter((o) => o !== null).length, 1);
    });

    it('when a lock outlives its TTL, then another caller takes it and the first owner can no longer release or extend', async () => {
      const first = await store.acquireLock('lease', 150);
      assert.ok(first);
      await wait(300);
      const second = await store.acquireLock('lease', 5000);
      assert.ok(second && second !== first);
      assert.equal(await store.releaseLock('lease', first), false);
      assert.equal(await store.extendLock('lease', first, 5000), false);
      assert.equal(await store.releaseLock('lease', second), true);
    });

    it('when a lock is extended in time, then it outlives its first TTL', async () => {
      const owner = await store.acquireLock('extended', 250);
      assert.ok(owner);
      await wait(100);
      assert.equal(await store.extendLock('extended', owner, 1000), true);
      await wait(300);
      assert.equal(
        await store.acquireLock('extended', 1000),
        null,
        'still held after the first TTL',
      );
      assert.equal(await store.releaseLock('extended', owner), true);
    });

    // ---- audit ----

    it('when audit events are appended, then they read back in order and page by afterSeq', async () => {
      const events: AuditEvent[] = Array.from({ length: 7 }, (_, i) => ({
        atMs: NOW + i,
        type: i % 2 ? 'token.released' : 'link.created',
        requestId: i === 3 ? null : `req-${i}`,
        data: { link_id: `lnk_${i}`, n: i, tags: i ? ['x'] : [] },
      }));
      const seqs: string[] = [];
      for (const e of events) seqs.push(await store.appendAudit(e));
      seqs.push(await store.appendAudit({ atMs: NOW + 7, type: 'no.request', data: {} }));
      assert.equal(new Set(seqs).size, seqs.length, 'distinct sequence ids');

      const all = await store.readAudit();
      assert.deepEqual(all, [
        ...events.map((e, i) => ({ ...e, seq: seqs[i] })),
        { seq: seqs[7], atMs: NOW + 7, type: 'no.request', requestId: null, data: {} },
      ]);
      assert.deepEqual(
        (await store.readAudit(seqs[4])).map((e) => e.seq),
        seqs.slice(5),
      );
      assert.deepEqual(
        (await store.readAudit(undefined, 2)).map((e) => e.seq),
        seqs.slice(0, 2),
      );
      assert.deepEqual(await store.readAudit(seqs[7]), []);

      const paged: string[] = [];
      let cursor: string | undefined;
      for (;;) {
        const page = await store.readAudit(cursor, 3);
        if (page.length === 0) break;
        paged.push(...page.map((e) => e.seq!));
        cursor = page[page.length - 1]!.seq;
      }
      assert.deepEqual(paged, seqs);
    });

    it('when audit events are appended concurrently, then none is lost and sequence ids are distinct', async () => {
      const seqs = await Promise.all(
        Array.from({ length: 40 }, (_, i) =>
          store.appendAudit({ atMs: NOW, type: 'burst', data: { i } }),
        ),
      );
      assert.equal(new Set(seqs).size, 40);
      const read = await store.readAudit();
      assert.equal(read.length, 40);
      assert.deepEqual(new Set(read.map((e) => e.seq)), new Set(seqs));
    });

    // ---- queue ----

    it('when a job is enqueued twice with one id, then the first stays and it counts once', async () => {
      await store.enqueue({
        id: 'job-dup',
        kind: 'revoke',
        payload: { link_id: 'lnk_1' },
        attempts: 0,
        runAtMs: NOW,
      });
      await store.enqueue({
        id: 'job-dup',
        kind: 'other',
        payload: { link_id: 'lnk_2' },
        attempts: 5,
        runAtMs: NOW - 100,
      });
      assert.equal(await store.countJobs(), 1);
      const [job] = await store.claimJobs(NOW, 10, 1000);
      assert.deepEqual(
        { ...job, leaseToken: undefined },
        {
          id: 'job-dup',
          kind: 'revoke',
          payload: { link_id: 'lnk_1' },
          attempts: 0,
          runAtMs: NOW,
          leaseToken: undefined,
        },
      );
      // While leased, enqueueing the same id again does not reset it.
      await store.enqueue({
        id: 'job-dup',
        kind: 'revoke',
        payload: {},
        attempts: 0,
        runAtMs: NOW,
      });
      assert.deepEqual(await store.claimJobs(NOW, 10, 1000), []);
    });

    it('when jobs are claimed, then only due ones come back, oldest first, leased and up to the limit', async () => {
      await store.enqueue({
        id: 'job-late',
        kind: 'k',
        payload: {},
        attempts: 0,
        runAtMs: NOW + 60_000,
      });
      await store.enqueue({
        id: 'job-b',
        kind: 'k',
        payload: { n: 2 },
        attempts: 1,
        runAtMs: NOW - 5,
      });
      await store.enqueue({
        id: 'job-a',
        kind: 'k',
        payload: { n: 1 },
        attempts: 0,
        runAtMs: NOW - 10,
      });
      await store.enqueue({ id: 'job-c', kind: 'k', payload: { n: 3 }, attempts: 0, runAtMs: NOW });
      const first = await store.claimJobs(NOW, 2, 10_000);
      assert.deepEqual(
        first.map((j) => j.id),
        ['job-a', 'job-b'],
      );
      assert.deepEqual(
        { ...first[1], leaseToken: undefined },
        {
          id: 'job-b',
          kind: 'k',
          payload: { n: 2 },
          attempts: 1,
          runAtMs: NOW - 5,
          leaseToken: undefined,
        },
      );
      assert.ok(first.every((j) => typeof j.leaseToken === 'string' && j.leaseToken.length >= 16));
      assert.notEqual(first[0]!.leaseToken, first[1]!.leaseToken);
      const second = await store.claimJobs(NOW, 10, 10_000);
      assert.deepEqual(
        second.map((j) => j.id),
        ['job-c'],
        'leased jobs are invisible to other claimers',
      );
      assert.deepEqual(await store.claimJobs(NOW, 10, 10_000), []);
      assert.equal(await store.countJobs(), 4, 'claimed jobs still count as queued');
    });

    it('when many workers claim at once, then each job goes to exactly one of them', async () => {
      for (let i = 0; i < 30; i++)
        await store.enqueue({ id: `job-${i}`, kind: 'k', payload: {}, attempts: 0, runAtMs: NOW });
      const claims = await Promise.all(
        Array.from({ length: 10 }, () => store.claimJobs(NOW, 5, 10_000)),
      );
      const claimed = claims.flat().map((j) => j.id);
      assert.equal(claimed.length, 30);
      assert.equal(new Set(claimed).size, 30);
    });

    it('when a lease runs out, then the job is due again and the old lease can neither complete nor reschedule', async () => {
      await store.enqueue({
        id: 'job-lease',
        kind: 'k',
        payload: { a: 1 },
        attempts: 0,
        runAtMs: NOW,
      });
      const [first] = await store.claimJobs(NOW, 1, 1000);
      assert.ok(first?.leaseToken);
      assert.deepEqual(await store.claimJobs(NOW + 999, 1, 1000), [], 'still leased');
      const [again] = await store.claimJobs(NOW + 1000, 1, 1000);
      assert.equal(again?.id, 'job-lease', "a crashed worker's job comes back");
      assert.notEqual(again!.leaseToken, first.leaseToken);
      assert.equal(await store.completeJob('job-lease', first.leaseToken), false);
      assert.equal(await store.rescheduleJob('job-lease', first.leaseToken, NOW, 1), false);
      assert.equal(await store.completeJob('job-lease', again!.leaseToken!), true);
      assert.equal(
        await store.completeJob('job-lease', again!.leaseToken!),
        false,
        'completed once',
      );
      assert.equal(await store.countJobs(), 0);
    });

    it('when a lease ran out but nobody claimed the job again, then its holder can still complete it', async () => {
      // The lease ended at NOW - 900. The lease token is the fence: it is lost only when another claim replaced it.
      await store.enqueue({
        id: 'job-late-done',
        kind: 'k',
        payload: {},
        attempts: 0,
        runAtMs: NOW - 1000,
      });
      const [claimed] = await store.claimJobs(NOW - 1000, 1, 100);
      assert.equal(await store.completeJob('job-late-done', claimed!.leaseToken!), true);
      assert.equal(await store.countJobs(), 0);
    });

    it('when a job is rescheduled, then it comes back at runAtMs with its attempts and payload', async () => {
      await store.enqueue({
        id: 'job-r',
        kind: 'revoke',
        payload: { step: 1 },
        attempts: 0,
        runAtMs: NOW,
      });
      const [claimed] = await store.claimJobs(NOW, 1, 60_000);
      assert.equal(
        await store.rescheduleJob('job-r', claimed!.leaseToken!, NOW + 5000, 1, {
          step: 2,
          list: [],
        }),
        true,
      );
      assert.equal(
        await store.rescheduleJob('job-r', claimed!.leaseToken!, NOW + 5000, 1),
        false,
        'the lease ended with the reschedule',
      );
      assert.deepEqual(await store.claimJobs(NOW + 4999, 1, 1000), []);
      const [back] = await store.claimJobs(NOW + 5000, 1, 1000);
      assert.deepEqual(
        { ...back, leaseToken: undefined },
        {
          id: 'job-r',
          kind: 'revoke',
          payload: { step: 2, list: [] },
          attempts: 1,
          runAtMs: NOW + 5000,
          leaseToken: undefined,
        },
      );
      // Without a payload the payload is kept.
      assert.equal(await store.rescheduleJob('job-r', back!.leaseToken!, NOW + 6000, 2), true);
      const [kept] = await store.claimJobs(NOW + 6000, 1, 1000);
      assert.deepEqual(kept?.payload, { step: 2, list: [] });
      assert.equal(kept?.attempts, 2);
      assert.equal(await store.countJobs(), 1);
    });
    // ---- queue maintenance (rewrap) ----

    async function scanned(): Promise<Map<string, ScannedJob>> {
      const out = new Map<string, ScannedJob>();
      for await (const job of store.scanJobs()) {
        assert.ok(!out.has(job.id), `${job.id} yielded once`);
        assert.ok(!('leaseToken' in job), 'a scan never hands out a lease token');
        out.set(job.id, job);
      }
      return out;
    }

    it('when jobs are queued, due or not, leased or not, then scanJobs yields each exactly once with its lease state', async () => {
      for (let i = 0; i < 450; i++)
        await store.enqueue({
          id: `job-s${String(i).padStart(3, '0')}`,
          kind: 'k',
          payload: { i, nested: { list: [i] } },
          attempts: i % 3,
          runAtMs: NOW + i,
        });
      const [leased] = await store.claimJobs(NOW, 1, 60_000);
      assert.equal(leased!.id, 'job-s000');
      const jobs = await scanned();
      assert.equal(jobs.size, 450);
      assert.deepEqual(jobs.get('job-s000'), {
        id: 'job-s000',
        kind: 'k',
        payload: { i: 0, nested: { list: [0] } },
        attempts: 0,
        runAtMs: NOW,
        leased: true,
      });
      assert.deepEqual(jobs.get('job-s449'), {
        id: 'job-s449',
        kind: 'k',
        payload: { i: 449, nested: { list: [449] } },
        attempts: 2,
        runAtMs: NOW + 449,
        leased: false,
      });
      // After a reschedule the lease is gone; after completion the job is.
      assert.ok(await store.rescheduleJob('job-s000', leased!.leaseToken!, NOW + 10, 1));
      assert.equal((await scanned()).get('job-s000')!.leased, false);
      const [again] = await store.claimJobs(NOW + 10, 1, 60_000);
      assert.ok(await store.completeJob(again!.id, again!.leaseToken!));
      assert.equal((await scanned()).size, 449);
    });

    it('when an unleased job still holds the expected payload, then replaceJobPayload swaps it and leaves attempts and run time', async () => {
      await store.enqueue({
        id: 'job-p',
        kind: 'revoke',
        payload: { sealed: { kid: 'old', edk: 'a' }, n: 1 },
        attempts: 2,
        runAtMs: NOW + 5000,
      });
      const job = (await scanned()).get('job-p')!;
      assert.equal(
        await store.replaceJobPayload('job-p', job.payload, {
          sealed: { kid: 'new', edk: 'b' },
          n: 1,
        }),
        true,
      );
      assert.equal(
        await store.replaceJobPayload('job-p', job.payload, {
          sealed: { kid: 'newer', edk: 'c' },
          n: 1,
        }),
        false,
        'a stale expected payload loses',
      );
      assert.equal(
        await store.replaceJobPayload('job-missing', job.payload, { n: 2 }),
        false,
        'no such job',
      );
      assert.deepEqual(await store.claimJobs(NOW + 4999, 1, 1000), [], 'not moved earlier');
      const [back] = await store.claimJobs(NOW + 5000, 1, 1000);
      assert.deepEqual(
        { ...back, leaseToken: undefined },
        {
          id: 'job-p',
          kind: 'revoke',
          payload: { sealed: { kid: 'new', edk: 'b' }, n: 1 },
          attempts: 2,
          runAtMs: NOW + 5000,
          leaseToken: undefined,
        },
      );
      assert.equal(await store.countJobs(), 1);
    });

    it('when a job is leased, then replaceJobPayload refuses it, and a reschedule by the worker is never overwritten', async () => {
      await store.enqueue({
        id: 'job-w',
        kind: 'revoke',
        payload: { step: 1 },
        attempts: 0,
        runAtMs: NOW,
      });
      const seen = (await scanned()).get('job-w')!;
      const [claimed] = await store.claimJobs(NOW, 1, 60_000);
      // Leased: the claimer holds the payload and would write it back, so no maintenance write lands.
      assert.equal(
        await store.replaceJobPayload('job-w', seen.payload, { step: 1, rewrapped: true }),
        false,
      );
      assert.equal(
        await store.replaceJobPayload('job-w', claimed!.payload, { step: 1, rewrapped: true }),
        false,
      );
      // The worker reschedules with a changed payload: the scan's expected payload is now stale.
      assert.ok(
        await store.rescheduleJob('job-w', claimed!.leaseToken!, NOW + 100, 1, { step: 2 }),
      );
      assert.equal(
        await store.replaceJobPayload('job-w', seen.payload, { step: 1, rewrapped: true }),
        false,
        "the worker's reschedule wins",
      );
      const fresh = (await scanned()).get('job-w')!;
      assert.deepEqual(fresh.payload, { step: 2 });
      assert.equal(fresh.leased, false);
      assert.equal(
        await store.replaceJobPayload('job-w', fresh.payload, { step: 2, rewrapped: true }),
        true,
      );
      const [back] = await store.claimJobs(NOW + 100, 1, 1000);
      assert.deepEqual(back!.payload, { step: 2, rewrapped: true });
      assert.equal(back!.attempts, 1);
      // Its lease (to NOW + 1100) is over for any later claim, but nobody re-claimed it: its holder may
      // still complete or reschedule (the lease token is the fence), so it still counts as held.
      assert.equal((await scanned()).get('job-w')!.leased, true);
      assert.equal(await store.replaceJobPayload('job-w', back!.payload, { step: 3 }), false);
    });

    it('when many replaceJobPayload calls race on one job with the same expected payload, then exactly one wins', async () => {
      await store.enqueue({
        id: 'job-race',
        kind: 'k',
        payload: { v: 0 },
        attempts: 0,
        runAtMs: NOW,
      });
      const results = await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          store.replaceJobPayload('job-race', { v: 0 }, { v: i + 1 }),
        ),
      );
      assert.equal(results.filter(Boolean).length, 1);
      const winner = results.indexOf(true) + 1;
      assert.deepEqual((await scanned()).get('job-race')!.payload, { v: winner });
    });
  });
}
