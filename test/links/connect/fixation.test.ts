import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { openTokenSet } from '../../../src/links/sealing/token-vault.js';
import {
  APP_ORIGIN,
  startConnectHarnessWithOidc,
  type HttpAnswer,
  type OidcConnectHarness,
} from '../../support/connect-harness.js';

/**
 * Issue 11 item 1, connect-session fixation, run as Mallory would run it: he mints a session for
 * himself and sends a victim (signed in at the provider, consented before, so the provider answers
 * without a click) every URL he can build from it. The victim's browser is a real cookie jar (paths
 * honoured) against linkvault and node-oidc-provider. Any answer that sends the browser on to the
 * provider is followed to the end, exactly as a browser would, so on the old code (GET
 * /v1/connect?session=) the victim's account ends up linked to Mallory's user and these tests fail.
 */

const TENANT = 'acme-corp';
const MALLORY = 'mallory';
const VICTIM = 'victim';
const VICTIM_ACCOUNT = 'victim-crm-account';
const EVIL_ORIGIN = 'https://evil.example';

/** A browser's cookie jar for linkvault's origin: Path-scoped, Max-Age=0 deletes. */
class VictimBrowser {
  readonly #cookies = new Map<string, { value: string; path: string }>();
  constructor(private readonly h: OidcConnectHarness) {}

  /** Set-Cookie lines seen so far whose name is the flow-binding cookie. */
  flowCookiesSet = 0;

