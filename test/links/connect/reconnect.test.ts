import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { openTokenSet } from '../../../src/links/sealing/token-vault.js';
import type { LinkRecord } from '../../../src/links/link.js';
import {
  startConnectHarnessWithOidc,
  type OidcConnectHarness,
} from '../../support/connect-harness.js';

describe('when a user connects the same provider account again', () => {
  let h: OidcConnectHarness;

  before(async () => {
    h = await startConnectHarnessWithOidc({ mode: 'oidc' });
  });
  after(async () => {
    await h.close();
  });

  async function connectAs(
    accountId: string,
    tenant = 'tenant-re',
    user = 'user-re',
  ): Promise<{ linkId: string; reconnected: boolean }> {
    const session = await h.createSession({ tenant_id: tenant, user_id: user });
    const flow = await h.startFlow('acme', session.session_token);
    const done = await h.callback(
      await h.oidc.completeLogin(flow.authorizationUrl, { accountId }),
      flow.cookie,
      { headers: { accept: 'application/json' } },
    );
    assert.equal(done.status, 200, done.text);
    return { linkId: String(done.json!.link_id), reconnected: false };
  }

  async function refreshTokenOf(link: LinkRecord): Promise<string> {
    const tokens = await openTokenSet(h.vault, link, link.tokens!);
    return tokens.refreshToken!.reveal();
  }

  test('then the link keeps its id, gets the new tokens, is active again, and the superseded refresh token is revoked at the provider', async () => {
    const first = await connectAs('alice');
    const before = (await h.store.getLink(first.linkId))!;
    const oldRefresh = await refreshTokenOf(before);
    assert.equal((await h.oidc.introspect(oldRefresh)).active, true);
    // The link had needed reauthorisation (a dead refresh token, say): the reconnect heals it.
    const marked = await h.store.saveLink(
      { ...before, status: 'needs_reauth', version: before.version + 1 },
      before.version,
    );
    assert.ok(marked);

    const revocationsBefore = h.oidc.requestCounts().revocation;
    const second = await connectAs('alice');
    assert.equal(second.linkId, first.linkId);
    await h.connect.idle();

    const after = (await h.store.getLink(first.linkId))!;
    assert.equal(after.status, 'active');
    assert.equal(after.version, marked.version + 1);
    assert.equal(after.createdAtMs, before.createdAtMs);
    const newRefresh = await refreshTokenOf(after);
    assert.notEqual(newRefresh, oldRefresh);
    assert.equal((await h.oidc.introspect(newRefresh)).active, true);
    assert.equal(
      (await h.oidc.introspect(oldRefresh)).active,
      false,
      'the superseded refresh token is dead at the provider',
    );
    assert.equal(h.oidc.requestCounts().revocation - revocationsBefore, 1);
    assert.equal((await h.store.listLinks({ tenantId: 'tenant-re', userId: 'user-re' })).length, 1);

    const audit = await h.store.readAudit(undefined, 10_000);
    const events = audit
      .filter((e) => e.data.link_id === first.linkId)
      .map((e) => [e.type, e.data.outcome ?? null]);
    assert.deepEqual(events, [
      ['link.connected', null],
      ['link.reconnected', null],
      ['link.superseded_token_revoked', 'confirmed'],
    ]);
  });

  test('then another account of the same user at the same provider is a new link', async () => {
    const alice = await connectAs('carol', 'tenant-two', 'user-two');
    const bob = await connectAs('dave', 'tenant-two', 'user-two');
    assert.notEqual(alice.linkId, bob.linkId);
  });

  test('then a revoked link stays revoked: reconnecting that account makes a new link', async () => {
    const first = await connectAs('erin', 'tenant-three', 'user-three');
    const link = (await h.store.getLink(first.linkId))!;
    const revoked = await h.store.saveLink(
      { ...link, status: 'revoked', tokens: null, version: link.version + 1 },
      link.version,
    );
    assert.ok(revoked);
    const again = await connectAs('erin', 'tenant-three', 'user-three');
    assert.notEqual(again.linkId, first.linkId);
    assert.equal((await h.store.getLink(first.linkId))?.status, 'revoked');
    assert.equal((await h.store.getLink(first.linkId))?.tokens, null);
  });

  test('then two callbacks of the same account finishing at once end in one link', async () => {
    const flows = await Promise.all(
      [1, 2].map(async () => {
        const session = await h.createSession({ tenant_id: 'tenant-race', user_id: 'user-race' });
        const flow = await h.startFlow('acme', session.session_token);
        return {
          flow,
          callbackUrl: await h.oidc.completeLogin(flow.authorizationUrl, { accountId: 'frank' }),
        };
      }),
    );
    const answers = await Promise.all(
      flows.map(({ flow, callbackUrl }) =>
        h.callback(callbackUrl, flow.cookie, { headers: { accept: 'application/json' } }),
      ),
    );
    assert.deepEqual(
      answers.map((a) => a.status),
      [200, 200],
    );
    assert.equal(answers[0]!.json!.link_id, answers[1]!.json!.link_id);
    assert.equal((await h.store.listLinks({ tenantId: 'tenant-race' })).length, 1);
  });
});
