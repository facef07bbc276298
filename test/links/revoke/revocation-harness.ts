/**
 * The revocation stack for tests, built from the real pieces (no mocks): a SQLite file store of its
 * own or a Store the test gives (e.g. on a real redis-server), the local key provider + vault, the
 * catalogue (entries the test gives, pointing at real loopback peers), the openid-client adapter,
 * audit, token release, sessions, revocation + its worker, all mounted in the real express app.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { createApp } from '../../../src/app.js';
import { loadConfig, type Config } from '../../../src/config.js';
import { createLinkRouter } from '../../../src/http/link-routes.js';
import { createRevocationRouter } from '../../../src/http/revocation-routes.js';
import { createServiceAuth } from '../../../src/http/service-auth.js';
import { createTokenRouter } from '../../../src/http/token-routes.js';
import { LocalKeyProvider } from '../../../src/keys/local-key-provider.js';
import { createVault, type Vault } from '../../../src/keys/vault.js';
import { createAudit, type Audit } from '../../../src/links/audit/audit.js';
import { loadCatalogue, type Catalogue } from '../../../src/providers/catalogue.js';
import { createRefreshCoordinator } from '../../../src/links/release/refresh-coordinator.js';
import { createRevocation, type Revocation } from '../../../src/links/revoke/revocation.js';
import { createRevocationWorker, type RevocationWorker, type RevocationWorkerOptions } from '../../../src/links/revoke/revocation-worker.js';
import { createSessions, type Sessions } from '../../../src/links/connect/sessions.js';
import { createTokenRelease } from '../../../src/links/release/token-release.js';
import { sealTokenSet } from '../../../src/links/sealing/token-vault.js';
import { Metrics } from '../../../src/metrics.js';
import type { OAuthClient, TokenSet } from '../../../src/oauth/oauth-client.js';
import { createOAuthClient } from '../../../src/oauth/openid-oauth-client.js';
import { Secret } from '../../../src/secret.js';
import { SqliteStore } from '../../../src/store/sqlite/sqlite-store.js';
import type { Store } from '../../../src/store/store.js';
import type { LinkRecord } from '../../../src/links/link.js';
import { makeTestServices, type TestServices } from '../../support/service-jwt.js';

export interface StackOptions {
  /** A store the test owns (it closes it); default a SQLite file of the stack's own, closed by close(). */
  readonly store?: Store;
  /** Raw snake_case catalogue entries (http:// allowed), each enabled with the given credentials. */
  readonly providers: readonly { readonly entry: Record<string, unknown>; readonly clientId: string; readonly clientSecret: string }[];
  readonly worker?: Partial<RevocationWorkerOptions>;
  /** Start the worker's loop (default true). */
  readonly startWorker?: boolean;
  readonly providerTimeoutSeconds?: number;
  /** An OAuth client to use instead of the openid-client adapter (never given in these tests; kept for symmetry with main). */
  readonly oauth?: OAuthClient;
  /** Logger for every part (default: silent). */
  readonly log?: Logger;
}

export interface Stack {
  readonly config: Config;
  readonly store: Store;
  readonly vault: Vault;
  readonly catalogue: Catalogue;
  readonly oauth: OAuthClient;
  readonly audit: Audit;
  readonly revocation: Revocation;
  readonly worker: RevocationWorker;
  readonly sessions: Sessions;
  readonly services: TestServices;
  readonly metrics: Metrics;
  readonly app: ReturnType<typeof createApp>;
  /** Stores an active link holding `tokens`, sealed, with a grant for crm-sync. */
  createLink(input: { tenantId: string; userId: string; providerId: string; tokens: TokenSet; lastUsedAtMs?: number | null; createdAtMs?: number }): Promise<LinkRecord>;
  /** A session bearer for one user of one tenant. */
  sessionToken(tenantId: string, userId: string): Promise<string>;
  /** Every audit event so far. */
  auditEvents(): Promise<{ type: string; data: Record<string, unknown> }[]>;
  close(): Promise<void>;
}

/** A token set as a provider would hand it over. */
export function tokenSet(accessToken: string, refreshToken: string | null, expiresInSeconds = 3600): TokenSet {
  return {
    accessToken: new Secret(accessToken),
    refreshToken: refreshToken === null ? null : new Secret(refreshToken),
    idToken: null,
    tokenType: 'bearer',
    expiresAtMs: Date.now() + expiresInSeconds * 1000,
    scopes: ['openid', 'offline_access'],
    extra: {},
  };
}

const quiet = pino({ level: 'silent' });

