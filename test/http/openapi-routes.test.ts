import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import request from 'supertest';
import type { Express } from 'express';
import { createHash } from 'node:crypto';
import { buildOpenApiDocument } from '../../src/http/openapi.js';
import {
  CONFIRMATION_EXPIRES_KEY,
  CONFIRMATION_HASH_KEY,
} from '../../src/links/connect/connect.js';
import {
  expressPath,
  mountedRoutes,
  ROUTE_TABLE,
  type RouteSpec,
} from '../../src/http/route-table.js';
import { PROXY_ROUTE } from '../../src/http/proxy-routes.js';
import { TOKEN_ROUTE } from '../../src/http/token-endpoint.js';
import { rawRequest, startProxyHarness } from '../links/proxy/proxy-harness.js';
import { startStack, type Stack } from '../support/stack.js';
import { testProviderEntry } from '../support/test-catalogue.js';

/**
 * The route table (src/http/route-table.ts) is the truth the OpenAPI document is generated from:
 * the routes the app really mounts are exactly the table's, and the app's real answers, success
 * and error, validate against the document's schemas for that route and status. A route whose
 * answer drifts (a member added, renamed or retyped) or an undeclared route fails here.
 */

type Json = Record<string, unknown>;

interface Layer {
  route?: { path?: unknown; methods?: Record<string, boolean> };
  handle?: { stack?: unknown };
}

/** "METHOD /path" of every route mounted in an Express router stack (nested routers included). */
function mountedRouteKeys(stack: unknown, into = new Set<string>()): Set<string> {
  for (const layer of (Array.isArray(stack) ? stack : []) as Layer[]) {
    if (layer.route && typeof layer.route.path === 'string') {
      for (const [method, on] of Object.entries(layer.route.methods ?? {}))
        if (on && method !== '_all') into.add(`${method.toUpperCase()} ${layer.route.path}`);
    } else if (layer.handle && Array.isArray(layer.handle.stack)) {
      mountedRouteKeys(layer.handle.stack, into);
    }
  }
  return into;
}

const tableKeys = (routes: readonly RouteSpec[]) =>
  new Set(routes.map((r) => `${r.method} ${expressPath(r.path)}`));
/** The routes Express mounts: all but those answered on node:http before it (the proxy). */
const routerRoutes = (routes: readonly RouteSpec[]) =>
  routes.filter((r) => r.servedBy !== 'node-http');
const PROXY_METHODS = ['DELETE', 'GET', 'PATCH', 'POST', 'PUT'];

describe('the route table and the mounted routes', () => {
  for (const sandbox of [false, true]) {
    test(`when the app is built${sandbox ? ' with the sandbox' : ''}, then it mounts exactly the table's routes, the token fast path serves one of them and node:http the proxy's`, async () => {
      const stack = await startStack({ sandbox });
      try {
        const mounted = mountedRouteKeys(
          (stack.app as Express & { router: { stack: unknown } }).router.stack,
        );
        assert.deepEqual(
          [...mounted].sort(),
          [...tableKeys(routerRoutes(mountedRoutes(ROUTE_TABLE, { sandbox })))].sort(),
        );
        assert.ok(tableKeys(ROUTE_TABLE).has(`POST ${TOKEN_ROUTE}`));
        // proxy-routes.ts answers these five before Express; its `*path` is the table's `{path}`.
        const served = mountedRoutes(ROUTE_TABLE, { sandbox }).filter(
          (r) => r.servedBy === 'node-http',
        );
        assert.deepEqual(served.map((r) => r.method).sort(), PROXY_METHODS);
        for (const route of served)
          assert.equal(expressPath(route.path).replace(/:path$/, '*path'), PROXY_ROUTE);
      } finally {
        await stack.close();
      }
    });
  }

  test('when a path exists under other methods, then OPTIONS and 405 say the methods the table declares', async () => {
    const stack = await startStack();
    try {
      for (const [path, allow] of [
        ['/v1/links/lnk_x', 'DELETE, GET, HEAD'],
        ['/v1/grants/grt_x', 'DELETE'],
        ['/openapi.json', 'GET, HEAD'],
        ['/v1/me/links/lnk_x/revocation', 'GET, HEAD'],
      ] as const) {
        const options = await request(stack.listener).options(path);
        assert.equal(options.status, 204, path);
        assert.equal(options.headers.allow, allow, path);
        const wrong = await request(stack.listener).patch(path);
        assert.equal(wrong.status, 405, path);
        assert.equal(wrong.headers.allow, allow, path);
        assert.equal(wrong.body.code, 'method_not_allowed');
      }
      // The proxy's path takes slashes; it serves no HEAD (a GET there is a provider's call).
      for (const path of ['/v1/links/lnk_x/proxy/crm', '/v1/links/lnk_x/proxy/crm/v3/objects/']) {
        const options = await request(stack.listener).options(path);
        assert.equal(options.status, 204, path);
        assert.equal(options.headers.allow, PROXY_METHODS.join(', '), path);
        const head = await request(stack.listener).head(path);
        assert.equal(head.status, 405, path);
        assert.equal(head.headers.allow, PROXY_METHODS.join(', '), path);
      }
    } finally {
      await stack.close();
    }
  });
});

