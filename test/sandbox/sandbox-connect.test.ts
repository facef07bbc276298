import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  APP_ORIGIN,
  startConnectHarness,
  type ConnectHarness,
  type HttpAnswer,
} from '../support/connect-harness.js';

/**
 * The built-in Sandbox CRM, driven the way a person drives it: follow the redirects, read the
 * login form, type a username, press Allow. Then the link works end to end: a grant, a token
 * release, and a forced refresh that the sandbox answers with a rotated refresh token.
 */

/** A cookie jar for one origin, enough for the sandbox's and linkvault's cookies. */
class Browser {
  readonly cookies = new Map<string, string>();
  constructor(private readonly h: ConnectHarness) {}

  async go(path: string | URL, init: RequestInit = {}): Promise<HttpAnswer> {
    const headers = new Headers(init.headers);
    if (this.cookies.size > 0)
      headers.set('cookie', [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; '));
    const answer = await this.h.request(String(path), { ...init, headers });
    for (const line of answer.headers.getSetCookie()) {
      const [pair, ...attributes] = line.split(';');
      const eq = pair!.indexOf('=');
      const name = pair!.slice(0, eq).trim();
      if (
        attributes.some((a) => /^\s*max-age=0$/i.test(a)) ||
        /expires=Thu, 01 Jan 1970/i.test(line)
      )
        this.cookies.delete(name);
      else this.cookies.set(name, pair!.slice(eq + 1).trim());
    }
    return answer;
  }

  /** Follows redirects while they stay on the service; returns the first answer that is not one (or leaves). */
  async follow(start: HttpAnswer): Promise<HttpAnswer> {
    let answer = start;
    for (
      let hop = 0;
      hop < 10 &&
      answer.status >= 300 &&
      answer.status < 400 &&
      answer.location?.origin === this.h.publicUrl;
      hop++
    ) {
      answer = await this.go(answer.location.pathname + answer.location.search);
    }
    return answer;
  }

  /** Submits the page's form whose action ends with `suffix`, with `fields`. */
  async submit(
    page: HttpAnswer,
    suffix: string,
    fields: Record<string, string> = {},
  ): Promise<HttpAnswer> {
    const actions = [...page.text.matchAll(/<form method="post" action="([^"]+)">/g)].map((m) =>
      m[1]!.replaceAll('&#47;', '/'),
    );
    const action = actions.find((a) => a.endsWith(suffix));
    assert.ok(action, `no form ending in ${suffix} among ${actions.join(', ')}`);
    return this.follow(
      await this.go(action, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams(fields).toString(),
      }),
    );
  }
}

/** POST /v1/connect as linkvault's connect page sends it: the session as a Bearer header. */
function startConnect(sessionToken: string): RequestInit {
  return {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json',
      authorization: `Bearer ${sessionToken}`,
    },
    body: '{}',
  };
}

