import { strict as assert } from 'node:assert';
import { after, before, describe, it } from 'node:test';
import { openTokenSet } from '../../src/links/sealing/token-vault.js';
import { rawRequest, startProxyHarness, type ProxyHarness } from '../links/proxy/proxy-harness.js';

/**
 * The proxy route end to end: node-oidc-provider issued the link's tokens, the stand-in API
 * records what it receives, linkvault listens on loopback. The API sees the link's bearer token;
 * the caller never does, nor does the API see the caller's credentials or linkvault's headers.
 */

const RULES = {
  allow: [
    { method: 'GET', path: '/crm/**' },
    { method: 'POST', path: '/crm/**' },
    { method: 'GET', path: '/redirect' },
    { method: 'GET', path: '/services/data/**' },
  ],
};

describe('proxy route', () => {
  let h: ProxyHarness;
  let n = 0;

  before(async () => {
    h = await startProxyHarness();
  });
  after(() => h.close());

  const proxyGrant = (linkId: string, serviceId = 'worker', tokenRelease = false) =>
    h.stack.addGrant({
      serviceId,
      linkId,
      purpose: 'contact sync',
      tokenRelease,
      proxy: RULES as never,
    });
  const call = (
    linkId: string,
    method: string,
    path: string,
    headers: Record<string, string> = {},
    body?: string,
    kid = 'worker',
  ) =>
    rawRequest(
      h.stack.publicUrl,
      method,
      `/v1/links/${linkId}/proxy${path}`,
      { authorization: h.services.bearer(kid), ...headers },
      body,
    );
  const storedToken = async (linkId: string) => {
    const link = (await h.stack.store.getLink(linkId))!;
    return (await openTokenSet(h.stack.vault, link, link.tokens!)).accessToken.reveal();
  };

  it('when an allowed call is proxied, then the API gets the link token and only the caller’s plain headers, and the caller gets the provider’s answer', async () => {
    const link = await h.connect(`lnk_proxy_route_${++n}`);
    await proxyGrant(link.id);
    const before = h.api.received.length;
    const res = await call(
      link.id,
      'POST',
      '/crm/v3/objects/contacts?archived=false',
      {
        'content-type': 'application/json',
        cookie: 'lv_session=caller',
        connection: 'keep-alive, x-caller-hop',
        'x-caller-hop': 'hop',
        'x-forwarded-for': '10.0.0.1',
        'linkvault-debug': '1',
        'x-request-id': 'caller-request-1',
        'x-caller-plain': 'kept',
      },
      '{"properties":{"email":"a@example.com"}}',
    );
    assert.equal(res.status, 200, res.body);
    const seen = h.api.received.slice(before);
    assert.equal(seen.length, 1);
    const got = seen[0]!;
    assert.equal(got.method, 'POST');
    assert.equal(got.url, '/crm/v3/objects/contacts?archived=false');
    assert.equal(got.body, '{"properties":{"email":"a@example.com"}}');
    const token = await storedToken(link.id);
    assert.equal(got.headers.authorization, `Bearer ${token}`);
    assert.equal(got.headers['x-caller-plain'], 'kept');
    assert.equal(got.headers['content-type'], 'application/json');
    for (const name of [
      'cookie',
      'x-caller-hop',
      'x-forwarded-for',
      'linkvault-debug',
      'x-request-id',
    ])
      assert.equal(got.headers[name], undefined, name);
    assert.equal(got.headers.host, `localhost:${h.api.port}`);

    // The provider's answer as it is, minus what would act on linkvault's origin.
    assert.deepEqual(JSON.parse(res.body), {
      ok: true,
      path: '/crm/v3/objects/contacts?archived=false',
      bytes: 40,
    });
    assert.equal(res.headers['x-ratelimit-remaining'], '42');
    assert.equal(res.headers['ratelimit-limit'], '100');
    assert.equal(res.headers['retry-after'], '0');
    assert.equal(res.headers['x-provider-plain'], 'kept');
    assert.equal(res.headers['set-cookie'], undefined);
    assert.equal(res.headers['x-provider-hop'], undefined);
    assert.equal(res.headers['linkvault-proxy-request-id'], 'caller-request-1');
    assert.equal(res.headers['x-request-id'], 'caller-request-1');
    assert.equal(res.headers['cache-control'], 'no-store');
    assert.ok(!JSON.stringify(res.headers).includes(token));
    assert.ok(!res.body.includes(token));

    // Audited before (fail closed) and after, with the rule that matched; never a token or a body.
    // proxy.completed is written once the answer has gone out, not awaited by the caller.
    const events = (
      await h.stack.auditEventsWhen(
        (all) => all.some((e) => e.type === 'proxy.completed' && e.data.link_id === link.id),
        'proxy.completed',
      )
    ).filter((e) => e.data.link_id === link.id);
    const requested = events.find((e) => e.type === 'proxy.requested')!;
    assert.equal(requested.data.service_id, 'worker');
    assert.equal(requested.data.method, 'POST');
    assert.equal(requested.data.path_template, '/crm/**');
    assert.equal(requested.data.purpose, 'contact sync');
    const completed = events.find((e) => e.type === 'proxy.completed')!;
    assert.ok(completed, 'proxy.completed recorded');
    assert.deepEqual(
      {
        ...completed.data,
        grant_id: typeof completed.data.grant_id,
      },
      {
        service_id: 'worker',
        grant_id: 'string',
        purpose: 'contact sync',
        link_id: link.id,
        tenant_id: 'tenant-a',
        user_id: 'user-1',
        provider_id: 'acme',
        method: 'POST',
        path_template: '/crm/**',
        status: 200,
        outcome: 'relayed',
        retried: false,
        request_bytes: 40,
        response_bytes: Buffer.byteLength(res.body),
      },
    );
    const auditText = JSON.stringify(events);
    assert.ok(!auditText.includes(token), 'no token in the audit log');
    assert.ok(!auditText.includes('a@example.com'), 'no body in the audit log');
    assert.ok(h.stack.metrics.proxyRequests.get({ provider: 'acme', status_class: '2xx' }) >= 1);
    assert.ok(!h.stack.logText().includes(token), 'no token in the log');
  });

  it('when the API answers 401, then linkvault refreshes once at the provider and retries once with the new token', async () => {
    const link = await h.connect(`lnk_proxy_route_${++n}`);
    await proxyGrant(link.id);
    const old = await storedToken(link.id);
    h.api.rejectedTokens.add(old);
    const refreshes = h.oidc.tokenRequests().refresh_token ?? 0;
    const before = h.api.received.length;
    const res = await call(link.id, 'GET', '/crm/v3/objects/contacts/1');
    assert.equal(res.status, 200, res.body);
    assert.equal((h.oidc.tokenRequests().refresh_token ?? 0) - refreshes, 1);
    const fresh = await storedToken(link.id);
    assert.notEqual(fresh, old);
    assert.deepEqual(
      h.api.received.slice(before).map((r) => r.headers.authorization),
      [`Bearer ${old}`, `Bearer ${fresh}`],
    );
    assert.equal((await h.oidc.introspect(fresh)).active, true);

    // The new token is rejected too: it was refreshed moments ago, so the coordinator serves it
    // again instead of refreshing (FORCED_REFRESH_INTERVAL_MS); no pointless retry, the 401 as it is.
    h.api.rejectedTokens.add(fresh);
    const second = h.api.received.length;
    const again = await call(link.id, 'GET', '/crm/v3/objects/contacts/1');
    assert.equal(again.status, 401);
    assert.deepEqual(JSON.parse(again.body), { error: 'expired' });
    assert.ok(again.headers['linkvault-proxy-request-id']);
    assert.equal((h.oidc.tokenRequests().refresh_token ?? 0) - refreshes, 1);
    assert.deepEqual(
      h.api.received.slice(second).map((r) => r.headers.authorization),
      [`Bearer ${fresh}`],
    );
    const isCompleted = (e: { type: string; data: Record<string, unknown> }): boolean =>
      e.type === 'proxy.completed' && e.data.link_id === link.id;
    const completed = (
      await h.stack.auditEventsWhen(
        (all) => all.filter(isCompleted).length >= 2,
        'proxy.completed for both calls',
      )
    ).filter(isCompleted);
    assert.deepEqual(
      completed.map((e) => [e.data.status, e.data.retried]),
      [
        [200, true],
        [401, false],
      ],
    );
  });

  it('when a call with a small body gets a 401, then the retry carries the same body', async () => {
    const link = await h.connect(`lnk_proxy_route_${++n}`);
    await proxyGrant(link.id);
    const old = await storedToken(link.id);
    h.api.rejectedTokens.add(old);
    const before = h.api.received.length;
    const body = JSON.stringify({ note: 'x'.repeat(10_000) });
    const res = await call(
      link.id,
      'POST',
      '/crm/v3/objects/notes',
      { 'content-type': 'application/json' },
      body,
    );
    assert.equal(res.status, 200, res.body);
    const seen = h.api.received.slice(before);
    assert.deepEqual(
      seen.map((r) => [r.method, r.url, r.body === body, r.headers['content-length']]),
      [
        ['POST', '/crm/v3/objects/notes', true, String(body.length)],
        ['POST', '/crm/v3/objects/notes', true, String(body.length)],
      ],
    );
    assert.notEqual(seen[1]!.headers.authorization, `Bearer ${old}`);
  });

  it('when the API redirects, then the redirect comes back unfollowed', async () => {
    const link = await h.connect(`lnk_proxy_route_${++n}`);
    await proxyGrant(link.id);
    const before = h.api.received.length;
    const res = await call(link.id, 'GET', '/redirect');
    assert.equal(res.status, 302);
    assert.equal(res.headers.location, `http://localhost:${h.api.port}/crm/elsewhere`);
    assert.deepEqual(
      h.api.received.slice(before).map((r) => r.url),
      ['/redirect'],
    );
  });

  it('when the link’s captured host is outside api_hosts, an IP literal or not https, then 502 proxy_target_refused and nothing is sent', async () => {
    const targets = [
      'https://evil.example.com',
      `http://127.0.0.1:${h.api.port}`,
      `http://[::1]:${h.api.port}`,
      `http://localhost.evil.example:${h.api.port}`,
      `http://user:pw@localhost:${h.api.port}`,
      `ftp://localhost:${h.api.port}`,
      'not a url',
    ];
    for (const instanceUrl of targets) {
      const link = await h.stack.seedLink({
        providerId: 'acme-sf',
        metadata: { instance_url: instanceUrl },
      });
      await proxyGrant(link.id);
      const before = h.api.received.length;
      const res = await call(link.id, 'GET', '/services/data/v60.0/sobjects');
      const body = JSON.parse(res.body) as Record<string, unknown>;
      assert.deepEqual([res.status, body.code], [502, 'proxy_target_refused'], instanceUrl);
      assert.equal(h.api.received.length, before, instanceUrl);
      assert.equal(
        (await h.stack.auditEvents()).some(
          (e) => e.type === 'proxy.requested' && e.data.link_id === link.id,
        ),
        false,
        'refused before the token is used',
      );
    }
    // The captured host inside api_hosts is used, with its path as the base.
    const ok = await h.stack.seedLink({
      providerId: 'acme-sf',
      metadata: { instance_url: `http://localhost:${h.api.port}` },
      accessToken: 'at-acme-sf-instance',
    });
    await proxyGrant(ok.id);
    const before = h.api.received.length;
    const res = await call(ok.id, 'GET', '/services/data/v60.0/sobjects');
    assert.equal(res.status, 200, res.body);
    const seen = h.api.received.slice(before);
    assert.deepEqual(
      seen.map((r) => [r.url, r.headers.authorization]),
      [['/services/data/v60.0/sobjects', 'Bearer at-acme-sf-instance']],
    );
  });

  it('when a service holds only a proxy-only grant, then the token route answers 403 no_grant and the proxy works', async () => {
    const link = await h.connect(`lnk_proxy_route_${++n}`);
    await proxyGrant(link.id, 'both', false);
    const token = await rawRequest(
      h.stack.publicUrl,
      'POST',
      `/v1/links/${link.id}/token`,
      { authorization: h.services.bearer('both'), 'content-type': 'application/json' },
      '{}',
    );
    assert.equal(token.status, 403);
    assert.equal((JSON.parse(token.body) as { code: string }).code, 'no_grant');
    assert.ok(!token.body.includes(await storedToken(link.id)));
    const proxied = await call(link.id, 'GET', '/crm/x', {}, undefined, 'both');
    assert.equal(proxied.status, 200);

    // A grant that also releases tokens: the token route answers.
    await proxyGrant(link.id, 'both', true);
    const released = await rawRequest(
      h.stack.publicUrl,
      'POST',
      `/v1/links/${link.id}/token`,
      { authorization: h.services.bearer('both'), 'content-type': 'application/json' },
      '{}',
    );
    assert.equal(released.status, 200);
  });

  it('when the caller lacks the proxy role, a grant or a rule, then 401/403 and nothing is sent', async () => {
    const link = await h.connect(`lnk_proxy_route_${++n}`);
    await proxyGrant(link.id);
    const before = h.api.received.length;
    const cases: [Record<string, string>, string, number, string][] = [
      [{ authorization: 'Bearer nope' }, 'worker', 401, 'unauthorized'],
      [{}, 'tokens-svc', 403, 'forbidden'],
      [{}, 'both', 403, 'proxy_not_allowed'],
    ];
    for (const [headers, kid, status, code] of cases) {
      const res = await rawRequest(h.stack.publicUrl, 'GET', `/v1/links/${link.id}/proxy/crm/x`, {
        authorization: h.services.bearer(kid),
        ...headers,
      });
      assert.deepEqual(
        [res.status, (JSON.parse(res.body) as { code: string }).code],
        [status, code],
      );
      assert.equal(res.headers['linkvault-proxy-request-id'], undefined);
    }
    const unknownLink = await call('lnk_nope', 'GET', '/crm/x');
    assert.deepEqual(
      [unknownLink.status, (JSON.parse(unknownLink.body) as { code: string }).code],
      [404, 'link_not_found'],
    );
    assert.equal(h.api.received.length, before);
  });

  it('when a tenant-scoped service calls for a link outside its tenants, then 404 link_not_found, even with a grant', async () => {
    const link = await h.connect(`lnk_proxy_route_${++n}`);
    await proxyGrant(link.id, 'scoped-worker');
    const before = h.api.received.length;
    const res = await call(link.id, 'GET', '/crm/x', {}, undefined, 'scoped-worker');
    assert.deepEqual(
      [res.status, (JSON.parse(res.body) as { code: string }).code],
      [404, 'link_not_found'],
    );
    assert.equal(h.api.received.length, before);
  });

  it('when the link is revoked, then the proxy refuses and nothing is sent', async () => {
    const link = await h.connect(`lnk_proxy_route_${++n}`);
    await proxyGrant(link.id);
    await h.stack.revocation.revokeLink(link.id, {
      revokedBy: 'service',
      serviceId: 'admin-svc',
      reason: 'test',
      requestId: 'test',
    });
    const before = h.api.received.length;
    const res = await call(link.id, 'GET', '/crm/x');
    assert.equal(res.status, 410);
    assert.equal((JSON.parse(res.body) as { code: string }).code, 'link_revoked');
    assert.equal(h.api.received.length, before);
  });
});

