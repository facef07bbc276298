import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Express } from 'express';
import type { Logger } from 'pino';
import { createApp } from '../../src/app.js';
import { loadConfig, type Config } from '../../src/config.js';
import { createGrantRouter } from '../../src/http/grant-routes.js';
import { createServiceAuth, type ServiceAuth } from '../../src/http/service-auth.js';
import { createTokenFastPath } from '../../src/http/token-fast-path.js';
import { createTokenRouter } from '../../src/http/token-routes.js';
import { LocalKeyProvider } from '../../src/keys/local-key-provider.js';
import { createVault, type Vault } from '../../src/keys/vault.js';
import { createAudit, loadAuditKey, type Audit } from '../../src/links/audit/audit.js';
import { createGrants, type GrantInput, type Grants } from '../../src/links/release/grants.js';
import { createRefreshCoordinator, type RefreshCoordinator } from '../../src/links/release/refresh-coordinator.js';
import { createTokenRelease, type TokenRelease } from '../../src/links/release/token-release.js';
import { sealTokenSet } from '../../src/links/sealing/token-vault.js';
import { createLogger } from '../../src/log.js';
import { Metrics } from '../../src/metrics.js';
import type { OAuthTokenClient, TokenSet } from '../../src/oauth/oauth-client.js';
import { Secret } from '../../src/secret.js';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';
import type { Store } from '../../src/store/store.js';
import type { GrantRecord } from '../../src/links/release/grants.js';
import type { LinkRecord } from '../../src/links/link.js';
import { makeTestServices, type TestServices } from './service-jwt.js';

/**
 * The token-release feature assembled in-process on real parts: a SQLite file store (or the
 * store given), the local key provider with a fresh master key, the real vault, audit, grants,
 * coordinator and routes inside H3's createApp. The OAuth client is given by the test (the real
 * adapter against a real or stand-in provider); without one, any provider call fails the test.
 */

export interface ReleaseHarnessOptions {
  readonly store?: Store;
  /** Wraps the store the harness uses (e.g. to make one method fail); applied after the audit key is loaded. */
  readonly wrapStore?: (store: Store) => Store;
  readonly oauth?: OAuthTokenClient;
  readonly now?: () => number;
  readonly lockTtlMs?: number;
  readonly waitForPeerMs?: number;
  readonly services?: TestServices;
  readonly captureMetadata?: (providerId: string, extra: Readonly<Record<string, unknown>>) => Record<string, string>;
}

export interface SeedLinkOptions {
  readonly id?: string;
  readonly tenantId?: string;
  readonly userId?: string;
  readonly providerId?: string;
  readonly grantedScopes?: readonly string[];
  readonly accessToken?: string;
  readonly refreshToken?: string | null;
  readonly expiresAtMs?: number | null;
  readonly status?: LinkRecord['status'];
  readonly metadata?: Record<string, string>;
  readonly endpointVariables?: Record<string, string>;
  /** When the link was connected (default: 10 minutes ago, so a token due for refresh is not "just issued"). */
  readonly createdAtMs?: number;
}

export interface ReleaseHarness {
  readonly app: Express;
  /** The request listener main.ts uses: the token fast path, then Express. */
  readonly listener: (req: IncomingMessage, res: ServerResponse) => void;
  readonly config: Config;
  readonly store: Store;
  readonly vault: Vault;
  readonly keys: LocalKeyProvider;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly services: TestServices;
  readonly auth: ServiceAuth;
  readonly audit: Audit;
  readonly grants: Grants;
  readonly coordinator: RefreshCoordinator;
  readonly release: TokenRelease;
  /** Seals a token set and creates the link through the store. */
  seedLink(options?: SeedLinkOptions): Promise<LinkRecord>;
  /** Creates a grant through the domain (audited), as an admin would. */
  addGrant(input: Partial<GrantInput> & { serviceId: string }): Promise<GrantRecord>;
  /** Everything logged so far. */
  logText(): string;
  close(): Promise<void>;
}

export const refuseProviderCalls: OAuthTokenClient = {
  refresh: () => Promise.reject(new Error('this test expected no provider call (refresh)')),
  revoke: () => Promise.reject(new Error('this test expected no provider call (revoke)')),
};

let seq = 0;

