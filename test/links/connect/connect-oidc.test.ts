import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  ACME_CLIENT,
  APP_ORIGIN,
  startConnectHarnessWithOidc,
  type OidcConnectHarness,
} from '../../support/connect-harness.js';

const RFC3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;

for (const mode of ['oidc', 'oauth'] as const) {
  describe(`when a user connects through a ${mode === 'oidc' ? 'OIDC provider (discovery, ID token)' : 'plain OAuth 2.0 provider (hand-configured endpoints, no ID token)'}`, () => {
    let h: OidcConnectHarness;

    before(async () => {
      h = await startConnectHarnessWithOidc({ mode });
    });
    after(async () => {
      await h.close();
    });

    test('then the flow starts with state, PKCE S256, the per-provider redirect URI and a scoped binding cookie', async () => {
      const session = await h.createSession();
      const flow = await h.startFlow('acme', session.session_token);
      const url = flow.authorizationUrl;
      assert.equal(url.origin, h.oidc.issuer);
      const p = url.searchParams;
      assert.equal(p.get('client_id'), ACME_CLIENT.client_id);
      assert.equal(p.get('response_type'), 'code');
      assert.equal(p.get('redirect_uri'), `${h.publicUrl}/v1/oauth/callback/acme`);
      assert.equal(p.get('code_challenge_method'), 'S256');
      assert.match(p.get('code_challenge') ?? '', /^[A-Za-z0-9_-]{43}$/);
      assert.ok((p.get('state') ?? '').length >= 22);
      assert.equal(p.has('nonce'), mode === 'oidc');
      assert.equal(p.get('scope'), h.oidc.scopes.join(' '));
      // The session bearer never travels on to the provider.
      assert.ok(!url.href.includes(session.session_token));
      assert.match(
        flow.setCookie,
        /^lv_flow=[A-Za-z0-9_-]{43}; Path=\/v1\/oauth\/callback\/acme; Max-Age=600; HttpOnly; SameSite=Lax$/,
      );
      assert.equal(flow.answer.headers.get('cache-control'), 'no-store');
      assert.equal(flow.answer.headers.get('referrer-policy'), 'no-referrer');
    });

    test('then the callback stores the link, redirects to return_to and GET /v1/links/:id shows it with the granted scopes', async () => {
      const before = h.oidc.tokenRequests().authorization_code ?? 0;
      const session = await h.createSession();
      const flow = await h.startFlow('acme', session.session_token);
      const callbackUrl = await h.oidc.completeLogin(flow.authorizationUrl, {
        accountId: `alice-${mode}`,
      });
      assert.equal(
        callbackUrl.origin + callbackUrl.pathname,
        `${h.publicUrl}/v1/oauth/callback/acme`,
      );

      const done = await h.callback(callbackUrl, flow.cookie);
      assert.equal(done.status, 303);
      assert.equal(done.headers.get('cache-control'), 'no-store');
      assert.equal(done.headers.get('referrer-policy'), 'no-referrer');
      const location = done.location!;
      assert.equal(`${location.origin}${location.pathname}`, `${APP_ORIGIN}/settings/integrations`);
      assert.deepEqual([...location.searchParams.keys()], ['status', 'link_id', 'provider']);
      assert.equal(location.searchParams.get('provider'), 'acme');
      assert.equal(location.searchParams.get('status'), 'connected');
      const linkId = location.searchParams.get('link_id')!;
      assert.match(linkId, /^lnk_[A-Za-z0-9_-]{22}$/);
      // The binding cookie is cleared on the way out.
      assert.ok(
        done.headers
          .getSetCookie()
          .some((c) => /^lv_flow=; Path=\/v1\/oauth\/callback\/acme; Max-Age=0;/.test(c)),
      );
      assert.equal((h.oidc.tokenRequests().authorization_code ?? 0) - before, 1);

      const read = await h.request(`/v1/links/${linkId}`, {
        headers: { authorization: h.services.bearer('crm-hs') },
      });
      assert.equal(read.status, 200);
      const body = read.json!;
      assert.match(String(body.created_at), RFC3339);
      assert.equal(body.updated_at, body.created_at);
      const granted = body.granted_scopes as string[];
      assert.ok(
        granted.includes('api:read') && granted.includes('api:write'),
        `granted scopes ${granted.join(' ')}`,
      );
      assert.deepEqual(body, {
        id: linkId,
        tenant_id: 'tenant-a',
        user_id: 'user-1',
        provider_id: 'acme',
        status: 'active',
        granted_scopes: granted,
        metadata: {},
        created_at: body.created_at,
        updated_at: body.updated_at,
        last_refreshed_at: null,
        last_used_at: null,
      });

      const stored = await h.store.getLink(linkId);
      assert.equal(stored?.providerAccountId, mode === 'oidc' ? `alice-${mode}` : null);
      assert.ok(stored?.tokens, 'the token set is sealed on the link');

      const list = await h.request('/v1/links?tenant_id=tenant-a&provider_id=acme&status=active', {
        headers: { authorization: h.services.bearer('auditor-hs') },
      });
      assert.equal(list.status, 200);
      assert.ok((list.json!.links as { id: string }[]).some((l) => l.id === linkId));

      const mine = await h.request('/v1/me/links', {
        headers: { authorization: `Bearer ${session.session_token}` },
      });
      assert.equal(mine.status, 200);
      assert.ok((mine.json!.links as { id: string }[]).some((l) => l.id === linkId));
    });
  });
}
