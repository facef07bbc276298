import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { loadConfig } from '../../../src/config.js';
import { createKeyProvider } from '../../../src/keys/create-key-provider.js';
import { createVault } from '../../../src/keys/vault.js';
import { openTokenSet } from '../../../src/links/sealing/token-vault.js';
import { Metrics } from '../../../src/metrics.js';
import { createStore } from '../../../src/store/create-store.js';
import type { Store } from '../../../src/store/store.js';
import { startOidcServer, type OidcServer } from '../../support/oidc-server.js';
import { connectViaProvider, createTestOAuth } from '../../support/provider-link.js';
import { makeTestServices } from '../../support/service-jwt.js';
import {
  startServiceProcess,
  writeServiceConfig,
  type ServiceProcess,
} from '../../support/service-process.js';
import { limitFileSize, liftFileSizeLimit } from '../../store/sqlite/file-size-limit.js';
import { startProviderSwitch, type ProviderSwitch } from '../revoke/provider-switch.js';
import { eventually } from '../revoke/revocation-harness.js';

/**
 * Issue 10 item 2, SQLite: the service's disk is full (its file-size limit, see file-size-limit.ts,
 * with the WAL checkpointed to empty so that the next commit must grow it) when the answer of a
 * refresh arrives from a provider that rotates (node-oidc-provider). The commit fails; the new set
 * must be spooled (a small file, under the limit), the caller answered 503, and the set stored as
 * soon as the disk has room again, without a restart.
 */

/** Spooled entries in `dir` (0 when the directory does not exist). */
function spooled(dir: string): number {
  return existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.json')).length : 0;
}

const REDIRECT = 'http://127.0.0.1:3000/v1/oauth/callback/disk-as';
const CLIENT = {
  client_id: 'disk-client',
  client_secret: 'disk-secret-0123456789-abcdef',
  redirect_uris: [REDIRECT],
};
/** Above a spool file (about 1 KB), below the WAL header plus one page frame (32 + 4120 bytes). */
const FILE_SIZE_LIMIT = 3000;

describe('a full SQLite disk while the provider rotates the refresh token', () => {
  let oidc: OidcServer;
  let front: ProviderSwitch;
  let dir: string;

  before(async () => {
    oidc = await startOidcServer({ mode: 'oauth', clients: [CLIENT], rotateRefreshTokens: true });
    front = await startProviderSwitch(oidc.url);
    dir = mkdtempSync(join(tmpdir(), 'lv-rotation-disk-'));
  });
  after(async () => {
    await front?.close();
    await oidc?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('when the commit of a rotated token set fails for lack of space, then the set is spooled and stored once the disk has room', async () => {
    const services = makeTestServices();
    const path = join(dir, 'lv.db');
    const entry = oidc.catalogueEntry('disk-as', { token_url: `${front.url}/token` });
    const env: Record<string, string> = {
      ...writeServiceConfig({
        dir,
        services,
        providers: [{ entry, clientId: CLIENT.client_id, clientSecret: CLIENT.client_secret }],
      }),
      LINKVAULT_LOG_LEVEL: 'info',
      LINKVAULT_PROVIDER_TIMEOUT_SECONDS: '5',
      LINKVAULT_BACKGROUND_REFRESH: 'false',
      LINKVAULT_STORE: 'sqlite',
      LINKVAULT_SQLITE_PATH: path,
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
    let service: ServiceProcess | undefined;
    let store: Store | undefined;
    const auth = { authorization: services.bearer('crm-hs'), 'content-type': 'application/json' };
    const ask = async (id: string) => {
      const res = await fetch(`${service!.url}/v1/links/${id}/token`, {
        method: 'POST',
        headers: auth,
        body: '{}',
        // A guard against a hang, not a timing assertion.
        signal: AbortSignal.timeout(30_000),
      });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    try {
      service = await startServiceProcess({ cwd: dir, env });
      store = await createStore(config.store, { metrics });
      const link = await connectViaProvider({
        oauth,
        completeLogin: (u, o) => oidc.completeLogin(u, o),
        store,
        vault,
        providerId: 'disk-as',
        linkId: `lnk_${randomUUID()}`,
        tenantId: 'acme',
        userId: 'user-disk',
        accountId: 'user-disk',
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

      const answersBefore = front.answers('/token').length;
      front.set('/token', { kind: 'hold' });
      const inFlight = ask(link.id);
      await front.held(1);
      // The disk fills up while the provider has the request: the WAL is emptied, and the service
      // may not grow any file past FILE_SIZE_LIMIT.
      const raw = new Database(path);
      try {
        raw.pragma('wal_checkpoint(TRUNCATE)');
      } finally {
        raw.close();
      }
      limitFileSize(service.pid, FILE_SIZE_LIMIT);
      front.release();
      const answered = await inFlight;
      assert.equal(answered.status, 503, JSON.stringify(answered.body));
      assert.equal(answered.body.code, 'store_unavailable');
      const issued = front.answers('/token').slice(answersBefore);
      assert.equal(issued.length, 1);
      const newRefresh = String(issued[0]!.refresh_token);
      const newAccess = String(issued[0]!.access_token);
      const spool = join(dir, 'data', 'rotation-spool');
      assert.equal(spooled(spool), 1, 'the new token set is spooled before the caller is answered');
      // Still the spent token in the database: the disk is full.
      assert.equal((await store.getLink(link.id))!.version, link.version);

      liftFileSizeLimit(service.pid);
      await eventually(async () => {
        const stored = await store!.getLink(link.id).catch(() => null);
        return stored !== null && stored.version > link.version;
      }, 20_000);
      const stored = (await store.getLink(link.id))!;
      assert.equal(stored.status, 'active');
      const tokens = await openTokenSet(vault, stored, stored.tokens!);
      assert.equal(tokens.refreshToken?.reveal(), newRefresh);
      assert.equal((await oidc.introspect(newRefresh)).active, true);
      const served = await ask(link.id);
      assert.equal(served.status, 200, JSON.stringify(served.body));
      assert.equal(served.body.access_token, newAccess);
      assert.equal(spooled(spool), 0);
    } finally {
      if (service?.child.exitCode === null) liftFileSizeLimit(service.pid);
      await service?.stop();
      await store?.close();
    }
  });
});