export async function createReleaseHarness(options: ReleaseHarnessOptions = {}): Promise<ReleaseHarness> {
  const dir = mkdtempSync(join(tmpdir(), 'lv-release-'));
  const now = options.now ?? Date.now;
  const config = loadConfig({ LINKVAULT_STORE: 'sqlite', LINKVAULT_SQLITE_PATH: join(dir, 'lv.db'), LINKVAULT_LOCAL_KEY_FILE: join(dir, 'master.key'), LINKVAULT_LOG_LEVEL: 'debug' }, dir);
  const lines: string[] = [];
  const log = createLogger({ level: 'debug', destination: { write: (s: string) => void lines.push(s) } });
  const metrics = new Metrics();
  const ownsStore = !options.store;
  const baseStore = options.store ?? new SqliteStore({ path: join(dir, 'lv.db'), log });
  const keys = await LocalKeyProvider.load({ keyFile: join(dir, 'master.key'), mayGenerate: true, metrics });
  const vault = createVault({ keys, metrics, maxEntries: 1000, maxAgeMs: 300_000 });
  const services = options.services ?? makeTestServices();
  const auth = createServiceAuth({ services: services.services, audience: services.audience });
  const hmacKey = await loadAuditKey({ store: baseStore, vault, currentKeyId: () => keys.currentKeyId(), now });
  const store = options.wrapStore ? options.wrapStore(baseStore) : baseStore;
  const audit = createAudit({ store, hmacKey, now });
  const serviceIds = new Set(services.services.map((s) => s.id));
  const grants = createGrants({ store, audit, isService: (id) => serviceIds.has(id), now });
  const oauth = options.oauth ?? refuseProviderCalls;
  const coordinator = createRefreshCoordinator({
    store,
    vault,
    oauth,
    audit,
    metrics,
    log,
    now,
    lockTtlMs: options.lockTtlMs ?? 15_000,
    ...(options.waitForPeerMs === undefined ? {} : { waitForPeerMs: options.waitForPeerMs }),
    ...(options.captureMetadata ? { captureMetadata: options.captureMetadata } : {}),
  });
  const release = createTokenRelease({ store, vault, coordinator, audit, metrics, log, now });
  const app = createApp({
    config,
    store,
    keys,
    metrics,
    log,
    routers: [createTokenRouter({ auth, release }), createGrantRouter({ auth, grants })],
  });

  const fastPath = createTokenFastPath({ auth, release, metrics, log, hsts: false });
  const listener = (req: IncomingMessage, res: ServerResponse): void => {
    if (!fastPath(req, res)) app(req, res);
  };

  async function seedLink(o: SeedLinkOptions = {}): Promise<LinkRecord> {
    const at = now();
    const id = o.id ?? `lnk_test_${process.pid}_${++seq}`;
    const link: LinkRecord = {
      id,
      tenantId: o.tenantId ?? 'tenant-a',
      userId: o.userId ?? 'user-1',
      providerId: o.providerId ?? 'acme',
      status: o.status ?? 'active',
      version: 0,
      providerAccountId: null,
      grantedScopes: o.grantedScopes ?? ['read', 'write'],
      metadata: o.metadata ?? {},
      endpointVariables: o.endpointVariables ?? {},
      tokens: null,
      accessTokenExpiresAtMs: o.expiresAtMs === undefined ? at + 3_600_000 : o.expiresAtMs,
      createdAtMs: o.createdAtMs ?? at - 600_000,
      updatedAtMs: at,
      lastRefreshedAtMs: null,
      lastUsedAtMs: null,
    };
    const tokens: TokenSet = {
      accessToken: new Secret(o.accessToken ?? `at-${id}`),
      refreshToken: o.refreshToken === null ? null : new Secret(o.refreshToken ?? `rt-${id}`),
      idToken: null,
      tokenType: 'bearer',
      expiresAtMs: link.accessTokenExpiresAtMs,
      scopes: link.grantedScopes,
      extra: {},
    };
    const sealed = await sealTokenSet(vault, link, tokens, null);
    const saved = await store.saveLink({ ...link, tokens: sealed }, null);
    if (!saved) throw new Error(`seedLink: ${id} exists`);
    return saved;
  }

  return {
    app,
    listener,
    config,
    store,
    vault,
    keys,
    metrics,
    log,
    services,
    auth,
    audit,
    grants,
    coordinator,
    release,
    seedLink,
    addGrant: (input) => grants.create({ purpose: 'test', ...input }, { serviceId: 'crm-sync', requestId: 'test' }),
    logText: () => lines.join(''),
    async close() {
      if (ownsStore) await baseStore.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
