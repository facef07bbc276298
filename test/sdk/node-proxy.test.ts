import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import {
  LinkvaultApiError,
  LinkvaultClient,
  type LinkvaultClientOptions,
} from '../../packages/node/src/client.js';
import { LinkvaultError } from '../../src/errors.js';
import { openTokenSet } from '../../src/links/sealing/token-vault.js';
import type { Store } from '../../src/store/store.js';
import { startProxyHarness, type ProxyHarness } from '../links/proxy/proxy-harness.js';

/**
 * `LinkvaultClient.proxy` against a real linkvault (listening on loopback), node-oidc-provider for
 * the link's tokens and a stand-in provider API that records what it receives: the API sees the
 * link's token, the SDK's caller never does; the provider's answers resolve whatever their status,
 * linkvault's own refusals reject by code, and POST/PATCH are never sent twice.
 */

interface Seen {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

/** `/status/<n>`: answers n (503 with Retry-After); `/redirect`: 302; `/hang`: never; else 200 echo. */
async function startApi(): Promise<{ server: Server; baseUrl: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = req.url ?? '';
      const body = Buffer.concat(chunks).toString('utf8');
      seen.push({ method: req.method ?? '', url, headers: req.headers, body });
      const status = /^\/status\/(\d{3})$/.exec(url);
      if (status) {
        res.writeHead(Number(status[1]), {
          'content-type': 'application/json',
          ...(status[1] === '503' ? { 'retry-after': '1' } : {}),
        });
        return void res.end(JSON.stringify({ provider_error: Number(status[1]) }));
      }
      if (url === '/redirect') {
        res.writeHead(302, { location: 'https://elsewhere.example/x' });
        return void res.end();
      }
      if (url === '/hang') return;
      res.writeHead(200, { 'content-type': 'application/json', 'x-ratelimit-remaining': '9' });
      res.end(
        JSON.stringify({
          method: req.method,
          url,
          body,
          content_type: req.headers['content-type'] ?? null,
          plain: req.headers['x-plain'] ?? null,
        }),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, 'localhost', () => resolve()));
  return {
    server,
    baseUrl: `http://localhost:${(server.address() as AddressInfo).port}`,
    seen,
  };
}

/** The link whose release reads fail as an unavailable store's do, asking to retry in 1 s. */
const DOWN_LINK = 'lnk_sdk_proxy_down';

function failingStore(store: Store): Store {
  return new Proxy(store, {
    get(target, name, receiver) {
      const value = Reflect.get(target, name, receiver) as unknown;
      if (typeof value !== 'function') return value;
      if (name === 'readForRelease')
        return (serviceId: string, linkId: string) =>
          linkId === DOWN_LINK
            ? Promise.reject(new LinkvaultError('store_unavailable', { retryAfterSeconds: 1 }))
            : (value as (...a: unknown[]) => unknown).call(target, serviceId, linkId);
      return (value as (...a: unknown[]) => unknown).bind(target);
    },
  });
}

const RULES = {
  allow: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'].flatMap((method) => [
    { method, path: '/echo/**' },
    { method, path: '/status/*' },
  ]),
};