describe('GET /openapi.json', () => {
  test('when anyone asks, then the document of the mounted API routes with this deployment as its server, cacheable and readable cross-origin', async () => {
    const stack = await startStack();
    try {
      const res = await request(stack.listener).get('/openapi.json');
      assert.equal(res.status, 200);
      assert.match(String(res.headers['content-type']), /^application\/json/);
      assert.equal(res.headers['cache-control'], 'public, max-age=300');
      assert.equal(res.headers['access-control-allow-origin'], '*');
      assert.deepEqual(
        res.body,
        buildOpenApiDocument({
          routes: mountedRoutes(ROUTE_TABLE, { sandbox: false }),
          serverUrl: stack.config.publicUrl,
        }),
      );
      assert.deepEqual(res.body.servers, [{ url: stack.config.publicUrl }]);
    } finally {
      await stack.close();
    }
  });
});

describe('real answers validate against the OpenAPI document', () => {
  const doc = buildOpenApiDocument();
  const ajv = new Ajv2020({ strict: false, validateFormats: false, allErrors: true });
  const DOC_ID = 'https://linkvault.test/openapi.json';
  ajv.addSchema({ ...doc, $id: DOC_ID });
  const paths = doc.paths as Record<string, Record<string, { responses: Record<string, Json> }>>;
  const apiRoutes = ROUTE_TABLE.filter((r) => r.api);
  /** "METHOD template" → statuses whose real answer was checked. */
  const checked = new Map<string, Set<number>>();
  const validators = new Map<string, ValidateFunction>();

  function routeFor(method: string, path: string): RouteSpec {
    const bare = path.split('?')[0]!;
    const route = apiRoutes.find(
      (r) =>
        r.method === method &&
        new RegExp(
          `^${r.path.replace(/\{[^}]+\}$/, r.servedBy === 'node-http' ? '.+' : '[^/]+').replace(/\{[^}]+\}/g, '[^/]+')}$`,
        ).test(bare),
    );
    if (!route) throw new Error(`no declared route for ${method} ${bare}`);
    return route;
  }

  const pointer = (s: string) => s.replaceAll('~', '~0').replaceAll('/', '~1');

  /** Asserts the answer is declared for the route and its body matches the declared schema. */
  function check(method: string, path: string, res: request.Response): void {
    const route = routeFor(method, path);
    const op = paths[route.path]![method.toLowerCase()]!;
    // A relayed provider answer (the proxy) carries linkvault-proxy-request-id, whatever its status.
    const relayed = res.headers['linkvault-proxy-request-id'] !== undefined;
    const answerKey = relayed ? 'default' : String(res.status);
    const declared = op.responses[answerKey] as Json | undefined;
    assert.ok(declared, `${method} ${path}: status ${res.status} is not declared`);
    const content = declared.content as Record<string, unknown> | undefined;
    if (!content) {
      // A redirect's short text body (Express's "Found. Redirecting to …") is not part of the API.
      if (res.status < 300 || res.status >= 400)
        assert.equal(res.text ?? '', '', `${method} ${path} ${res.status}: undeclared body`);
    } else {
      const [contentType] = Object.keys(content);
      if (contentType === '*/*') {
        assert.ok(relayed, `${method} ${path} ${res.status}: only a relayed answer is any type`);
        const k = `${route.method} ${route.path}`;
        checked.set(k, (checked.get(k) ?? new Set()).add(res.status));
        return;
      }
      assert.equal(
        String(res.headers['content-type']).split(';')[0],
        contentType,
        `${method} ${path} ${res.status}`,
      );
      const key = `${route.path} ${method} ${answerKey}`;
      let validate = validators.get(key);
      if (!validate) {
        validate = ajv.compile({
          $ref: `${DOC_ID}#/paths/${pointer(route.path)}/${method.toLowerCase()}/responses/${answerKey}/content/${pointer(contentType!)}/schema`,
        });
        validators.set(key, validate);
      }
      assert.equal(
        validate(JSON.parse(res.text)),
        true,
        `${method} ${path} ${res.status}: ${JSON.stringify(validate.errors)} in ${res.text}`,
      );
    }
    const k = `${route.method} ${route.path}`;
    checked.set(k, (checked.get(k) ?? new Set()).add(res.status));
  }

  let stack: Stack;
  let admin: string;
  before(async () => {
    stack = await startStack({
      providers: [
        {
          entry: testProviderEntry('acme', 'http://127.0.0.1:9'),
          credentials: { clientId: 'c', clientSecret: 's' },
          allowInsecureUrls: true,
        },
      ],
    });
    admin = stack.services.bearer('crm-hs');
  });
  after(() => stack.close());

  async function call(
    method: 'GET' | 'POST' | 'DELETE',
    path: string,
    options: { auth?: string; body?: unknown; accept?: string } = {},
  ): Promise<request.Response> {
    const agent = request(stack.listener);
    let req =
      method === 'GET'
        ? agent.get(path)
        : method === 'POST'
          ? agent.post(path)
          : agent.delete(path);
    if (options.auth) req = req.set('Authorization', options.auth);
    if (options.accept) req = req.set('Accept', options.accept);
    const res = await (options.body === undefined ? req : req.send(options.body as object));
    check(method, path, res);
    return res;
  }

  test('when the proxy relays a stand-in API and refuses calls, then each answer is the declared one', async () => {
    // A real linkvault on loopback, node-oidc-provider for the link, a stand-in API (proxy-harness.ts).
    const h = await startProxyHarness({ env: { LINKVAULT_PROXY_TIMEOUT_SECONDS: '1' } });
    try {
      const proxy = async (
        method: string,
        linkId: string,
        path: string,
        kid: string | null = 'worker',
        body?: string,
      ) => {
        const raw = await rawRequest(
          h.stack.publicUrl,
          method,
          `/v1/links/${linkId}/proxy${path}`,
          {
            ...(kid === null ? {} : { authorization: h.services.bearer(kid) }),
            ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          },
          body,
        );
        const res = { ...raw, text: raw.body } as unknown as request.Response;
        check(method, `/v1/links/${linkId}/proxy${path}`, res);
        return raw;
      };
      const link = await h.connect('lnk_openapi_proxy');
      await h.stack.addGrant({
        serviceId: 'worker',
        linkId: link.id,
        purpose: 'contact sync',
        tokenRelease: false,
        proxy: {
          allow: PROXY_METHODS.map((method) => ({ method, path: '/crm/**' })).concat([
            { method: 'GET', path: '/hang/**' },
          ]),
        } as never,
      });
      for (const method of PROXY_METHODS) {
        const body = ['POST', 'PUT', 'PATCH'].includes(method) ? '{}' : undefined;
        const res = await proxy(
          method,
          link.id,
          '/crm/v3/objects/contacts?limit=1',
          'worker',
          body,
        );
        assert.equal(res.status, 200, `${method}: ${res.body}`);
        assert.equal(typeof res.headers['linkvault-proxy-request-id'], 'string');
        assert.equal(JSON.parse(res.body).path, '/crm/v3/objects/contacts?limit=1');
      }
      const codes: [number, string][] = [];
      const refused = async (...args: Parameters<typeof proxy>) => {
        const res = await proxy(...args);
        assert.equal(res.headers['linkvault-proxy-request-id'], undefined, res.body);
        codes.push([res.status, (JSON.parse(res.body) as { code: string }).code]);
      };
      await refused('GET', link.id, '/admin/users');
      await refused('GET', link.id, '/crm/../admin');
      await refused('GET', 'lnk_missing', '/crm/x');
      await refused('GET', (await h.connect('lnk_openapi_proxy_nogrant')).id, '/crm/x');
      await refused('GET', link.id, '/crm/x', null);
      await refused('GET', link.id, '/crm/x', 'tokens-svc');
      await refused('GET', link.id, '/hang/forever');
      const elsewhere = await h.stack.seedLink({
        providerId: 'acme-sf',
        metadata: { instance_url: 'https://evil.example.com' },
      });
      await h.stack.addGrant({
        serviceId: 'worker',
        linkId: elsewhere.id,
        purpose: 'contact sync',
        proxy: { allow: [{ method: 'GET', path: '/**' }] } as never,
      });
      await refused('GET', elsewhere.id, '/services/data');
      assert.deepEqual(codes, [
        [403, 'proxy_not_allowed'],
        [403, 'proxy_not_allowed'],
        [404, 'link_not_found'],
        // No grant at all tells the caller no more than a grant whose rules refuse (proxy.ts).
        [403, 'proxy_not_allowed'],
        [401, 'unauthorized'],
        [403, 'forbidden'],
        [504, 'proxy_timeout'],
        [502, 'proxy_target_refused'],
      ]);
    } finally {
      await h.close();
    }
  });

  test('when every API route is called for success and for its errors, then each answer matches its declared schema', async () => {
    const billing = stack.services.bearer('billing-hs');
    const auditor = stack.services.bearer('auditor-hs');
    const session = `Bearer ${await stack.sessionToken('tenant-a', 'user-1')}`;

    await call('GET', '/healthz');
    await call('GET', '/readyz');
    await call('GET', '/openapi.json');
    await call('GET', '/v1/providers');
    await call('GET', '/v1/me/providers', { auth: session });
    await call('GET', '/v1/me/providers', { auth: 'Bearer nope' });

    const created = await call('POST', '/v1/sessions', {
      auth: admin,
      body: { tenant_id: 'tenant-a', user_id: 'user-1' },
    });
    assert.equal(created.status, 201);
    await call('POST', '/v1/sessions', {
      auth: admin,
      body: { tenant_id: 'tenant-a', user_id: 'user-1', return_to: 'https://evil.example/x' },
    });
    await call('POST', '/v1/sessions', { auth: auditor, body: { tenant_id: 't', user_id: 'u' } });
    await call('POST', '/v1/sessions', { body: { tenant_id: 't', user_id: 'u' } });

    const started = await call('POST', '/v1/connect/acme', {
      auth: `Bearer ${created.body.session_token}`,
      body: { display: 'popup' },
    });
    assert.equal(started.status, 200);
    await call('POST', '/v1/connect/nosuch', {
      auth: `Bearer ${created.body.session_token}`,
      body: {},
    });
    await call('POST', '/v1/connect/acme', { auth: 'Bearer x', body: {} });
    // A link held for confirmation, as the callback stores it (only the id's hash is kept).
    const confirmationId = `lnk_pending_openapi.${'s'.repeat(43)}`;
    await stack.seedLink({
      id: 'lnk_pending_openapi',
      tenantId: 'tenant-a',
      userId: 'user-1',
      status: 'pending_confirmation',
      metadata: {
        [CONFIRMATION_HASH_KEY]: createHash('sha256').update(confirmationId).digest('base64url'),
        [CONFIRMATION_EXPIRES_KEY]: String(Date.now() + 600_000),
      },
    });
    const confirmed = await call('POST', `/v1/confirmations/${confirmationId}`, {
      auth: admin,
      body: { tenant_id: 'tenant-a', user_id: 'user-1' },
    });
    assert.equal(confirmed.status, 200);
    await call('POST', '/v1/confirmations/lnk_x.nope', {
      auth: admin,
      body: { tenant_id: 'tenant-a', user_id: 'user-1' },
    });
    await call('GET', '/v1/oauth/callback/acme?code=c&state=s', { accept: 'application/json' });

    const link = await stack.seedLink({ tenantId: 'tenant-a', userId: 'user-1' });
    const other = await stack.seedLink({ tenantId: 'tenant-a', userId: 'user-1' });
    await stack.addGrant({ serviceId: 'crm-sync', linkId: link.id });
    await call('GET', '/v1/links?tenant_id=tenant-a', { auth: admin });
    await call('GET', '/v1/links?colour=blue', { auth: admin });
    await call('GET', `/v1/links/${link.id}`, { auth: admin });
    await call('GET', '/v1/links/lnk_missing', { auth: admin });
    await call('GET', '/v1/me/links', { auth: session });
    await call('GET', '/v1/me/links');

    const token = await call('POST', `/v1/links/${link.id}/token`, { auth: admin, body: {} });
    assert.equal(token.status, 200);
    const noGrant = await call('POST', `/v1/links/${link.id}/token`, { auth: billing, body: {} });
    assert.equal(noGrant.body.code, 'no_grant');
    await call('POST', `/v1/links/${link.id}/token`, { auth: auditor, body: {} });
    await call('POST', '/v1/links/lnk_missing/token', { auth: admin, body: {} });
    await call('POST', `/v1/links/${link.id}/token`, { auth: admin, body: { scopes: 'x' } });

    await call('GET', `/v1/links/${link.id}/revocation`, { auth: admin });
    const revoked = await call('DELETE', `/v1/links/${link.id}`, { auth: admin });
    assert.equal(revoked.status, 200);
    await call('DELETE', '/v1/links/lnk_missing', { auth: admin });
    await call('GET', `/v1/links/${link.id}/revocation`, { auth: admin });
    const gone = await call('POST', `/v1/links/${link.id}/token`, { auth: admin, body: {} });
    assert.equal(gone.body.code, 'link_revoked');
    await call('DELETE', `/v1/me/links/${other.id}`, { auth: session, body: { reason: 'done' } });
    await call('DELETE', '/v1/me/links/lnk_missing', { auth: session });
    await call('GET', `/v1/me/links/${other.id}/revocation`, { auth: session });
    await call('GET', '/v1/me/links/lnk_missing/revocation', { auth: session });
    await call('GET', `/v1/me/links/${other.id}/activity`, { auth: session });
    await call('GET', '/v1/me/links/lnk_missing/activity', { auth: session });

    const job = await call('POST', '/v1/revocations', {
      auth: admin,
      body: { tenant_id: 'tenant-b', reason: 'erasure' },
    });
    assert.equal(job.status, 202);
    await call('POST', '/v1/revocations', { auth: admin, body: { tenant_id: 'tenant-b' } });
    await call('GET', `/v1/revocations/${job.body.job_id}`, { auth: admin });
    await call('GET', '/v1/revocations/rvj_nope', { auth: admin });

    const grant = await call('POST', '/v1/grants', {
      auth: admin,
      body: { service_id: 'billing', tenant_id: 'tenant-a', purpose: 'billing sync' },
    });
    assert.equal(grant.status, 201);
    await call('POST', '/v1/grants', { auth: admin, body: { service_id: 'billing' } });
    await call('GET', '/v1/grants?service_id=billing', { auth: admin });
    await call('GET', '/v1/grants', { auth: billing });
    await call('DELETE', `/v1/grants/${grant.body.id}`, { auth: admin });
    await call('DELETE', '/v1/grants/grt_missing', { auth: admin });

    const audit = await call('GET', '/v1/audit?limit=2', { auth: admin });
    assert.equal(audit.status, 200);
    await call('GET', `/v1/audit?limit=2&after=${String(audit.body.next)}`, { auth: admin });
    await call('GET', '/v1/audit?limit=0', { auth: admin });
    await call('GET', '/v1/audit', { auth: billing });

    const endpoint = await call('POST', '/v1/webhook-endpoints', {
      auth: admin,
      body: { url: 'http://127.0.0.1:9/hooks', events: ['link.revoked'] },
    });
    assert.equal(endpoint.status, 201);
    await call('POST', '/v1/webhook-endpoints', { auth: admin, body: { url: 'not a url' } });
    await call('GET', '/v1/webhook-endpoints', { auth: admin });
    await call('GET', `/v1/webhook-endpoints/${endpoint.body.id}/deliveries`, { auth: admin });
    await call('GET', '/v1/webhook-endpoints/whe_missing/deliveries', { auth: admin });
    await call('DELETE', `/v1/webhook-endpoints/${endpoint.body.id}`, { auth: admin });
    await call('DELETE', '/v1/webhook-endpoints/whe_missing', { auth: admin });

    // Every documented route had a success answer checked (the callback's success needs a
    // provider's redirect: its 2xx/303 are covered by the connect tests; here, its errors).
    for (const route of apiRoutes) {
      const statuses = checked.get(`${route.method} ${route.path}`);
      assert.ok(statuses, `${route.method} ${route.path} was never called`);
      if (route.operationId === 'completeConnect') continue;
      assert.ok(
        [...statuses].some((s) => s < 400),
        `${route.method} ${route.path}: no success answer checked`,
      );
    }
  });

  test('when an answer drifts from its schema, then the check fails (the check can fail)', () => {
    const drifted = {
      status: 200,
      text: JSON.stringify({ status: 'ok', uptime_seconds: 3 }),
      headers: { 'content-type': 'application/json; charset=utf-8' },
    } as unknown as request.Response;
    assert.throws(() => check('GET', '/healthz', drifted), /must NOT have additional properties/);
    const undeclared = { ...drifted, status: 418 } as unknown as request.Response;
    assert.throws(() => check('GET', '/healthz', undeclared), /not declared/);
  });
});
