import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { createSessions, sessionIdOf } from '../../../src/links/connect/sessions.js';
import type { LinkRecord } from '../../../src/links/link.js';
import {
  startConnectHarnessWithOidc,
  type OidcConnectHarness,
} from '../../support/connect-harness.js';

describe('when a service mints a session and the browser uses it', () => {
  let h: OidcConnectHarness;
  before(async () => {
    h = await startConnectHarnessWithOidc({ mode: 'oauth' });
  });
  after(async () => {
    await h.close();
  });

  const post = (
    body: unknown,
    bearer = h.services.bearer('crm-hs'),
    contentType = 'application/json',
  ) =>
    h.request('/v1/sessions', {
      method: 'POST',
      headers: { authorization: bearer, 'content-type': contentType },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });

  test('then POST /v1/sessions answers 201 with a 256-bit bearer carried in URL fragments, and the store holds only its hash', async () => {
    const before = Date.now();
    const answer = await post({ tenant_id: 'tenant-s', user_id: 'user-s', providers: ['acme'] });
    assert.equal(answer.status, 201, answer.text);
    assert.equal(answer.headers.get('cache-control'), 'no-store');
    const body = answer.json!;
    const token = String(body.session_token);
    assert.match(token, /^[A-Za-z0-9_-]{43}$/);
    assert.deepEqual(Object.keys(body).sort(), [
      'connect_url',
      'expires_at',
      'manage_url',
      'session_token',
    ]);
    assert.equal(body.connect_url, `${h.publicUrl}/connect#session=${token}`);
    assert.equal(body.manage_url, `${h.publicUrl}/manage#session=${token}`);
    const expiresAtMs = Date.parse(String(body.expires_at));
    assert.ok(
      expiresAtMs >= before + 900_000 && expiresAtMs <= Date.now() + 900_000,
      `expires_at ${String(body.expires_at)}`,
    );
    assert.match(String(body.expires_at), /Z$/);

    assert.equal(await h.store.getSession(token), null, 'the bearer is not a store key');
    const stored = await h.store.getSession(createHash('sha256').update(token).digest('base64url'));
    assert.deepEqual(
      { ...stored, createdAtMs: 0 },
      {
        id: sessionIdOf(token),
        tenantId: 'tenant-s',
        userId: 'user-s',
        providers: ['acme'],
        returnTo: null,
        userDisplay: null,
        requireConfirmation: false,
        serviceId: 'crm-sync',
        createdAtMs: 0,
        expiresAtMs,
      },
    );
  });

  test('then an invalid body is 400 invalid_request naming the field, and callers without the role are refused', async () => {
    const cases: [unknown, string | null][] = [
      [{ tenant_id: 't', user_id: 'u', extra: 1 }, 'extra'],
      [{ user_id: 'u' }, 'tenant_id'],
      [{ tenant_id: 't' }, 'user_id'],
      [{ tenant_id: 7, user_id: 'u' }, 'tenant_id'],
      [{ tenant_id: 't', user_id: '' }, 'user_id'],
      [{ tenant_id: 't', user_id: 'a\u0000b' }, 'user_id'],
      [{ tenant_id: 'x'.repeat(257), user_id: 'u' }, 'tenant_id'],
      [{ tenant_id: 't', user_id: 'u', providers: [] }, 'providers'],
      [{ tenant_id: 't', user_id: 'u', providers: 'acme' }, 'providers'],
      [{ tenant_id: 't', user_id: 'u', providers: ['hubspot'] }, 'providers'],
      [{ tenant_id: 't', user_id: 'u', providers: ['no-such'] }, 'providers'],
      [{ tenant_id: 't', user_id: 'u', user_display: '' }, 'user_display'],
      [{ tenant_id: 't', user_id: 'u', user_display: 7 }, 'user_display'],
      [{ tenant_id: 't', user_id: 'u', user_display: 'x'.repeat(129) }, 'user_display'],
      [{ tenant_id: 't', user_id: 'u', user_display: 'ana\nmallory' }, 'user_display'],
      [{ tenant_id: 't', user_id: 'u', user_display: 'ana\u202emoc.live' }, 'user_display'],
      [{ tenant_id: 't', user_id: 'u', user_display: 'ana\u200b' }, 'user_display'],
      [{ tenant_id: 't', user_id: 'u', user_display: ' ana' }, 'user_display'],
      [{ tenant_id: 't', user_id: 'u', user_display: 'ana\ud800' }, 'user_display'],
      [{ tenant_id: 't', user_id: 'u', require_confirmation: 'yes' }, 'require_confirmation'],
      [['tenant_id'], null],
      ['null', null],
    ];
    for (const [body, parameter] of cases) {
      const answer = await post(body);
      assert.equal(answer.status, 400, `${JSON.stringify(body)}: ${answer.text}`);
      assert.equal(answer.json?.code, 'invalid_request');
      if (parameter) assert.equal(answer.json?.parameter, parameter, JSON.stringify(body));
    }
    const notEnabled = await post({ tenant_id: 't', user_id: 'u', providers: ['hubspot'] });
    assert.equal(
      notEnabled.json?.detail,
      'provider "hubspot" is not an enabled provider (a catalogue provider is enabled by LINKVAULT_PROVIDER_HUBSPOT_CLIENT_ID and LINKVAULT_PROVIDER_HUBSPOT_CLIENT_SECRET)',
    );
    assert.equal(
      (await post({ tenant_id: 't', user_id: 'u' }, h.services.bearer('billing-hs'))).json?.code,
      'forbidden',
    );
    const anonymous = await h.request('/v1/sessions', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"tenant_id":"t","user_id":"u"}',
    });
    assert.equal(anonymous.status, 401);
  });

  test('then user_display and require_confirmation are kept with the session (require_confirmation defaulting to the configuration)', async () => {
    const answer = await post({
      tenant_id: 'tenant-s',
      user_id: 'user-d',
      user_display: 'Ana Lima <ana@example.com> 😀',
      require_confirmation: true,
    });
    assert.equal(answer.status, 201, answer.text);
    const stored = await h.store.getSession(sessionIdOf(String(answer.json!.session_token)));
    assert.equal(stored?.userDisplay, 'Ana Lima <ana@example.com> 😀');
    assert.equal(stored?.requireConfirmation, true);

    const sessions = createSessions({
      config: { ...h.config, requireConnectConfirmation: true },
      store: h.store,
      catalogue: h.catalogue,
    });
    const byDefault = await sessions.createSession({ tenantId: 't', userId: 'u' }, 'crm-sync');
    assert.equal(
      (await sessions.resolveSession(byDefault.session_token)).requireConfirmation,
      true,
    );
    const optedOut = await sessions.createSession(
      { tenantId: 't', userId: 'u', requireConfirmation: false },
      'crm-sync',
    );
    assert.equal(
      (await sessions.resolveSession(optedOut.session_token)).requireConfirmation,
      false,
    );
  });

  test('then a session past its expiry is session_expired', async () => {
    let clock = Date.now();
    const sessions = createSessions({
      config: h.config,
      store: h.store,
      catalogue: h.catalogue,
      now: () => clock,
    });
    const created = await sessions.createSession({ tenantId: 't', userId: 'u' }, 'crm-sync');
    assert.equal((await sessions.resolveSession(created.session_token)).tenantId, 't');
    clock += h.config.sessionTtlSeconds * 1000;
    await assert.rejects(
      sessions.resolveSession(created.session_token),
      (err: { code?: string }) => err.code === 'session_expired',
    );
    for (const bad of [undefined, '', 'x', `${created.session_token}x`, 42]) {
      await assert.rejects(
        sessions.resolveSession(bad),
        (err: { code?: string }) => err.code === 'session_expired',
      );
    }
  });

  test("then GET /v1/me/links lists only that tenant and user's links", async () => {
    const at = Date.now();
    const seed = (id: string, tenantId: string, userId: string): Promise<LinkRecord | null> =>
      h.store.saveLink(
        {
          id,
          tenantId,
          userId,
          providerId: 'acme',
          status: 'active',
          version: 0,
          providerAccountId: null,
          grantedScopes: ['api:read'],
          metadata: {},
          endpointVariables: { secretHost: 'x' },
          tokens: null,
          accessTokenExpiresAtMs: null,
          createdAtMs: at,
          updatedAtMs: at,
          lastRefreshedAtMs: null,
          lastUsedAtMs: null,
        },
        null,
      );
    await seed('lnk_me_mine', 'tenant-me', 'user-me');
    await seed('lnk_me_other_user', 'tenant-me', 'someone-else');
    await seed('lnk_me_other_tenant', 'tenant-other', 'user-me');
    const session = await h.createSession({ tenant_id: 'tenant-me', user_id: 'user-me' });
    const mine = await h.request('/v1/me/links', {
      headers: { authorization: `Bearer ${session.session_token}` },
    });
    assert.equal(mine.status, 200);
    assert.deepEqual(
      (mine.json!.links as { id: string }[]).map((l) => l.id),
      ['lnk_me_mine'],
    );
    assert.ok(!mine.text.includes('secretHost'), 'endpoint variables are never shown');

    const none = await h.request('/v1/me/links');
    assert.equal(none.status, 401);
    assert.equal(none.json?.code, 'session_expired');
    assert.equal(none.headers.get('www-authenticate'), 'Bearer error="invalid_token"');
    const serviceJwt = await h.request('/v1/me/links', {
      headers: { authorization: h.services.bearer('crm-hs') },
    });
    assert.equal(serviceJwt.status, 401);
    const withQuery = await h.request('/v1/me/links?user_id=someone-else', {
      headers: { authorization: `Bearer ${session.session_token}` },
    });
    assert.equal(withQuery.status, 400);
  });

  test('then GET /v1/links validates its filters and GET /v1/links/:id answers link_not_found for unknown ids', async () => {
    const auth = { authorization: h.services.bearer('auditor-hs') };
    for (const query of [
      '?colour=red',
      '?status=gone',
      '?tenant_id=a&tenant_id=b',
      '?provider_id=Bad!',
      '?tenant_id[]=a',
    ]) {
      const answer = await h.request(`/v1/links${query}`, { headers: auth });
      assert.equal(answer.status, 400, `${query}: ${answer.text}`);
      assert.equal(answer.json?.code, 'invalid_request');
    }
    const filtered = await h.request(
      '/v1/links?tenant_id=tenant-me&user_id=user-me&provider_id=acme&status=active',
      { headers: auth },
    );
    assert.deepEqual(
      (filtered.json!.links as { id: string }[]).map((l) => l.id),
      ['lnk_me_mine'],
    );
    for (const id of ['lnk_nope', 'not-a-link', 'lnk_' + 'x'.repeat(100)]) {
      const answer = await h.request(`/v1/links/${id}`, { headers: auth });
      assert.equal(answer.status, 404);
      assert.equal(answer.json?.code, 'link_not_found');
    }
    assert.equal((await h.request('/v1/links/lnk_me_mine')).status, 401);
  });
});