  async go(path: string, init: RequestInit = {}): Promise<HttpAnswer> {
    const url = new URL(path, this.h.publicUrl);
    const headers = new Headers(init.headers);
    const sent = [...this.#cookies]
      .filter(([, c]) => url.pathname === c.path || url.pathname.startsWith(`${c.path}/`))
      .map(([name, c]) => `${name}=${c.value}`);
    if (sent.length > 0) headers.set('cookie', sent.join('; '));
    // fetch, like a browser, never sends the fragment.
    const answer = await this.h.request(url.pathname + url.search, { ...init, headers });
    for (const line of answer.headers.getSetCookie()) {
      const [pair, ...attributes] = line.split(';').map((p) => p.trim());
      const eq = pair!.indexOf('=');
      const name = pair!.slice(0, eq);
      const path = attributes.find((a) => /^path=/i.test(a))?.slice(5) ?? '/';
      if (name === 'lv_flow' && pair!.slice(eq + 1) !== '') this.flowCookiesSet += 1;
      if (attributes.some((a) => /^max-age=0$/i.test(a))) this.#cookies.delete(name);
      else this.#cookies.set(name, { value: pair!.slice(eq + 1), path });
    }
    return answer;
  }

  /**
   * Whatever sends this browser to the provider (a redirect, or a connect start's
   * authorization_url) is followed: the victim is signed in there and consented before, so the
   * provider answers at once; its answer is delivered to linkvault's callback in this jar.
   */
  async finish(answer: HttpAnswer): Promise<HttpAnswer | null> {
    const oidcOrigin = new URL(this.h.oidc.issuer).origin;
    let target: URL | null = null;
    if (answer.status >= 300 && answer.status < 400 && answer.location?.origin === oidcOrigin)
      target = answer.location;
    const started = answer.json?.authorization_url;
    if (answer.status === 200 && typeof started === 'string') target = new URL(started);
    if (target === null) return null;
    const back = await this.h.oidc.completeLogin(target, { accountId: VICTIM_ACCOUNT });
    return this.go(back.pathname + back.search, { headers: { accept: 'text/html' } });
  }
}

interface Vector {
  readonly name: string;
  run(browser: VictimBrowser): Promise<HttpAnswer>;
  /** What linkvault must answer: status, and the problem code when it is an error. */
  readonly expect: { readonly status: number; readonly code?: string };
}

/** Every URL and request Mallory can get a victim's browser to make with his session. */
function attackVectors(session: {
  session_token: string;
  connect_url: string;
  manage_url: string;
}): Vector[] {
  const token = session.session_token;
  const crossSitePost =
    (headers: Record<string, string>, body = '{}') =>
    (b: VictimBrowser) =>
      b.go('/v1/connect/acme', {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json', ...headers },
        body,
      });
  const html = { headers: { accept: 'text/html' } };
  return [
    {
      name: 'GET /v1/connect?session= (a link, an <img>, a redirect)',
      run: (b) => b.go(`/v1/connect/acme?session=${token}`, html),
      expect: { status: 405 },
    },
    {
      name: 'GET /v1/connect?session=&display=popup',
      run: (b) => b.go(`/v1/connect/acme?session=${token}&display=popup`, html),
      expect: { status: 405 },
    },
    {
      name: 'cross-site fetch POST with the Bearer',
      run: crossSitePost({
        authorization: `Bearer ${token}`,
        origin: EVIL_ORIGIN,
        'sec-fetch-site': 'cross-site',
      }),
      expect: { status: 403, code: 'cross_site_request' },
    },
    {
      name: 'same-site (sibling subdomain) POST',
      run: crossSitePost({ authorization: `Bearer ${token}`, 'sec-fetch-site': 'same-site' }),
      expect: { status: 403, code: 'cross_site_request' },
    },
    {
      name: 'POST from another origin without Fetch Metadata',
      run: crossSitePost({ authorization: `Bearer ${token}`, origin: EVIL_ORIGIN }),
      expect: { status: 403, code: 'cross_site_request' },
    },
    {
      name: 'POST from an opaque origin (sandboxed iframe, data: URL)',
      run: crossSitePost({ authorization: `Bearer ${token}`, origin: 'null' }),
      expect: { status: 403, code: 'cross_site_request' },
    },
    {
      name: 'cross-site HTML form post with the session in the body',
      run: (b) =>
        b.go('/v1/connect/acme', {
          method: 'POST',
          headers: {
            'content-type': 'application/x-www-form-urlencoded',
            origin: EVIL_ORIGIN,
            'sec-fetch-site': 'cross-site',
          },
          body: `session=${token}`,
        }),
      expect: { status: 415, code: 'unsupported_media_type' },
    },
    {
      name: 'same-origin JSON POST without the Bearer, session in the body',
      run: crossSitePost({ 'sec-fetch-site': 'same-origin' }, JSON.stringify({ session: token })),
      expect: { status: 401, code: 'session_expired' },
    },
    {
      name: 'connect_url as sent (the fragment never reaches the server)',
      run: (b) => b.go(session.connect_url, html),
      expect: { status: 200 },
    },
    {
      name: 'connect_url with the session moved into the query',
      run: (b) => b.go(session.connect_url.replace('#', '?'), html),
      expect: { status: 200 },
    },
    {
      name: 'manage_url as sent',
      run: (b) => b.go(session.manage_url, html),
      expect: { status: 200 },
    },
    {
      name: 'manage_url with the session moved into the query',
      run: (b) => b.go(session.manage_url.replace('#', '?'), html),
      expect: { status: 200 },
    },
  ];
}

for (const confirmation of [false, true]) {
  describe(`when Mallory sends a victim every URL of his own session (confirmation ${confirmation ? 'on' : 'off'})`, () => {
    let h: OidcConnectHarness;
    before(async () => {
      h = await startConnectHarnessWithOidc(
        { mode: 'oidc' },
        { env: { LINKVAULT_REQUIRE_CONNECT_CONFIRMATION: String(confirmation) } },
      );
    });
    after(async () => {
      await h?.close();
    });

    const malloryLinks = () => h.store.listLinks({ tenantId: TENANT, userId: MALLORY });

    test('then none of them starts a flow, and no link of his holds the victim account', async () => {
      const mallory = await h.createSession({
        tenant_id: TENANT,
        user_id: MALLORY,
        user_display: 'mallory@acme.example',
        return_to: `${APP_ORIGIN}/settings/integrations`,
      });
      const victim = new VictimBrowser(h);
      for (const vector of attackVectors(mallory)) {
        const answer = await vector.run(victim);
        const finished = await victim.finish(answer);
        assert.equal(finished, null, `${vector.name}: the browser was sent to the provider`);
        assert.equal(answer.status, vector.expect.status, `${vector.name}: ${answer.text}`);
        if (vector.expect.code) assert.equal(answer.json?.code, vector.expect.code, vector.name);
        assert.equal(
          answer.location === null || !answer.location.href.includes(mallory.session_token),
          true,
          `${vector.name}: no URL we build carries the session`,
        );
      }
      assert.equal(victim.flowCookiesSet, 0, 'no flow was bound to the victim browser');
      assert.deepEqual(await malloryLinks(), []);
      assert.deepEqual(h.oidc.tokenRequests(), {}, 'no code was exchanged');
    });

    test('then the hosted page names whom the connection is for (the victim sees it is not theirs)', async () => {
      const mallory = await h.createSession({
        tenant_id: TENANT,
        user_id: MALLORY,
        user_display: 'mallory@acme.example',
      });
      const providers = await h.request('/v1/me/providers', {
        headers: { authorization: `Bearer ${mallory.session_token}` },
      });
      assert.equal(providers.status, 200);
      assert.equal(providers.json?.user_display, 'mallory@acme.example');
    });
  });
}

describe('when the victim is talked into pressing Connect on the page of Mallory\u2019s session, with confirmation on', () => {
  let h: OidcConnectHarness;
  before(async () => {
    h = await startConnectHarnessWithOidc(
      { mode: 'oidc' },
      { env: { LINKVAULT_REQUIRE_CONNECT_CONFIRMATION: 'true' } },
    );
  });
  after(async () => {
    await h?.close();
  });

  test('then the link is held, never released nor listed as active, and the victim app’s confirmation discards it and revokes its tokens at the provider', async () => {
    const mallory = await h.createSession({
      tenant_id: TENANT,
      user_id: MALLORY,
      user_display: 'mallory@acme.example',
      return_to: `${APP_ORIGIN}/settings/integrations`,
    });
    const victim = new VictimBrowser(h);
    // What linkvault's own page sends when the button is pressed: same-origin, the Bearer.
    const start = await victim.go('/v1/connect/acme', {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json',
        origin: new URL(h.publicUrl).origin,
        'sec-fetch-site': 'same-origin',
        authorization: `Bearer ${mallory.session_token}`,
      },
      body: '{}',
    });
    assert.equal(start.status, 200, start.text);
    const back = await victim.finish(start);
    assert.ok(back);
    // Back at the app, where the VICTIM is signed in, with a confirmation to make.
    assert.equal(back.status, 303);
    const landing = back.location!;
    assert.equal(landing.origin + landing.pathname, `${APP_ORIGIN}/settings/integrations`);
    assert.equal(landing.searchParams.get('status'), 'confirm');
    assert.equal(landing.searchParams.get('provider'), 'acme');
    assert.equal(landing.searchParams.get('link_id'), null);
    const confirmationId = landing.searchParams.get('confirmation_id')!;
    assert.match(confirmationId, /^lnk_[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}$/);

    // Held: Mallory's user has a pending link holding the victim account.
    const [pending, ...others] = await h.store.listLinks({ tenantId: TENANT, userId: MALLORY });
    assert.deepEqual(others, []);
    assert.equal(pending!.status, 'pending_confirmation');
    assert.equal(pending!.providerAccountId, VICTIM_ACCOUNT);
    const refreshToken = (await openTokenSet(h.vault, pending!, pending!.tokens!)).refreshToken!;
    assert.equal((await h.oidc.introspect(refreshToken.reveal())).active, true);

    // Never released: even a service with a grant for every link of the tenant gets nothing.
    await h.addGrant({ serviceId: 'crm-sync', tenantId: TENANT, purpose: 'crm sync' });
    const release = await h.request(`/v1/links/${pending!.id}/token`, {
      method: 'POST',
      headers: { authorization: h.services.bearer('crm-hs'), 'content-type': 'application/json' },
      body: '{}',
    });
    assert.equal(release.status, 404, release.text);
    assert.equal(release.json?.code, 'link_not_found');
    assert.ok(!release.text.includes(refreshToken.reveal()));
    // Never listed as active; listed with its own status.
    const auditor = { authorization: h.services.bearer('auditor-hs') };
    const active = await h.request(`/v1/links?tenant_id=${TENANT}&status=active`, {
      headers: auditor,
    });
    assert.deepEqual(active.json, { links: [] });
    const all = await h.request(`/v1/links?tenant_id=${TENANT}`, { headers: auditor });
    assert.deepEqual(
      (all.json!.links as { id: string; status: string }[]).map((l) => [l.id, l.status]),
      [[pending!.id, 'pending_confirmation']],
    );
    const held = await h.request(`/v1/links?tenant_id=${TENANT}&status=pending_confirmation`, {
      headers: auditor,
    });
    assert.equal((held.json!.links as unknown[]).length, 1);
    assert.ok(!all.text.includes('linkvault.'), 'the confirmation bookkeeping is not shown');

    // The app's backend confirms for whoever is signed in in that browser: the victim.
    const confirm = (body: unknown) =>
      h.request(`/v1/confirmations/${confirmationId}`, {
        method: 'POST',
        headers: { authorization: h.services.bearer('crm-hs'), 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    const mismatch = await confirm({ tenant_id: TENANT, user_id: VICTIM });
    assert.equal(mismatch.status, 409, mismatch.text);
    assert.equal(mismatch.json?.code, 'confirmation_mismatch');
    assert.equal((await h.store.getLink(pending!.id))!.status, 'revoked');
    assert.equal((await h.store.getLink(pending!.id))!.tokens, null);

    // The provider step of the revocation runs on the worker: the victim's grant ends at the provider.
    await h.worker.runOnce();
    assert.equal((await h.oidc.introspect(refreshToken.reveal())).active, false);
    const record = await h.request(`/v1/links/${pending!.id}/revocation`, { headers: auditor });
    assert.equal(record.json?.reason, 'confirmation_mismatch');
    assert.equal(
      (record.json?.provider_revocation as { status: string } | undefined)?.status,
      'confirmed',
    );

    // Used up: Mallory confirming for himself afterwards finds nothing.
    const late = await confirm({ tenant_id: TENANT, user_id: MALLORY });
    assert.equal(late.status, 404, late.text);
    assert.equal(late.json?.code, 'confirmation_not_found');
    const left = await h.store.listLinks({ tenantId: TENANT, userId: MALLORY });
    assert.deepEqual(
      left.filter((l) => l.status !== 'revoked' || l.tokens !== null),
      [],
      'no link of Mallory holds the victim account',
    );
  });
});