describe('proxy route, audit down', () => {
  it('when the audit record cannot be stored, then 503 audit_unavailable and no call is made', async () => {
    let failAudit = false;
    const h = await startProxyHarness({
      wrapStore: (store) => ({
        ...store,
        appendAudit: (event) =>
          failAudit && event.type === 'proxy.requested'
            ? Promise.reject(new Error('disk full'))
            : store.appendAudit(event),

        commitRelease: (linkId, grantId, event) =>
          failAudit && event.type === 'proxy.requested'
            ? Promise.reject(new Error('disk full'))
            : store.commitRelease(linkId, grantId, event),
      }),
    });
    try {
      const link = await h.connect('lnk_proxy_audit_down');
      await h.stack.addGrant({
        serviceId: 'worker',
        linkId: link.id,
        tokenRelease: false,
        proxy: { allow: [{ method: 'GET', path: '/crm/**' }] },
      });
      failAudit = true;
      const res = await rawRequest(h.stack.publicUrl, 'GET', `/v1/links/${link.id}/proxy/crm/x`, {
        authorization: h.services.bearer('worker'),
      });
      assert.equal(res.status, 503);
      assert.equal((JSON.parse(res.body) as { code: string }).code, 'audit_unavailable');
      assert.equal(h.api.received.length, 0);
    } finally {
      await h.close();
    }
  });
});