describe('when a developer connects the built-in Sandbox CRM', () => {
  let h: ConnectHarness;
  before(async () => {
    h = await startConnectHarness({ sandbox: true });
  });
  after(() => h.close());

  test('then the sandbox is an enabled OIDC provider with discovery at the public URL', async () => {
    assert.ok(h.catalogue.isEnabled('sandbox'));
    const discovery = await h.request('/sandbox/.well-known/openid-configuration');
    assert.equal(discovery.status, 200);
    const doc = discovery.json!;
    assert.equal(doc.issuer, `${h.publicUrl}/sandbox`);
    assert.equal(doc.authorization_endpoint, `${h.publicUrl}/sandbox/auth`);
    assert.equal(doc.revocation_endpoint, `${h.publicUrl}/sandbox/token/revocation`);
    assert.equal(doc.authorization_response_iss_parameter_supported, true);
    assert.deepEqual(doc.code_challenge_methods_supported, ['S256']);
    const providers = await h.request('/v1/providers');
    if (providers.status === 200)
      assert.ok((providers.json!.providers as { id: string }[]).some((p) => p.id === 'sandbox'));
  });

  test('then logging in and allowing access stores a working link whose refresh token rotates', async () => {
    const session = await h.createSession({
      tenant_id: 'tenant-dev',
      user_id: 'dev-user',
      return_to: `${APP_ORIGIN}/done`,
    });
    const browser = new Browser(h);
    const start = await browser.go('/v1/connect/sandbox', startConnect(session.session_token));
    assert.equal(start.status, 200, start.text);
    const authorizationUrl = new URL(String(start.json!.authorization_url));
    assert.equal(authorizationUrl.origin, h.publicUrl);
    assert.equal(authorizationUrl.pathname, '/sandbox/auth');

    const login = await browser.follow(
      await browser.go(authorizationUrl.pathname + authorizationUrl.search),
    );
    assert.equal(login.status, 200, login.text);
    assert.match(login.text, /<h2>Sign in<\/h2>/);
    // As production wires it: the allowlisted return origins may be form-action targets.
    assert.equal(
      login.headers.get('content-security-policy'),
      `default-src 'none'; form-action 'self' ${APP_ORIGIN}; base-uri 'none'; frame-ancestors 'none'`,
    );
    assert.ok(!/<script|style=/i.test(login.text));

    const refused = await browser.submit(login, '/login', { username: '<b>x</b>' });
    assert.equal(refused.status, 400);
    assert.ok(!refused.text.includes('<b>x</b>'));

    const consent = await browser.submit(refused, '/login', { username: 'ada' });
    assert.equal(consent.status, 200, consent.text);
    assert.match(consent.text, /<h2>Allow access\?<\/h2>/);
    assert.match(consent.text, /<code>contacts.read<\/code>/);

    const back = await browser.submit(consent, '/confirm');
    assert.equal(back.status, 303, back.text);
    assert.equal(`${back.location!.origin}${back.location!.pathname}`, `${APP_ORIGIN}/done`);
    assert.equal(back.location!.searchParams.get('status'), 'connected');
    const linkId = back.location!.searchParams.get('link_id')!;

    const link = await h.request(`/v1/links/${linkId}`, {
      headers: { authorization: h.services.bearer('crm-hs') },
    });
    assert.equal(link.status, 200);
    assert.equal(link.json!.provider_id, 'sandbox');
    assert.deepEqual([...(link.json!.granted_scopes as string[])].sort(), ['contacts.read']);
    assert.equal((await h.store.getLink(linkId))?.providerAccountId, 'ada');

    const admin = {
      authorization: h.services.bearer('crm-hs'),
      'content-type': 'application/json',
    };
    const grant = await h.request('/v1/grants', {
      method: 'POST',
      headers: admin,
      body: JSON.stringify({
        service_id: 'billing',
        link_id: linkId,
        purpose: 'sandbox walkthrough',
      }),
    });
    assert.equal(grant.status, 201, grant.text);
    const release = (body: Record<string, unknown>) =>
      h.request(`/v1/links/${linkId}/token`, {
        method: 'POST',
        headers: {
          authorization: h.services.bearer('billing-hs'),
          'content-type': 'application/json',
        },
        body: JSON.stringify(body),
      });
    const first = await release({});
    assert.equal(first.status, 200, first.text);
    const refreshed = await release({ force_refresh: true });
    assert.equal(refreshed.status, 200, refreshed.text);
    assert.notEqual(refreshed.json!.access_token, first.json!.access_token);

    // The walkthrough's last step: the released access token calls Sandbox CRM's API.
    const contacts = (authorization?: string) =>
      h.request('/sandbox/api/contacts', authorization ? { headers: { authorization } } : {});
    const api = await contacts(`Bearer ${String(refreshed.json!.access_token)}`);
    assert.equal(api.status, 200, api.text);
    assert.equal(api.json!.account_id, 'ada');
    assert.ok((api.json!.contacts as unknown[]).length > 0);
    const none = await contacts();
    assert.equal(none.status, 401);
    assert.match(none.headers.get('www-authenticate') ?? '', /^Bearer realm="Sandbox CRM"/);
    const forged = await contacts('Bearer not-a-sandbox-token');
    assert.equal(forged.status, 401);
    assert.match(forged.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
    // A token in the query is not a credential (RFC 6750 §2.3 is not offered).
    const inQuery = await h.request(
      `/sandbox/api/contacts?access_token=${String(refreshed.json!.access_token)}`,
    );
    assert.equal(inQuery.status, 401);

    // Revoking the link tells the sandbox, which ends the grant: the token stops working.
    const revoked = await h.request(`/v1/links/${linkId}`, {
      method: 'DELETE',
      headers: { authorization: h.services.bearer('crm-hs'), 'content-type': 'application/json' },
      body: JSON.stringify({ reason: 'walkthrough done' }),
    });
    assert.ok([200, 202].includes(revoked.status), revoked.text);
    // The harness runs no worker loop: one round sends the queued revocation to the sandbox.
    while ((await h.worker.runOnce()) > 0);
    const record = await h.request(`/v1/links/${linkId}/revocation`, {
      headers: { authorization: h.services.bearer('crm-hs') },
    });
    assert.equal(
      (record.json?.provider_revocation as { status?: string } | undefined)?.status,
      'confirmed',
      record.text,
    );
    const afterRevoke = await contacts(`Bearer ${String(refreshed.json!.access_token)}`);
    assert.equal(afterRevoke.status, 401, afterRevoke.text);
  });

  test('then pressing Deny ends the flow with provider_denied and no link', async () => {
    const session = await h.createSession({
      tenant_id: 'tenant-deny',
      user_id: 'u',
      return_to: `${APP_ORIGIN}/done`,
    });
    const browser = new Browser(h);
    const start = await browser.go('/v1/connect/sandbox', startConnect(session.session_token));
    const authorizationUrl = new URL(String(start.json!.authorization_url));
    const login = await browser.follow(
      await browser.go(authorizationUrl.pathname + authorizationUrl.search),
    );
    const consent = await browser.submit(login, '/login', { username: 'bob' });
    const back = await browser.submit(consent, '/abort');
    assert.equal(
      back.location?.href,
      `${APP_ORIGIN}/done?status=error&error=provider_denied&provider=sandbox&provider_error=access_denied`,
    );
    assert.equal((await h.store.listLinks({ tenantId: 'tenant-deny' })).length, 0);
  });
});
