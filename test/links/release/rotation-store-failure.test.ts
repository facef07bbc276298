import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import request from 'supertest';
import { loadConfig } from '../../../src/config.js';
import { createKeyProvider } from '../../../src/keys/create-key-provider.js';
import { createVault } from '../../../src/keys/vault.js';
import { openTokenSet } from '../../../src/links/sealing/token-vault.js';
import { createLogger } from '../../../src/log.js';
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
import { startStack, type Stack } from '../../support/stack.js';
import { startProviderSwitch, type ProviderSwitch } from '../revoke/provider-switch.js';
import { eventually, obtainTokens } from '../revoke/revocation-harness.js';

/**
 * Issue 10 item 2: Redis dies (SIGKILL; AOF, appendfsync always) while a refresh is at a provider
 * that rotates refresh tokens (node-oidc-provider, which also rejects a spent refresh token). The
 * provider's answer arrives while Redis is down. The new token set must not be lost: the caller
 * gets 503 (never a 200 before the set is stored), the set is spooled on the node and its write
 * retried, and once Redis is back (restarted from the same AOF) the link is active and holds the
 * rotated refresh token, which the provider accepts. Other callers of the link get fast 503s meanwhile,
 * not a wait on the refresh lock that ends in 409.
 */

/** Spooled entries in `dir` (0 when the directory does not exist). */
function spooled(dir: string): number {
  return existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.json')).length : 0;
}

const REDIRECT = 'http://127.0.0.1:3000/v1/oauth/callback/rot-as';
const CLIENT = {
  client_id: 'rot-client',
  client_secret: 'rot-secret-0123456789-abcdef',
  redirect_uris: [REDIRECT],
};
const TRIALS = 3;

interface Harness {
  readonly stack: Stack;
  readonly lines: string[];
}

