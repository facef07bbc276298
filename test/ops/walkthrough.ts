import assert from 'node:assert/strict';

/**
 * The README's sandbox walkthrough, over real HTTP against a running service (no browser): what a
 * newcomer does, in order. A tiny cookie jar stands in for the browser on the sandbox's pages.
 */

export interface WalkthroughResult {
  readonly sessionToken: string;
  readonly linkId: string;
  readonly accessToken: string;
  /** The answer of GET /sandbox/api/contacts with the released access token. */
  readonly contacts: { status: number; body: Record<string, unknown> };
}

class Jar {
  readonly #cookies = new Map<string, string>();
  constructor(private readonly base: string) {}

  async go(path: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    headers.set('user-agent', 'walkthrough/1');
    if (this.#cookies.size > 0)
      headers.set('cookie', [...this.#cookies].map(([k, v]) => `${k}=${v}`).join('; '));
    const res = await fetch(new URL(path, this.base), { ...init, headers, redirect: 'manual' });
    for (const line of res.headers.getSetCookie()) {
      const pair = line.split(';')[0]!;
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      if (/max-age=0|expires=Thu, 01 Jan 1970/i.test(line)) this.#cookies.delete(name);
      else this.#cookies.set(name, pair.slice(eq + 1).trim());
    }
    return res;
  }

  /** Follows redirects on the service's origin; returns the first other answer and its URL. */
  async follow(first: Response, firstUrl: string): Promise<{ res: Response; url: string }> {
    let res = first;
    let url = firstUrl;
    for (let hop = 0; hop < 10 && res.status >= 300 && res.status < 400; hop++) {
      const location = new URL(res.headers.get('location')!, new URL(url, this.base));
      if (location.origin !== new URL(this.base).origin) break;
      await res.arrayBuffer();
      url = location.pathname + location.search;
      res = await this.go(url);
    }
    return { res, url };
  }

  async submit(
    page: string,
    suffix: string,
    fields: Record<string, string> = {},
  ): Promise<{ res: Response; url: string }> {
    const actions = [...page.matchAll(/<form method="post" action="([^"]+)">/g)].map((m) =>
      m[1]!.replaceAll('&#47;', '/'),
    );
    const action = actions.find((a) => a.endsWith(suffix));
    assert.ok(action, `no form ending in ${suffix}`);
    const res = await this.go(action, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(fields).toString(),
    });
    return this.follow(res, action);
  }
}

async function json(res: Response): Promise<Record<string, unknown>> {
  return (await res.json()) as Record<string, unknown>;
}

/**
 * Opens the landing page and the probes, creates a session, loads the connect page and its assets,
 * connects the Sandbox CRM (sign in, Allow), grants the dev service, releases a token and calls
 * the sandbox's API with it: the README's steps.
 */
export async function runWalkthrough(base: string, devToken: string): Promise<WalkthroughResult> {
  const jar = new Jar(base);
  const bearer = { authorization: `Bearer ${devToken}` };
  const api = { ...bearer, 'content-type': 'application/json' };

  for (const path of ['/', '/favicon.ico', '/healthz', '/readyz', '/metrics']) {
    const res = await jar.go(path);
    await res.arrayBuffer();
    assert.ok(res.status < 400, `${path}: ${res.status}`);
  }

  const created = await jar.go('/v1/sessions', {
    method: 'POST',
    headers: api,
    body: JSON.stringify({ tenant_id: 'acme', user_id: 'ada' }),
  });
  assert.equal(created.status, 201);
  const session = await json(created);
  const sessionToken = String(session.session_token);
  const connectUrl = new URL(String(session.connect_url));
  // The page and what it loads (the fragment, with the session, never reaches the server).
  for (const path of [
    connectUrl.pathname,
    '/assets/styles.css',
    '/assets/favicon.svg',
    '/sdk/connect.v1.js',
  ]) {
    const res = await jar.go(path);
    await res.arrayBuffer();
    assert.equal(res.status, 200, path);
  }

  // Pick Sandbox CRM: the connect page POSTs the start with the session as a Bearer header (same
  // origin), then navigates to the authorization URL; sign in with any username, press Allow.
  const started = await jar.go('/v1/connect/sandbox', {
    method: 'POST',
    headers: {
      authorization: `Bearer ${sessionToken}`,
      'content-type': 'application/json',
      origin: new URL(base).origin,
      'sec-fetch-site': 'same-origin',
    },
    body: '{}',
  });
  assert.equal(started.status, 200);
  const start = String((await json(started)).authorization_url);
  const login = await jar.follow(await jar.go(start), start);
  assert.equal(login.res.status, 200);
  const consent = await jar.submit(await login.res.text(), '/login', { username: 'ada' });
  assert.equal(consent.res.status, 200);
  const result = await jar.submit(await consent.res.text(), '/confirm');
  assert.equal(result.res.status, 200, result.url);
  await result.res.arrayBuffer();
  assert.equal(new URL(result.url, base).searchParams.get('status'), 'connected');

  const links = await json(await jar.go('/v1/links?tenant_id=acme', { headers: bearer }));
  const link = (links.links as { id: string; provider_id: string }[]).find(
    (l) => l.provider_id === 'sandbox',
  );
  assert.ok(link, 'the sandbox link is listed');

  const grant = await jar.go('/v1/grants', {
    method: 'POST',
    headers: api,
    body: JSON.stringify({ service_id: 'dev', link_id: link.id, purpose: 'trying linkvault' }),
  });
  assert.equal(grant.status, 201, await grant.text());
  const released = await jar.go(`/v1/links/${link.id}/token`, { method: 'POST', headers: bearer });
  assert.equal(released.status, 200);
  const accessToken = String((await json(released)).access_token);
  const contactsRes = await jar.go('/sandbox/api/contacts', {
    headers: { authorization: `Bearer ${accessToken}` },
  });
  return {
    sessionToken,
    linkId: link.id,
    accessToken,
    contacts: { status: contactsRes.status, body: await json(contactsRes) },
  };
}
