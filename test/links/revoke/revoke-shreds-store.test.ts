import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import request from 'supertest';
import { parseRecord } from '../../../src/links/revoke/revocation.js';
import { Metrics } from '../../../src/metrics.js';
import { createStore } from '../../../src/store/create-store.js';
import type { Store } from '../../../src/store/store.js';
import type { SealedRecord } from '../../../src/keys/sealed-record.js';
import { startOidcServer, type OidcServer } from '../../support/oidc-server.js';
import { startRedis, type RedisServerHandle } from '../../support/redis-server.js';
import { eventually, obtainTokens, startStack, type Stack } from './revocation-harness.js';

const REDIRECT = 'http://127.0.0.1:3000/v1/oauth/callback/test-as';
const CLIENT = {
  client_id: 'lv-client',
  client_secret: 'lv-secret-0123456789',
  redirect_uris: [REDIRECT],
};

/** The pieces of a sealed record that would let a copy of the store (with the key) yield the tokens. */
function needles(sealed: SealedRecord): Record<string, string> {
  return { ct: sealed.ct, edk: sealed.edk, tag: sealed.tag };
}

function found(haystack: string, sealed: SealedRecord): string[] {
  return Object.entries(needles(sealed))
    .filter(([, v]) => haystack.includes(v))
    .map(([k]) => k);
}

/** Revokes a link at a real provider through the whole pipeline and waits until the job has ended. */
async function revokeCompletely(
  stack: Stack,
  oidc: OidcServer,
  store: Store,
  user: string,
): Promise<{ linkId: string; sealed: SealedRecord; tokens: string[] }> {
  const tokens = await obtainTokens(stack, oidc, 'test-as', user, REDIRECT);
  const link = await stack.createLink({
    tenantId: 'acme',
    userId: user,
    providerId: 'test-as',
    tokens,
  });
  // Refresh once through the token route: the link's tokens are re-sealed (a second generation to find).
  const released = await request(stack.app)
    .post(`/v1/links/${link.id}/token`)
    .set('Authorization', stack.services.bearer('crm-hs'))
    .send({ force_refresh: true });
  assert.equal(released.status, 200);
  const current = (await store.getLink(link.id))!;
  await request(stack.app)
    .delete(`/v1/links/${link.id}`)
    .set('Authorization', stack.services.bearer('crm-hs'))
    .expect(200);
  await eventually(
    async () =>
      parseRecord((await store.getRevocation(link.id))!.record).provider_revocation.status ===
      'confirmed',
  );
  await eventually(async () => (await store.countJobs()) === 0);
  return {
    linkId: link.id,
    sealed: current.tokens!,
    tokens: [
      tokens.accessToken.reveal(),
      tokens.refreshToken!.reveal(),
      String(released.body.access_token),
    ],
  };
}

describe('after a revoke, a scan of the store finds no sealed token and no wrapped data key for the link', () => {
  let oidc: OidcServer;
  before(async () => {
    oidc = await startOidcServer({ mode: 'oauth', clients: [CLIENT], rotateRefreshTokens: true });
  });
  after(async () => {
    await oidc.close();
  });

  it('when the store is SQLite, then the database file bytes hold neither the sealed tokens nor the wrapped key', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lv-revoke-scan-'));
    const store = await createStore(
      { kind: 'sqlite', sqlitePath: join(dir, 'lv.db') },
      { metrics: new Metrics() },
    );
    const stack = await startStack({
      store,
      providers: [
        {
          entry: oidc.catalogueEntry('test-as'),
          clientId: CLIENT.client_id,
          clientSecret: CLIENT.client_secret,
        },
      ],
    });
    try {
      const kept = await stack.createLink({
        tenantId: 'acme',
        userId: 'keeper',
        providerId: 'test-as',
        tokens: await obtainTokens(stack, oidc, 'test-as', 'keeper', REDIRECT),
      });
      const gone = await revokeCompletely(stack, oidc, store, 'leaver');
      const scan = (): { files: string[]; bytes: string } => {
        const files = readdirSync(dir).filter((f) => f.startsWith('lv.db'));
        return {
          files,
          bytes: files.map((f) => readFileSync(join(dir, f)).toString('latin1')).join('\n'),
        };
      };
      // A copy taken while the service runs (database, WAL and shared-memory files), then the file at rest.
      const running = scan();
      await stack.close();
      await store.close();
      const atRest = scan();
      for (const { files, bytes } of [running, atRest]) {
        // The scan can see sealed records: the link that was not revoked is in the files.
        assert.deepEqual(found(bytes, kept.tokens!), ['ct', 'edk', 'tag']);
        assert.deepEqual(found(bytes, gone.sealed), [], `found in ${files.join(', ')}`);
        for (const token of gone.tokens) assert.equal(bytes.includes(token), false);
      }
    } finally {
      await stack.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('when the store is Redis, then no value of any key holds the sealed tokens or the wrapped key', async () => {
    const redis: RedisServerHandle = await startRedis();
    const store = await createStore(
      { kind: 'redis', redisUrl: redis.url, clusterNodes: null, keyPrefix: 'lv' },
      { metrics: new Metrics() },
    );
    const stack = await startStack({
      store,
      providers: [
        {
          entry: oidc.catalogueEntry('test-as'),
          clientId: CLIENT.client_id,
          clientSecret: CLIENT.client_secret,
        },
      ],
    });
    const reader = new Redis(redis.url);
    try {
      const kept = await stack.createLink({
        tenantId: 'acme',
        userId: 'keeper',
        providerId: 'test-as',
        tokens: await obtainTokens(stack, oidc, 'test-as', 'keeper', REDIRECT),
      });
      const gone = await revokeCompletely(stack, oidc, store, 'leaver');
      const dump = await dumpEveryKey(reader);
      assert.deepEqual(found(dump, kept.tokens!), ['ct', 'edk', 'tag']);
      assert.deepEqual(found(dump, gone.sealed), []);
      for (const token of gone.tokens) assert.equal(dump.includes(token), false);
    } finally {
      reader.disconnect();
      await stack.close();
      await store.close();
      await redis.stop();
    }
  });
});

/** Every key and every value in the database, as text (each type read with its own command). */
async function dumpEveryKey(client: Redis): Promise<string> {
  const parts: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await client.scan(cursor, 'COUNT', 500);
    cursor = next;
    for (const key of keys) {
      const type = await client.type(key);
      let value: unknown;
      if (type === 'string') value = await client.get(key);
      else if (type === 'hash') value = await client.hgetall(key);
      else if (type === 'list') value = await client.lrange(key, 0, -1);
      else if (type === 'set') value = await client.smembers(key);
      else if (type === 'zset') value = await client.zrange(key, '0', '-1');
      else if (type === 'stream') value = await client.xrange(key, '-', '+');
      else value = `<${type}>`;
      parts.push(key, JSON.stringify(value));
    }
  } while (cursor !== '0');
  return parts.join('\n');
}
