import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../../../src/config.js';
import { createKeyProvider } from '../../../src/keys/create-key-provider.js';
import { createVault } from '../../../src/keys/vault.js';
import { Metrics } from '../../../src/metrics.js';
import { createStore } from '../../../src/store/create-store.js';
import type { Store } from '../../../src/store/store.js';
import { startOidcServer, type OidcServer } from '../../support/oidc-server.js';
import { connectViaProvider, createTestOAuth } from '../../support/provider-link.js';
import { startRedis, type RedisServerHandle } from '../../support/redis-server.js';
import { makeTestServices } from '../../support/service-jwt.js';
import {
  startServiceProcess,
  writeServiceConfig,
  type ServiceProcess,
} from '../../support/service-process.js';
import { eventually } from '../revoke/revocation-harness.js';

const REDIRECT = 'http://127.0.0.1:3000/v1/oauth/callback/test-as';
const CLIENT = {
  client_id: 'lv-client',
  client_secret: 'lv-secret-0123456789',
  redirect_uris: [REDIRECT],
};

interface Received {
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
  readonly answered: number;
}

/** A webhook receiver on loopback that records every attempt and answers what the test says. */
async function startReceiver(): Promise<{
  url: string;
  received: Received[];
  answer: (status: number, headers?: Record<string, string>) => void;
  close: () => Promise<void>;
}> {
  const received: Received[] = [];
  let reply: { status: number; headers: Record<string, string> } = { status: 204, headers: {} };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push({
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
        answered: reply.status,
      });
      res.writeHead(reply.status, reply.headers).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`,
    received,
    answer: (status, headers = {}) => {
      reply = { status, headers };
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** The Standard Webhooks check, written here from the scheme's text, not with linkvault's code. */
function signatureIsValid(secret: string, r: Received): boolean {
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  const signed = `${String(r.headers['webhook-id'])}.${String(r.headers['webhook-timestamp'])}.${r.body}`;
  const expected = `v1,${createHmac('sha256', key).update(signed).digest('base64')}`;
  return String(r.headers['webhook-signature']).split(' ').includes(expected);
}

async function call(
  url: string,
  init: RequestInit,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url, init);
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

describe('lifecycle webhooks against a real receiver, across a killed service', () => {
  let oidc: OidcServer;
  let redis: RedisServerHandle;

  before(async () => {
    oidc = await startOidcServer({ mode: 'oauth', clients: [CLIENT] });
    redis = await startRedis();
  });
  after(async () => {
    await oidc.close();
    await redis.stop();
  });

  for (const kind of ['sqlite', 'redis'] as const) {
    it(`when the receiver fails the first attempt and the service on ${kind} is killed, then the restarted service delivers the same signed event; 410 disables the endpoint`, async () => {
      const dir = mkdtempSync(join(tmpdir(), `lv-webhooks-${kind}-`));
      const services = makeTestServices();
      const entry = oidc.catalogueEntry('test-as');
      const env: Record<string, string> = {
        ...writeServiceConfig({
          dir,
          services,
          providers: [{ entry, clientId: CLIENT.client_id, clientSecret: CLIENT.client_secret }],
        }),
        LINKVAULT_LOG_LEVEL: 'info',
        ...(kind === 'sqlite'
          ? { LINKVAULT_STORE: 'sqlite', LINKVAULT_SQLITE_PATH: join(dir, 'lv.db') }
          : {
              LINKVAULT_STORE: 'redis',
              LINKVAULT_REDIS_URL: redis.url,
              LINKVAULT_REDIS_PREFIX: `lv${randomUUID().slice(0, 8)}`,
            }),
      };
      const config = loadConfig(env, dir);
      const metrics = new Metrics();
      const keys = await createKeyProvider(config.keys, { metrics });
      const vault = createVault({ keys, metrics, maxEntries: 10, maxAgeMs: 60_000 });
      const { oauth } = createTestOAuth({
        entry,
        clientId: CLIENT.client_id,
        clientSecret: CLIENT.client_secret,
      });
      const receiver = await startReceiver();
      let store: Store | undefined;
      let service: ServiceProcess | undefined;
      try {
        service = await startServiceProcess({ cwd: dir, env });
        store = await createStore(config.store, { metrics });
        const admin = {
          authorization: services.bearer('crm-hs'),
          'content-type': 'application/json',
        };

        // Invalid input first: an unknown event type, a URL with credentials.
        const badEvent = await call(`${service.url}/v1/webhook-endpoints`, {
          method: 'POST',
          headers: admin,
          body: JSON.stringify({ url: receiver.url, events: ['link.exploded'] }),
        });
        assert.equal(badEvent.status, 400);
        assert.equal(badEvent.body.code, 'invalid_request');
        const withCredentials = await call(`${service.url}/v1/webhook-endpoints`, {
          method: 'POST',
          headers: admin,
          body: JSON.stringify({ url: 'http://user:pw@127.0.0.1:9/x' }),
        });
        assert.equal(withCredentials.body.code, 'invalid_webhook_url');

        const created = await call(`${service.url}/v1/webhook-endpoints`, {
          method: 'POST',
          headers: admin,
          body: JSON.stringify({ url: receiver.url, tenant_id: 'acme' }),
        });
        assert.equal(created.status, 201);
        const secret = created.body.secret as string;
        assert.match(secret, /^whsec_[A-Za-z0-9+/]{43}=$/);
        const endpointId = created.body.id as string;
        const listed = await call(`${service.url}/v1/webhook-endpoints`, { headers: admin });
        assert.equal(JSON.stringify(listed.body).includes(secret.slice(6)), false, 'no secret');

        const linkId = `lnk_${randomUUID()}`;
        await connectViaProvider({
          oauth,
          completeLogin: (u, o) => oidc.completeLogin(u, o),
          store,
          vault,
          providerId: 'test-as',
          linkId,
          tenantId: 'acme',
          userId: 'alice',
          accountId: 'alice',
          redirectUri: REDIRECT,
        });

        receiver.answer(503, { 'retry-after': '1' });
        const revoked = await call(`${service.url}/v1/links/${linkId}`, {
          method: 'DELETE',
          headers: { authorization: services.bearer('crm-hs') },
        });
        assert.equal(revoked.status, 200);
        const first = await eventually(
          async () =>
            receiver.received.find((r) => JSON.parse(r.body).type === 'link.revoked') ?? null,
          10_000,
        );
        assert.equal(first.answered, 503);
        // The attempt is recorded and the job rescheduled (the worker no longer holds it): kill it there.
        const pending = await eventually(async () => {
          const res = await call(`${service!.url}/v1/webhook-endpoints/${endpointId}/deliveries`, {
            headers: admin,
          });
          const list = res.body.deliveries as Record<string, unknown>[];
          // Both events (the revoke, and the provider's confirmation) have had their failed attempt.
          return list.length === 2 && list.every((d) => d.status === 'retrying')
            ? (list.find((d) => d.event_id === first.headers['webhook-id']) ?? null)
            : null;
        }, 15_000);
        assert.equal(pending.status, 'retrying');
        assert.ok((pending.attempts as number) >= 1);
        assert.equal(pending.last_status_code, 503);
        await service.crash();

        receiver.answer(204);
        service = await startServiceProcess({ cwd: dir, env });
        const attempts = await eventually(
          async () => {
            const all = receiver.received.filter(
              (r) => r.headers['webhook-id'] === first.headers['webhook-id'],
            );
            return all.some((r) => r.answered === 204) ? all : null;
          },
          20_000,
          100,
        );
        assert.ok(attempts.length >= 2);
        for (const r of attempts) assert.ok(signatureIsValid(secret, r), 'signature verifies');
        const body = JSON.parse(attempts.at(-1)!.body) as Record<string, unknown>;
        assert.deepEqual(Object.keys(body).sort(), ['data', 'timestamp', 'type']);
        assert.deepEqual(body.data, {
          link_id: linkId,
          tenant_id: 'acme',
          user_id: 'alice',
          provider_id: 'test-as',
          revoked_by: 'service',
        });
        assert.equal(body.timestamp, JSON.parse(first.body).timestamp, 'same event on retry');

        // The provider confirmed the revocation: that is an event too.
        const confirmed = await eventually(
          async () =>
            receiver.received.find(
              (r) => JSON.parse(r.body).type === 'link.revocation_confirmed',
            ) ?? null,
          15_000,
          100,
        );
        assert.ok(signatureIsValid(secret, confirmed));
        for (const r of receiver.received)
          assert.doesNotMatch(r.body, /access_token|refresh_token/);

        const deliveries = await eventually(async () => {
          const res = await call(`${service!.url}/v1/webhook-endpoints/${endpointId}/deliveries`, {
            headers: admin,
          });
          const list = res.body.deliveries as { event_id: string; status: string }[];
          return list.some(
            (d) => d.event_id === first.headers['webhook-id'] && d.status === 'delivered',
          )
            ? list
            : null;
        });
        const revokedDelivery = deliveries.find((d) => d.event_id === first.headers['webhook-id']);
        assert.deepEqual(revokedDelivery, {
          event_id: first.headers['webhook-id'],
          type: 'link.revoked',
          status: 'delivered',
          attempts: attempts.length,
          last_status_code: 204,
          next_attempt_at: null,
        });

        // 410 Gone: the endpoint is disabled and gets nothing more.
        receiver.answer(410);
        const second = `lnk_${randomUUID()}`;
        await connectViaProvider({
          oauth,
          completeLogin: (u, o) => oidc.completeLogin(u, o),
          store,
          vault,
          providerId: 'test-as',
          linkId: second,
          tenantId: 'acme',
          userId: 'bob',
          accountId: 'bob',
          redirectUri: REDIRECT,
        });
        await call(`${service.url}/v1/links/${second}`, {
          method: 'DELETE',
          headers: { authorization: services.bearer('crm-hs') },
        });
        await eventually(async () => {
          const res = await call(`${service!.url}/v1/webhook-endpoints`, { headers: admin });
          const [endpoint] = res.body.webhook_endpoints as { disabled_at: string | null }[];
          return endpoint?.disabled_at ? true : null;
        }, 15_000);
        const seen = receiver.received.length;
        await new Promise((r) => setTimeout(r, 1500));
        assert.equal(receiver.received.length, seen, 'nothing more after 410');
      } finally {
        await service?.stop();
        await store?.close();
        await receiver.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});
