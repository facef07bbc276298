import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { LinkRecord } from '../../src/links/link.js';
import { startRedis, type RedisServerHandle } from '../support/redis-server.js';
import {
  startServiceProcess,
  writeServiceConfig,
  type ServiceProcess,
} from '../support/service-process.js';
import { startStack, tokenSet, type Stack } from '../support/stack.js';
import { testProviderEntry } from '../support/test-catalogue.js';
import { makeScopedServices } from './scoped-services.js';

/**
 * The red team's impersonation scenario against the real service (`linkvault serve` as a child
 * process), on a real redis-server and on a SQLite file. The links are seeded into the same store
 * under the same master key by an in-process stack; every call goes over HTTP to the child, so the
 * services file, the wiring in main.ts and the token fast path are the production ones.
 */

const PROVIDER = 'plain';
const providers = [
  {
    entry: testProviderEntry(PROVIDER, 'http://127.0.0.1:9', {
      revocation: { style: 'none', url: null },
    }),
    clientId: 'c',
    clientSecret: 's',
  },
];

interface Answer {
  readonly status: number;
  readonly body: Record<string, unknown>;
}

function scenario(storeName: 'SQLite' | 'Redis'): void {
  describe(`the impersonation scenario against linkvault serve, on ${storeName}`, () => {
    let redis: RedisServerHandle | undefined;
    let stack: Stack;
    let service: ServiceProcess;
    let acmeLink: LinkRecord;
    let globexCeoLink: LinkRecord;

    async function call(
      kidOrSession: { kid: string } | { session: string },
      method: string,
      path: string,
      body?: unknown,
    ): Promise<Answer> {
      const authorization =
        'kid' in kidOrSession
          ? stack.services.bearer(kidOrSession.kid)
          : `Bearer ${kidOrSession.session}`;
      const res = await fetch(`${service.url}${path}`, {
        method,
        headers: {
          authorization,
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      const text = await res.text();
      return { status: res.status, body: text === '' ? {} : JSON.parse(text) };
    }

    before(async () => {
      if (storeName === 'Redis') redis = await startRedis();
      const services = makeScopedServices();
      stack = await startStack({
        services,
        ...(redis ? { redisUrl: redis.url } : {}),
        env: { LINKVAULT_ALLOW_INSECURE_PROVIDER_URLS: 'true' },
        providers: providers.map((p) => ({
          entry: p.entry,
          credentials: { clientId: p.clientId, clientSecret: p.clientSecret },
          allowInsecureUrls: true,
        })),
      });
      const seed = (tenantId: string, userId: string) =>
        stack.createLink({
          tenantId,
          userId,
          providerId: PROVIDER,
          tokens: tokenSet(`at-${tenantId}-${userId}`, `rt-${tenantId}-${userId}`),
        });
      acmeLink = await seed('acme', 'alice');
      globexCeoLink = await seed('globex', 'ceo');
      await stack.addGrant({ serviceId: 'acme-app', tenantId: 'globex', purpose: 'sync' });

      const env = writeServiceConfig({ dir: stack.dir, services, providers });
      service = await startServiceProcess({
        cwd: stack.dir,
        env: {
          ...env,
          // The stack's master key and store: the child reads the links the stack sealed.
          LINKVAULT_LOCAL_KEY_FILE: join(stack.dir, 'master.key'),
          ...(redis
            ? {
                LINKVAULT_STORE: 'redis',
                LINKVAULT_REDIS_URL: redis.url,
                LINKVAULT_REDIS_PREFIX: `lvt${process.pid}`,
              }
            : { LINKVAULT_STORE: 'sqlite', LINKVAULT_SQLITE_PATH: stack.sqlitePath! }),
        },
      });
    });
    after(async () => {
      await service?.stop();
      await stack?.close();
      await redis?.stop();
    });

    test('when a sessions-only service scoped to acme tries the impersonation, then it gets no globex session, so no globex link to list or revoke', async () => {
      const minted = await call({ kid: 'acme-sessions-hs' }, 'POST', '/v1/sessions', {
        tenant_id: 'globex',
        user_id: 'ceo',
      });
      assert.equal(minted.status, 403);
      assert.equal(minted.body.code, 'forbidden');
      assert.equal(minted.body.session_token, undefined);

      // The same attempt by an unscoped sessions service works: the scope is what stops it.
      const unscoped = await call({ kid: 'crm-hs' }, 'POST', '/v1/sessions', {
        tenant_id: 'globex',
        user_id: 'ceo',
      });
      assert.equal(unscoped.status, 201);
      const listed = await call(
        { session: String(unscoped.body.session_token) },
        'GET',
        '/v1/me/links',
      );
      assert.deepEqual(
        (listed.body.links as { id: string }[]).map((l) => l.id),
        [globexCeoLink.id],
      );
    });

    test("when a service scoped to acme lists, reads, revokes or asks a token for globex's link, then it sees nothing and gets 404, and the link stays active", async () => {
      const list = await call({ kid: 'acme-app-hs' }, 'GET', '/v1/links');
      assert.deepEqual(
        (list.body.links as { id: string }[]).map((l) => l.id),
        [acmeLink.id],
      );
      const ceo = await call(
        { kid: 'acme-app-hs' },
        'GET',
        '/v1/links?tenant_id=globex&user_id=ceo',
      );
      assert.deepEqual(ceo.body, { links: [] });
      for (const [method, path] of [
        ['GET', `/v1/links/${globexCeoLink.id}`],
        ['DELETE', `/v1/links/${globexCeoLink.id}`],
        ['POST', `/v1/links/${globexCeoLink.id}/token`],
      ] as const) {
        const res = await call(
          { kid: 'acme-app-hs' },
          method,
          path,
          method === 'POST' ? {} : undefined,
        );
        assert.equal(res.status, 404, `${method} ${path}`);
        assert.equal(res.body.code, 'link_not_found', `${method} ${path}`);
      }
      const own = await call({ kid: 'acme-app-hs' }, 'POST', `/v1/links/${acmeLink.id}/token`, {});
      assert.equal(own.status, 403); // inside its tenants, but no grant in acme: no_grant
      assert.equal(own.body.code, 'no_grant');
      assert.equal((await stack.store.getLink(globexCeoLink.id))!.status, 'active');
    });

    test('when an admin scoped to acme grants or bulk-revokes in globex, then 403 and nothing changes', async () => {
      const grant = await call({ kid: 'acme-admin-hs' }, 'POST', '/v1/grants', {
        service_id: 'acme-admin',
        tenant_id: 'globex',
        purpose: 'exfiltrate',
      });
      assert.equal(grant.status, 403);
      const bulk = await call({ kid: 'acme-admin-hs' }, 'POST', '/v1/revocations', {
        tenant_id: 'globex',
        reason: 'sabotage',
      });
      assert.equal(bulk.status, 403);
      assert.equal((await stack.store.getLink(globexCeoLink.id))!.status, 'active');
      const grants = await stack.store.listGrants('acme-admin');
      assert.deepEqual(grants, []);
    });
  });
}

scenario('SQLite');
scenario('Redis');