export async function startStack(options: StackOptions): Promise<Stack> {
  const dir = mkdtempSync(join(tmpdir(), 'lv-revoke-'));
  const builtin = join(dir, 'providers.json');
  writeFileSync(builtin, JSON.stringify({ providers: [] }));
  const services = makeTestServices();
  const config = loadConfig(
    {
      NODE_ENV: 'test',
      LINKVAULT_PUBLIC_URL: 'http://127.0.0.1:3000',
      LINKVAULT_ALLOW_INSECURE_PROVIDER_URLS: 'true',
      LINKVAULT_PROVIDER_TIMEOUT_SECONDS: String(options.providerTimeoutSeconds ?? 5),
      LINKVAULT_SANDBOX: 'false',
    },
    dir,
  );
  const metrics = new Metrics();
  const keys = await LocalKeyProvider.load({ keyFile: join(dir, 'master.key'), mayGenerate: true, metrics });
  const vault = createVault({ keys, metrics, maxEntries: 1000, maxAgeMs: 60_000 });
  const catalogue = loadCatalogue({
    builtinFile: builtin,
    extraFile: null,
    config,
    extraEntries: options.providers.map((p) => ({ entry: p.entry, credentials: { clientId: p.clientId, clientSecret: p.clientSecret }, allowInsecureUrls: true })),
  });
  const now = Date.now;
  const log = options.log ?? quiet;
  const store = options.store ?? new SqliteStore({ path: join(dir, 'lv.db'), log });
  const audit = createAudit({ store, hmacKey: randomBytes(32), now });
  const oauth = options.oauth ?? createOAuthClient({ catalogue, config, log });
  const revocation = createRevocation({ store, vault, catalogue, audit, log, metrics, now });
  const worker = createRevocationWorker({
    store,
    vault,
    oauth,
    catalogue,
    revocation,
    audit,
    metrics,
    log,
    now,
    options: { pollIntervalMs: 50, backoffBaseMs: 100, backoffMaxMs: 1000, takeoverGraceMs: 500, ratePerSecond: 1000, burst: 1000, ...(options.worker ?? {}) },
  });
  const sessions = createSessions({ config, store, catalogue, now });
  // As main.ts: a refresh that loses to a revocation queues its tokens' revocation durably.
  const coordinator = createRefreshCoordinator({ store, vault, oauth, audit, metrics, log, now, lockTtlMs: config.refreshLockTtlMs, revocation });
  const release = createTokenRelease({ store, vault, coordinator, audit, metrics, log, now });
  const auth = createServiceAuth({ services: services.services, audience: services.audience });
  const app = createApp({
    config,
    store,
    keys,
    metrics,
    log,
    routers: [createTokenRouter({ auth, release }), createLinkRouter({ store, sessions, serviceAuth: auth }), createRevocationRouter({ revocation, auth, sessions })],
  });
  if (options.startWorker !== false) worker.start();

  return {
    config,
    store,
    vault,
    catalogue,
    oauth,
    audit,
    revocation,
    worker,
    sessions,
    services,
    metrics,
    app,
    async createLink(input) {
      const id = `lnk_${randomUUID()}`;
      const ref = { id, tenantId: input.tenantId, providerId: input.providerId };
      const sealed = await sealTokenSet(vault, ref, input.tokens, null);
      const at = input.createdAtMs ?? now();
      const link: LinkRecord = {
        id,
        tenantId: input.tenantId,
        userId: input.userId,
        providerId: input.providerId,
        status: 'active',
        version: 0,
        providerAccountId: null,
        grantedScopes: ['openid', 'offline_access'],
        metadata: {},
        endpointVariables: {},
        tokens: sealed,
        accessTokenExpiresAtMs: input.tokens.expiresAtMs,
        createdAtMs: at,
        updatedAtMs: at,
        lastRefreshedAtMs: null,
        lastUsedAtMs: input.lastUsedAtMs ?? null,
      };
      const saved = await store.saveLink(link, null);
      if (!saved) throw new Error('createLink: link exists');
      await store.putGrant({ id: `grt_${randomUUID()}`, serviceId: 'crm-sync', tenantId: null, providerId: null, linkId: id, scopes: null, purpose: 'tests', createdAtMs: now(), expiresAtMs: null });
      return saved;
    },
    async sessionToken(tenantId, userId) {
      const created = await sessions.createSession({ tenantId, userId }, 'crm-sync');
      return created.session_token;
    },
    async auditEvents() {
      const out: { type: string; data: Record<string, unknown> }[] = [];
      let after: string | undefined;
      for (;;) {
        const page = await store.readAudit(after, 1000);
        for (const e of page) out.push({ type: e.type, data: { ...e.data } });
        if (page.length < 1000) return out;
        after = page[page.length - 1]!.seq;
      }
    },
    async close() {
      await worker.stop();
      if (!options.store) await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Real tokens from a real authorization server: the authorization code flow through the adapter, login driven by the server's test hook. */
export async function obtainTokens(
  stack: Pick<Stack, 'oauth'>,
  server: { completeLogin(url: URL, options: { accountId: string }): Promise<URL> },
  providerId: string,
  accountId: string,
  redirectUri: string,
): Promise<TokenSet> {
  const start = await stack.oauth.startAuthorization({ providerId, endpointVariables: {}, redirectUri });
  const callbackUrl = await server.completeLogin(start.url, { accountId });
  const done = await stack.oauth.completeAuthorization({ providerId, endpointVariables: {}, callbackUrl, checks: start.checks });
  return done.tokens;
}

/**
 * Resolves when `check` holds, re-checking every `everyMs`; rejects after `timeoutMs`. For
 * outcomes that arrive from a background worker, which gives nothing to await directly.
 */
export async function eventually<T>(check: () => Promise<T | null | undefined | false>, timeoutMs = 10_000, everyMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}