describe('a store failure while the provider rotates the refresh token', () => {
  let oidc: OidcServer;
  let front: ProviderSwitch;
  let redis: RedisServerHandle;
  let store: Store;
  const spoolDirs: string[] = [];
  const serviceStores: Store[] = [];
  const stacks: Stack[] = [];

  /** A spool directory of its own (a node's disk); share it between harnesses to model a restart. */
  function newSpoolDir(): string {
    const dir = mkdtempSync(join(tmpdir(), 'lv-rotation-spool-'));
    spoolDirs.push(dir);
    return dir;
  }

  /** The check, with a store that is still reconnecting counted as "not yet". */
  function until(check: () => Promise<boolean>, timeoutMs = 20_000): Promise<boolean> {
    return eventually(() => check().catch(() => false), timeoutMs);
  }

  /** Restarts Redis from its AOF dir and resolves once the store's client answers again. */
  async function restartRedis(): Promise<void> {
    await redis.restart();
    await until(async () => (await store.ping(), true));
  }

  async function startHarness(
    spoolDir: string,
    env: Record<string, string> = {},
  ): Promise<Harness> {
    const lines: string[] = [];
    const entry = oidc.catalogueEntry('rot-as', { token_url: `${front.url}/token` });
    const stack = await startStack({
      env: {
        LINKVAULT_ALLOW_INSECURE_PROVIDER_URLS: 'true',
        LINKVAULT_PROVIDER_TIMEOUT_SECONDS: '5',
        LINKVAULT_ROTATION_SPOOL_DIR: spoolDir,
        ...env,
      },
      providers: [
        {
          entry,
          credentials: { clientId: CLIENT.client_id, clientSecret: CLIENT.client_secret },
          allowInsecureUrls: true,
        },
      ],
      log: createLogger({
        level: 'info',
        destination: { write: (s: string) => void lines.push(s) },
      }),
      auditHmacKey: randomBytes(32),
      store,
    });
    stacks.push(stack);
    return { stack, lines };
  }

  async function expiredLink(stack: Stack, userId: string) {
    const obtained = await obtainTokens(stack, oidc, 'rot-as', userId, REDIRECT);
    const link = await stack.createLink({
      tenantId: 'acme',
      userId,
      providerId: 'rot-as',
      tokens: { ...obtained, expiresAtMs: Date.now() - 1000 },
    });
    return { obtained, link };
  }

  function askToken(stack: Stack, linkId: string) {
    return request(stack.app)
      .post(`/v1/links/${linkId}/token`)
      .set('Authorization', stack.services.bearer('crm-hs'))
      .send({})
      .then((r) => r);
  }

  /**
   * Holds the link's refresh at the provider, SIGKILLs Redis, then lets the provider answer (it
   * rotates). Resolves the refresh's answer and the refresh token the provider issued.
   */
  async function rotateWhileRedisDies(stack: Stack, linkId: string) {
    const answersBefore = front.answers('/token').length;
    front.set('/token', { kind: 'hold' });
    const inFlight = askToken(stack, linkId);
    await front.held(1);
    await redis.kill('SIGKILL');
    front.release();
    const answered = await inFlight;
    const issued = front.answers('/token').slice(answersBefore);
    assert.equal(issued.length, 1, 'the provider answered one refresh');
    return {
      answered,
      newRefresh: String(issued[0]!.refresh_token),
      newAccess: String(issued[0]!.access_token),
    };
  }

  before(async () => {
    oidc = await startOidcServer({ mode: 'oauth', clients: [CLIENT], rotateRefreshTokens: true });
    front = await startProviderSwitch(oidc.url);
    redis = await startRedis({ appendonly: true, appendfsync: 'always' });
    store = await createStore(
      { kind: 'redis', redisUrl: redis.url, clusterNodes: null, keyPrefix: 'lvrot' },
      { metrics: new Metrics() },
    );
  });
  // Each test starts with Redis up, whatever the previous one left.
  beforeEach(async () => {
    if (
      !(await store.ping().then(
        () => true,
        () => false,
      ))
    )
      await restartRedis();
  });
  after(async () => {
    for (const s of stacks) await s.close();
    for (const s of serviceStores) await s.close();
    await store?.close();
    await redis?.stop();
    await front?.close();
    await oidc?.close();
    for (const dir of spoolDirs) rmSync(dir, { recursive: true, force: true });
  });

  it(`when Redis is SIGKILLed mid-refresh and restarted from its AOF, then the link stays active with the rotated refresh token (${TRIALS} trials)`, async (t) => {
    const spoolDir = newSpoolDir();
    const { stack, lines } = await startHarness(spoolDir);
    let lost = 0;
    for (let trial = 1; trial <= TRIALS; trial++) {
      const { obtained, link } = await expiredLink(stack, `user-${trial}`);
      const { answered, newRefresh, newAccess } = await rotateWhileRedisDies(stack, link.id);

      // Never a 200 before the rotated set is stored.
      assert.equal(answered.status, 503, JSON.stringify(answered.body));
      assert.equal(answered.body.code, 'store_unavailable');
      assert.ok(Number(answered.headers['retry-after']) >= 1);
      // Spooled on the node, sealed: no plaintext token in the file.
      const files = readdirSync(spoolDir).filter((f) => f.endsWith('.json'));
      assert.equal(files.length, 1, 'the new token set is spooled before the caller is answered');
      const onDisk = readFileSync(join(spoolDir, files[0]!), 'utf8');
      assert.ok(!onDisk.includes(newRefresh) && !onDisk.includes(newAccess));
      assert.equal(stack.coordinator.pendingRotations(), 1);

      await redis.restart();
      // A caller right after the restart: a fast 503 while the write is retried, or the new token
      // once stored; never the lock wait that ended in 409 reauth_required.
      const waiter = await askToken(stack, link.id);
      if (waiter.status === 200) assert.equal(waiter.body.access_token, newAccess);
      else {
        assert.equal(waiter.status, 503, JSON.stringify(waiter.body));
        assert.equal(waiter.body.code, 'store_unavailable');
        assert.ok(Number(waiter.headers['retry-after']) >= 1);
      }

      await until(async () => stack.coordinator.pendingRotations() === 0);
      const stored = (await store.getLink(link.id))!;
      const tokens = await openTokenSet(stack.vault, stored, stored.tokens!);
      if (stored.status !== 'active' || tokens.refreshToken?.reveal() !== newRefresh) lost++;
      assert.equal(stored.status, 'active');
      assert.equal(
        tokens.refreshToken?.reveal(),
        newRefresh,
        'the rotated refresh token is stored',
      );
      assert.equal(readdirSync(spoolDir).filter((f) => f.endsWith('.json')).length, 0);

      // The lock was released: the next caller is served the stored token at once.
      const next = await askToken(stack, link.id);
      assert.equal(next.status, 200);
      assert.equal(next.body.access_token, newAccess);

      // The provider rejects the spent refresh token and accepts the stored one.
      assert.equal((await oidc.introspect(obtained.refreshToken!.reveal())).active, false);
      const again = await stack.oauth.refresh({
        providerId: 'rot-as',
        endpointVariables: {},
        refreshToken: tokens.refreshToken!,
      });
      assert.ok(again.accessToken.reveal().length > 0);
    }
    assert.equal(lost, 0);
    t.diagnostic(`links lost to a Redis SIGKILL mid-refresh: ${lost} of ${TRIALS}`);

    const metrics = stack.metrics.render();
    assert.match(
      metrics,
      new RegExp(
        `linkvault_rotation_pending_store_total\\{provider="rot-as",outcome="pending"\\} ${TRIALS}`,
      ),
    );
    assert.match(
      metrics,
      new RegExp(
        `linkvault_rotation_pending_store_total\\{provider="rot-as",outcome="stored"\\} ${TRIALS}`,
      ),
    );
    const log = lines.join('');
    assert.match(log, /rotation pending store: the store refused a refreshed token set/);
    // No token in any log line.
    for (const e of front.answers('/token')) {
      assert.ok(!log.includes(String(e.refresh_token)));
      assert.ok(!log.includes(String(e.access_token)));
    }
    const events = await stack.auditEvents();
    assert.equal(events.filter((e) => e.type === 'link.needs_reauth').length, 0);
  });

  /**
   * Real service processes on the test's Redis: their configuration (one directory, so one master
   * key and, per process, `<dir>/data/rotation-spool`) and a link connected through the provider
   * with an expired access token, sealed with the key the services read.
   */
  async function serviceSetup(userId: string) {
    const dir = mkdtempSync(join(tmpdir(), 'lv-rotation-service-'));
    spoolDirs.push(dir);
    const services = makeTestServices();
    const entry = oidc.catalogueEntry('rot-as', { token_url: `${front.url}/token` });
    const env: Record<string, string> = {
      ...writeServiceConfig({
        dir,
        services,
        providers: [{ entry, clientId: CLIENT.client_id, clientSecret: CLIENT.client_secret }],
      }),
      LINKVAULT_LOG_LEVEL: 'info',
      LINKVAULT_PROVIDER_TIMEOUT_SECONDS: '5',
      LINKVAULT_BACKGROUND_REFRESH: 'false',
      LINKVAULT_STORE: 'redis',
      LINKVAULT_REDIS_URL: redis.url,
      // A prefix of its own: nothing (audit key, locks) shared with the other tests.
      LINKVAULT_REDIS_PREFIX: `lvsvc${randomUUID().slice(0, 8)}`,
    };
    const config = loadConfig(env, dir);
    const metrics = new Metrics();
    const store = await createStore(config.store, { metrics });
    serviceStores.push(store);
    const keys = await createKeyProvider(config.keys, { metrics });
    const vault = createVault({ keys, metrics, maxEntries: 10, maxAgeMs: 60_000 });
    const { oauth } = createTestOAuth({
      entry,
      clientId: CLIENT.client_id,
      clientSecret: CLIENT.client_secret,
    });
    const link = await connectViaProvider({
      oauth,
      completeLogin: (u, o) => oidc.completeLogin(u, o),
      store,
      vault,
      providerId: 'rot-as',
      linkId: `lnk_${randomUUID()}`,
      tenantId: 'acme',
      userId,
      accountId: userId,
      redirectUri: REDIRECT,
      accessTokenExpiresAtMs: Date.now() - 1000,
      connectedAtMs: Date.now() - 600_000,
    });
    await store.putGrant({
      id: `grt_${randomUUID()}`,
      serviceId: 'crm-sync',
      tenantId: null,
      providerId: null,
      linkId: link.id,
      scopes: null,
      purpose: 'tests',
      createdAtMs: Date.now(),
      expiresAtMs: null,
    });
    const auth = { authorization: services.bearer('crm-hs'), 'content-type': 'application/json' };
    const ask = async (service: ServiceProcess) => {
      const res = await fetch(`${service.url}/v1/links/${link.id}/token`, {
        method: 'POST',
        headers: auth,
        body: '{}',
        // A guard against a hang, not a timing assertion.
        signal: AbortSignal.timeout(30_000),
      });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    return { dir, env, vault, link, ask, store };
  }

  it('when the service process is SIGKILLed while Redis is down, then the spooled set is stored when it starts again', async () => {
    const { dir, env, vault, link, ask: askOf, store } = await serviceSetup('user-crash');
    let service: ServiceProcess | undefined;
    const ask = () => askOf(service!);
    try {
      service = await startServiceProcess({ cwd: dir, env });
      const answersBefore = front.answers('/token').length;
      front.set('/token', { kind: 'hold' });
      const inFlight = ask();
      await front.held(1);
      await redis.kill('SIGKILL');
      front.release();
      const answered = await inFlight;
      assert.equal(answered.status, 503, JSON.stringify(answered.body));
      const issued = front.answers('/token').slice(answersBefore);
      assert.equal(issued.length, 1);
      const newRefresh = String(issued[0]!.refresh_token);
      const newAccess = String(issued[0]!.access_token);
      assert.ok(
        service.lines.some((l) =>
          String(l.msg).startsWith('rotation pending store: the store refused'),
        ),
      );

      // A crash: no shutdown, nothing flushed by the process.
      await service.crash();
      const spool = join(dir, 'data', 'rotation-spool');
      assert.equal(spooled(spool), 1, 'the new token set is spooled before the caller is answered');

      await restartRedis();
      service = await startServiceProcess({ cwd: dir, env });
      await until(async () => {
        const stored = await store.getLink(link.id);
        return stored !== null && stored.version > link.version;
      });
      const stored = (await store.getLink(link.id))!;
      assert.equal(stored.status, 'active');
      const tokens = await openTokenSet(vault, stored, stored.tokens!);
      assert.equal(tokens.refreshToken?.reveal(), newRefresh);
      assert.equal((await oidc.introspect(newRefresh)).active, true);
      await until(async () => spooled(spool) === 0);
      const served = await ask();
      assert.equal(served.status, 200, JSON.stringify(served.body));
      assert.equal(served.body.access_token, newAccess);
    } finally {
      await service?.stop();
    }
  });

  it('when another replica asks once Redis is back, then it gets the rotated token, not a wait on the persisted lock that ends in 409', async (t) => {
    const { dir, env, vault, link, ask, store } = await serviceSetup('user-two-replicas');
    const replicas: ServiceProcess[] = [];
    try {
      // Each replica its own spool directory (its own node), one Redis.
      for (const node of ['a', 'b'])
        replicas.push(
          await startServiceProcess({
            cwd: dir,
            env: { ...env, LINKVAULT_ROTATION_SPOOL_DIR: join(dir, `spool-${node}`) },
          }),
        );
      const [a, b] = replicas as [ServiceProcess, ServiceProcess];
      const answersBefore = front.answers('/token').length;
      front.set('/token', { kind: 'hold' });
      const inFlight = ask(a);
      await front.held(1);
      await redis.kill('SIGKILL');
      front.release();
      const answered = await inFlight;
      assert.equal(answered.status, 503, JSON.stringify(answered.body));
      const issued = front.answers('/token').slice(answersBefore);
      assert.equal(issued.length, 1);
      const newAccess = String(issued[0]!.access_token);
      const newRefresh = String(issued[0]!.refresh_token);

      // A's refresh lock is in the AOF. B asks as soon as Redis is back: A stores its set and
      // releases the lock, and B serves the stored token (or answers a fast 503 if it asked while
      // its own client was still reconnecting). The old code made B wait for the lock's TTL, then
      // spend the spent refresh token: 409 reauth_required.
      await restartRedis();
      const askedAt = Date.now();
      // B's own store client may still be reconnecting: its fast 503s (store or audit) are retried.
      const seen: string[] = [];
      let fromB = await ask(b);
      for (let i = 0; i < 100 && fromB.status === 503; i++) {
        seen.push(String(fromB.body.code));
        assert.ok(['store_unavailable', 'audit_unavailable'].includes(String(fromB.body.code)));
        await new Promise((r) => setTimeout(r, 100));
        fromB = await ask(b);
      }
      t.diagnostic(
        `replica B answered ${fromB.status} ${Date.now() - askedAt} ms after Redis answered again (${seen.length} fast 503s first)`,
      );
      assert.equal(fromB.status, 200, `${JSON.stringify(fromB.body)} after ${seen.join(',')}`);
      assert.equal(fromB.body.access_token, newAccess);
      assert.equal(front.answers('/token').length, answersBefore + 1, 'B did not refresh again');
      const stored = (await store.getLink(link.id))!;
      assert.equal(stored.status, 'active');
      const tokens = await openTokenSet(vault, stored, stored.tokens!);
      assert.equal(tokens.refreshToken?.reveal(), newRefresh);
    } finally {
      for (const r of replicas) await r.stop();
    }
  });

  it('when the retry bound runs out while Redis is down, then the set waits in the spool and the next caller stores it', async () => {
    const { stack } = await startHarness(newSpoolDir(), {
      LINKVAULT_ROTATION_STORE_RETRY_SECONDS: '1',
    });
    const { link } = await expiredLink(stack, 'user-bound');
    const { answered, newRefresh, newAccess } = await rotateWhileRedisDies(stack, link.id);
    assert.equal(answered.status, 503);
    await until(async () => /outcome="spooled"\} 1/.test(stack.metrics.render()));
    // No longer retried in memory, still pending: callers on this node do not spend the old token.
    assert.equal(stack.coordinator.pendingRotations(), 1);
    await restartRedis();
    const served = await askToken(stack, link.id);
    assert.equal(served.status, 200, JSON.stringify(served.body));
    assert.equal(served.body.access_token, newAccess);
    const stored = (await store.getLink(link.id))!;
    const tokens = await openTokenSet(stack.vault, stored, stored.tokens!);
    assert.equal(tokens.refreshToken?.reveal(), newRefresh);
    assert.equal(stack.coordinator.pendingRotations(), 0);
  });

  it('when the link is revoked before the pending set is stored, then the revocation wins and the new tokens are revoked at the provider', async () => {
    const { stack } = await startHarness(newSpoolDir(), {
      LINKVAULT_ROTATION_STORE_RETRY_SECONDS: '1',
    });
    const { link } = await expiredLink(stack, 'user-revoked');
    const { answered, newRefresh } = await rotateWhileRedisDies(stack, link.id);
    assert.equal(answered.status, 503);
    await until(async () => /outcome="spooled"\} 1/.test(stack.metrics.render()));
    await restartRedis();
    const revoked = await request(stack.app)
      .delete(`/v1/links/${link.id}`)
      .set('Authorization', stack.services.bearer('crm-hs'));
    assert.equal(revoked.status, 200);
    // The replay (here the background refresher's call for this link, so that it runs after the
    // revocation) finds the link revoked and queues the new tokens' revocation.
    assert.equal(await stack.coordinator.refreshAhead(link.id, 0), 'skipped');
    assert.equal(stack.coordinator.pendingRotations(), 0);
    const stored = (await store.getLink(link.id))!;
    assert.equal(stored.status, 'revoked');
    assert.equal(stored.tokens, null);
    assert.match(stack.metrics.render(), /outcome="revoked"\} 1/);
    await stack.worker.runOnce();
    assert.equal((await oidc.introspect(newRefresh)).active, false);
  });
});
