import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Express } from 'express';
import { pino } from 'pino';
import request from 'supertest';
import { loadCatalogue } from '../../../src/providers/catalogue.js';
import { createRevocation, type Revocation } from '../../../src/links/revoke/revocation.js';
import type { AuditEvent, ReleaseCommit, Store } from '../../../src/store/store.js';
import { expectedProblem } from '../../support/problem-body.js';
import { createReleaseHarness, type ReleaseHarness } from '../../support/release-harness.js';

/**
 * "A link, once revoked, never releases a token again, whatever races with the revoke." A release
 * reads the link first, then stores its audit record in one atomic step with the check that the
 * link is still active (commitRelease): a revocation can land in between. The race is made
 * deterministic with a store wrapper (a real SQLite store underneath) that runs the real
 * revocation just before the atomic step, or just after it but before it returns. Before: the
 * release refuses and leaves no release record. After: the release record precedes the
 * revocation, so the token is released (the revocation is linearised after it) and every later
 * call is refused. Through Express and through the lean path alike.
 */

type Hook = (event: AuditEvent, commit: () => Promise<ReleaseCommit>) => Promise<ReleaseCommit>;

describe('revocation racing a token release', () => {
  let h: ReleaseHarness;
  let revocation: Revocation;
  /** Runs around the next `token.released` append, once. */
  let hook: Hook | null = null;

  before(async () => {
    h = await createReleaseHarness({
      wrapStore: (real: Store): Store =>
        new Proxy(real, {
          get(target, prop, receiver) {
            if (prop === 'commitRelease') {
              return (linkId: string, grantId: string, event: AuditEvent) => {
                const run = hook;
                if (run === null) return target.commitRelease(linkId, grantId, event);
                hook = null;
                return run(event, () => target.commitRelease(linkId, grantId, event));
              };
            }
            const v: unknown = Reflect.get(target, prop, receiver);
            return typeof v === 'function' ? v.bind(target) : v;
          },
        }),
    });
    const catalogue = loadCatalogue({
      builtinFile: join(import.meta.dirname, '../../../config/providers.json'),
      extraFile: null,
      config: h.config,
    });
    revocation = createRevocation({
      store: h.store,
      vault: h.vault,
      catalogue,
      audit: h.audit,
      log: pino({ level: 'silent' }),
      metrics: h.metrics,
    });
  });
  after(() => h.close());

  const targets = (): [
    string,
    Express | ((req: IncomingMessage, res: ServerResponse) => void),
  ][] => [
    ['Express', h.app],
    ['lean path', h.listener],
  ];

  async function seeded(accessToken: string) {
    const link = await h.seedLink({ accessToken });
    await h.addGrant({ serviceId: 'billing', linkId: link.id });
    return link;
  }

  const ask = (
    target: Express | ((req: IncomingMessage, res: ServerResponse) => void),
    linkId: string,
  ) =>
    request(target)
      .post(`/v1/links/${linkId}/token`)
      .set('Authorization', h.services.bearer('billing-hs'))
      .set('Content-Type', 'application/json')
      .send('{}');

  const revoke = (linkId: string) =>
    revocation.revokeLink(linkId, {
      revokedBy: 'service',
      serviceId: 'crm-sync',
      reason: 'race',
      requestId: 'race',
    });

  async function eventsOf(linkId: string): Promise<string[]> {
    return (await h.store.readAudit(undefined, 10_000))
      .filter((e) => e.data.link_id === linkId)
      .map((e) => e.type);
  }

  it('when a link is released normally, then the token leaves, one release is audited and nothing is withdrawn', async () => {
    for (const [name, target] of targets()) {
      const link = await seeded(`plain-token-${name}`);
      const res = await ask(target, link.id);
      assert.equal(res.status, 200, name);
      assert.equal(res.body.access_token, `plain-token-${name}`, name);
      const events = await eventsOf(link.id);
      assert.equal(events.filter((t) => t === 'token.released').length, 1, name);
      assert.equal(events.includes('token.release_withdrawn'), false, name);
    }
  });

  it('when the link is revoked just before the atomic release step, then 410 link_revoked, the token never leaves and no release is recorded', async () => {
    for (const [name, target] of targets()) {
      const link = await seeded(`revoked-before-${name}`);
      hook = async (_event, commit) => {
        await revoke(link.id);
        return commit();
      };
      const res = await ask(target, link.id);
      assert.equal(hook, null, `${name}: the race was not run`);
      assert.equal(res.status, 410, `${name}: ${res.status} ${res.text}`);
      assert.deepEqual(res.body, expectedProblem(res, 'link_revoked'), name);
      assert.equal(res.text.includes(`revoked-before-${name}`), false, name);
      const events = await eventsOf(link.id);
      assert.ok(events.includes('link.revocation_requested'), name);
      assert.equal(events.includes('token.released'), false, `${name}: no release record`);
    }
  });

  it('when the link is revoked just after the atomic release step, then the release precedes the revocation and every later call is 410', async () => {
    for (const [name, target] of targets()) {
      const link = await seeded(`revoked-after-${name}`);
      hook = async (_event, commit) => {
        const outcome = await commit();
        await revoke(link.id);
        return outcome;
      };
      const res = await ask(target, link.id);
      assert.equal(hook, null, `${name}: the race was not run`);
      assert.equal(res.status, 200, `${name}: ${res.status} ${res.text}`);
      const events = await eventsOf(link.id);
      assert.ok(
        events.indexOf('token.released') >= 0 &&
          events.indexOf('token.released') < events.indexOf('link.revocation_requested'),
        `${name}: the release record precedes the revocation: ${events.join(' ')}`,
      );
      assert.equal((await ask(target, link.id)).status, 410, name);
    }
  });

  it('when the grant is deleted just before the atomic release step, then 403 no_grant and no release is recorded', async () => {
    for (const [name, target] of targets()) {
      const link = await h.seedLink({ accessToken: `grant-gone-${name}` });
      const grant = await h.addGrant({ serviceId: 'billing', linkId: link.id });
      hook = async (_event, commit) => {
        assert.ok(await h.store.deleteGrant(grant.id));
        return commit();
      };
      const res = await ask(target, link.id);
      assert.equal(hook, null, `${name}: the race was not run`);
      assert.equal(res.status, 403, `${name}: ${res.status} ${res.text}`);
      assert.deepEqual(res.body, expectedProblem(res, 'no_grant'), name);
      assert.equal((await eventsOf(link.id)).includes('token.released'), false, name);
    }
  });

  it('when the link goes needs_reauth just before the atomic release step, then 409 reauth_required', async () => {
    for (const [name, target] of targets()) {
      const link = await seeded(`reauth-${name}`);
      hook = async (_event, commit) => {
        const current = (await h.store.getLink(link.id))!;
        assert.ok(
          await h.store.saveLink(
            { ...current, status: 'needs_reauth', updatedAtMs: Date.now() },
            current.version,
          ),
        );
        return commit();
      };
      const res = await ask(target, link.id);
      assert.equal(hook, null, `${name}: the race was not run`);
      assert.equal(res.status, 409, `${name}: ${res.status} ${res.text}`);
      assert.deepEqual(res.body, expectedProblem(res, 'reauth_required'), name);
      assert.equal(res.text.includes(`reauth-${name}`), false, name);
    }
  });
});