describe('@linkvault/node proxy() against a running linkvault and a stand-in API', () => {
  let h: ProxyHarness;
  let api: Awaited<ReturnType<typeof startApi>>;
  let linkId: string;
  let token: string;
  /** Requests the SDK sent, as "METHOD /path". */
  const sent: string[] = [];
  const waits: number[] = [];

  const countingFetch: typeof fetch = (input, init) => {
    sent.push(`${init?.method ?? 'GET'} ${new URL(String(input)).pathname}`);
    return fetch(input, init);
  };
  const client = (kid = 'worker', extra: Partial<LinkvaultClientOptions> = {}) =>
    new LinkvaultClient({
      baseUrl: h.stack.publicUrl,
      serviceId: kid,
      kid,
      key: h.services.env[`LV_PROXY_TEST_${kid.replace(/-/g, '_').toUpperCase()}`]!,
      audience: h.services.audience,
      fetch: countingFetch,
      sleep: (ms) => {
        waits.push(ms);
        return Promise.resolve();
      },
      ...extra,
    });

  before(async () => {
    api = await startApi();
    h = await startProxyHarness({
      apiBaseUrl: api.baseUrl,
      wrapStore: failingStore,
      env: { LINKVAULT_PROXY_TIMEOUT_SECONDS: '1' },
    });
    const link = await h.connect('lnk_sdk_proxy');
    linkId = link.id;
    token = (await openTokenSet(h.stack.vault, link, link.tokens!)).accessToken.reveal();
    await h.stack.addGrant({
      serviceId: 'worker',
      linkId,
      purpose: 'contact sync',
      tokenRelease: false,
      proxy: RULES as never,
    });
  });
  after(async () => {
    await h.close();
    await new Promise<void>((resolve) => {
      api.server.close(() => resolve());
      api.server.closeAllConnections();
    });
  });

  test('when a GET with a query and headers is proxied, then the API gets the link token and the caller the answer, never the token', async () => {
    const before = api.seen.length;
    const res = await client().proxy(linkId, {
      method: 'GET',
      path: '/echo/contacts',
      query: { limit: 2, tag: ['a', 'b'], skipped: undefined },
      headers: { 'x-plain': 'kept' },
    });
    assert.equal(res.status, 200);
    assert.match(res.requestId, /\S/);
    assert.equal(res.headers.get('x-ratelimit-remaining'), '9');
    const text = await res.text();
    assert.deepEqual(JSON.parse(text), {
      method: 'GET',
      url: '/echo/contacts?limit=2&tag=a&tag=b',
      body: '',
      content_type: null,
      plain: 'kept',
    });
    const got = api.seen.slice(before);
    assert.equal(got.length, 1);
    assert.equal(got[0]!.headers.authorization, `Bearer ${token}`);
    assert.ok(!text.includes(token));
    assert.ok(![...res.headers.values()].some((v) => v.includes(token)));
  });

  test('when bodies are sent, then an object goes as JSON, a string and a stream as they are, and the answer streams back', async () => {
    const posted = await client().proxy(linkId, {
      method: 'POST',
      path: '/echo/notes',
      body: { text: 'hello' },
    });
    assert.equal(posted.status, 200);
    assert.deepEqual(await posted.json(), {
      method: 'POST',
      url: '/echo/notes',
      body: '{"text":"hello"}',
      content_type: 'application/json',
      plain: null,
    });
    const put = await client().proxy(linkId, {
      method: 'PUT',
      path: '/echo/notes/1',
      body: 'plain words',
      headers: { 'content-type': 'text/plain' },
    });
    assert.equal(((await put.json()) as { body: string }).body, 'plain words');
    const streamed = await client().proxy(linkId, {
      method: 'PATCH',
      path: '/echo/notes/1',
      body: new Blob(['{"a":', '1}']).stream(),
      headers: { 'content-type': 'application/json' },
    });
    assert.ok(streamed.body);
    const chunks: Uint8Array[] = [];
    for await (const chunk of streamed.body as unknown as AsyncIterable<Uint8Array>)
      chunks.push(chunk);
    const echoed = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { body: string };
    assert.equal(echoed.body, '{"a":1}');
  });

  test('when the provider answers 4xx, 5xx or a redirect, then proxy() resolves with it and resends nothing', async () => {
    for (const [method, status] of [
      ['GET', 404],
      ['DELETE', 409],
      ['GET', 503],
      ['POST', 503],
    ] as const) {
      const before = api.seen.length;
      const res = await client().proxy(linkId, { method, path: `/status/${status}` });
      assert.equal(res.status, status);
      assert.match(res.requestId, /\S/);
      assert.deepEqual(await res.json(), { provider_error: status });
      assert.equal(api.seen.length - before, 1, `${method} ${status} sent once`);
    }
    await h.stack.addGrant({
      serviceId: 'worker',
      linkId,
      purpose: 'redirects',
      tokenRelease: false,
      proxy: { allow: [{ method: 'GET', path: '/redirect' }] } as never,
    });
    const moved = await client().proxy(linkId, { method: 'GET', path: '/redirect' });
    assert.equal(moved.status, 302);
    assert.equal(moved.headers.get('location'), 'https://elsewhere.example/x');
  });

  test('when linkvault refuses, then proxy() rejects LinkvaultApiError by code and the API receives nothing', async () => {
    const before = api.seen.length;
    const cases: [LinkvaultClient, string, string, number, string][] = [
      [client(), linkId, '/admin/users', 403, 'proxy_not_allowed'],
      [client(), 'lnk_missing', '/echo/x', 404, 'link_not_found'],
      [client('tokens-svc'), linkId, '/echo/x', 403, 'forbidden'],
      [
        client('worker', { key: 'not-the-worker-secret-but-32-bytes-long' }),
        linkId,
        '/echo/x',
        401,
        'unauthorized',
      ],
    ];
    for (const [c, id, path, status, code] of cases)
      await assert.rejects(
        c.proxy(id, { method: 'GET', path }),
        (err: unknown) =>
          err instanceof LinkvaultApiError &&
          err.status === status &&
          err.code === code &&
          typeof err.requestId === 'string',
        code,
      );
    assert.equal(api.seen.length, before);
    // A hanging API is cut by linkvault at its time limit (LINKVAULT_PROXY_TIMEOUT_SECONDS=1).
    await h.stack.addGrant({
      serviceId: 'worker',
      linkId,
      purpose: 'hang',
      tokenRelease: false,
      proxy: { allow: [{ method: 'GET', path: '/hang' }] } as never,
    });
    await assert.rejects(
      client().proxy(linkId, { method: 'GET', path: '/hang' }),
      (err: unknown) => err instanceof LinkvaultApiError && err.code === 'proxy_timeout',
    );
    // The call's own timeoutMs gives up first, on the caller's side.
    const startedAt = Date.now();
    await assert.rejects(
      client().proxy(linkId, { method: 'GET', path: '/hang', timeoutMs: 200 }),
      (err: unknown) => err instanceof Error && err.name === 'TimeoutError',
    );
    assert.ok(Date.now() - startedAt < 900, 'cut by the SDK, before the 1 s of linkvault');
  });

  test('when linkvault answers 503 with Retry-After, then GET is retried after waiting and POST and PATCH are sent once', async () => {
    await h.stack.seedLink({ id: DOWN_LINK, tenantId: 'tenant-down' });
    await h.stack.addGrant({
      serviceId: 'worker',
      tenantId: 'tenant-down',
      purpose: 'contact sync',
      tokenRelease: false,
      proxy: RULES as never,
    });
    const path = `/v1/links/${DOWN_LINK}/proxy/echo/x`;
    for (const [method, times] of [
      ['GET', 3],
      ['POST', 1],
      ['PATCH', 1],
    ] as const) {
      const sentBefore = sent.filter((s) => s === `${method} ${path}`).length;
      waits.length = 0;
      await assert.rejects(
        client().proxy(DOWN_LINK, {
          method,
          path: '/echo/x',
          body: method === 'GET' ? undefined : {},
        }),
        (err: unknown) =>
          err instanceof LinkvaultApiError &&
          err.code === 'store_unavailable' &&
          err.retryAfterSeconds === 1,
      );
      assert.equal(
        sent.filter((s) => s === `${method} ${path}`).length - sentBefore,
        times,
        method,
      );
      assert.deepEqual(waits, Array(times - 1).fill(1000), method);
    }
  });

  test('when a path could leave the proxy route, then proxy() refuses it before sending anything', async () => {
    const before = sent.length;
    for (const path of [
      'echo/x',
      '/echo/../token',
      '/echo/%2e%2E/token',
      '/./echo',
      '/echo\\..\\token',
      '/echo?x=1',
      '/echo#x',
    ])
      await assert.rejects(client().proxy(linkId, { method: 'GET', path }), TypeError, path);
    await assert.rejects(
      client().proxy(linkId, {
        method: 'GET',
        path: '/echo/x',
        headers: { Authorization: 'Bearer mine' },
      }),
      TypeError,
    );
    assert.equal(sent.length, before);
  });
});
