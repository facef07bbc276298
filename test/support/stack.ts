import { randomUUID, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Express } from 'express';
import type { Logger } from 'pino';
import { loadConfig, type Config } from '../../src/config.js';
import {
  buildAdapters,
  buildApp,
  buildFeatures,
  buildListener,
  type FeatureOptions,
  type Features,
} from '../../src/features.js';
import { LocalKeyProvider } from '../../src/keys/local-key-provider.js';
import type { Vault } from '../../src/keys/vault.js';
import { loadAuditKey } from '../../src/links/audit/audit.js';
import type { LinkRecord } from '../../src/links/link.js';
import type { GrantInput, GrantRecord } from '../../src/links/release/grants.js';
import { sealTokenSet } from '../../src/links/sealing/token-vault.js';
import { createLogger } from '../../src/log.js';
import { Metrics } from '../../src/metrics.js';
import type { TokenSet } from '../../src/oauth/oauth-client.js';
import type { ExtraProvider } from '../../src/providers/catalogue.js';
import { Secret } from '../../src/secret.js';
import type { Store } from '../../src/store/store.js';
import { makeTestServices, type TestServices } from './service-jwt.js';

/**
 * The whole service for in-process tests, wired by the production buildAdapters + buildFeatures
 * on real parts: a SQLite file (or a real Redis, or a store the test owns), the local key
 * provider with a fresh master key, the test's services through a real services file, and the
 * test's providers as extra catalogue entries. Tests choose only what production lets vary:
 * configuration, the clock, the OAuth client, worker timings, which background tasks run.
 */

export interface StackOptions extends Omit<FeatureOptions, 'extraProviders' | 'auditHmacKey'> {
  /** Extra environment for loadConfig (over the stack's defaults). */
  readonly env?: Readonly<Record<string, string>>;
  /** A store the test owns (not closed by close()). Default: a SQLite file of the stack's own. */
  readonly store?: Store;
  /** A Redis URL to use instead of a SQLite file. */
  readonly redisUrl?: string;
  /** Wraps the store every feature uses (e.g. to make one method fail); the audit key is loaded before. */
  readonly wrapStore?: (store: Store) => Store;
  /** Extra catalogue entries, or a function giving them once the public URL is known (with `listen`). */
  readonly providers?:
    | readonly ExtraProvider[]
    | ((publicUrl: string) => Promise<readonly ExtraProvider[]> | readonly ExtraProvider[]);
  /** Mount the built-in Sandbox CRM (default off). */
  readonly sandbox?: boolean;
  /** Listen on a loopback port first, so that the public URL is the real one (default: not listening). */
  readonly listen?: boolean;
  readonly services?: TestServices;
  /** Logger for every part (default: one at debug level whose lines logText() returns). */
  readonly log?: Logger;
  /** The audit HMAC key (default: loaded from the store at start, as production does on first use). */
  readonly auditHmacKey?: KeyObject | Buffer;
  /** Start the background refresher (default false) and the revocation worker (default false). */
  readonly startRefresher?: boolean;
  readonly startWorker?: boolean;
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

export interface CreateLinkInput {
  readonly tenantId: string;
  readonly userId: string;
  readonly providerId: string;
  readonly tokens: TokenSet;
  readonly lastUsedAtMs?: number | null;
  readonly createdAtMs?: number;
}

export interface Stack extends Omit<Features, 'routers' | 'readiness' | 'background' | 'fastPath'> {
  readonly config: Config;
  readonly store: Store;
  readonly keys: LocalKeyProvider;
  readonly vault: Vault;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly services: TestServices;
  readonly app: Express;
  /** The request listener main.ts serves: the token fast path, then Express. */
  readonly listener: (req: IncomingMessage, res: ServerResponse) => void;
  /** The public URL: the listening server's with `listen`, else config.publicUrl. */
  readonly publicUrl: string;
  /** The stack's own directory (config dir, master key, SQLite file). */
  readonly dir: string;
  /** Path of the SQLite file (null with Redis or a store given). */
  readonly sqlitePath: string | null;
  /** Seals a token set and creates the link through the store. */
  seedLink(options?: SeedLinkOptions): Promise<LinkRecord>;
  /** Stores an active link holding `tokens`, sealed, with a grant for crm-sync. */
  createLink(input: CreateLinkInput): Promise<LinkRecord>;
  /** Creates a grant through the domain (audited), as an admin would. */
  addGrant(input: Partial<GrantInput> & { serviceId: string }): Promise<GrantRecord>;
  /** A session bearer for one user of one tenant. */
  sessionToken(tenantId: string, userId: string): Promise<string>;
  /** Every audit event so far. */
  auditEvents(): Promise<AuditEventSeen[]>;
  /**
   * Every audit event so far, once `until` holds of them: for a record written after the answer,
   * which the caller does not wait for (the proxy's proxy.completed). Reads again every 20 ms for up
   * to `timeoutMs` (default 5 s), then rejects, naming what it waited for.
   */
  auditEventsWhen(
    until: (events: AuditEventSeen[]) => boolean,
    what: string,
    timeoutMs?: number,
  ): Promise<AuditEventSeen[]>;
  /** Everything logged so far (empty when a logger was given). */
  logText(): string;
  close(): Promise<void>;
}

/** An audit event as the tests read it. */
export interface AuditEventSeen {
  readonly type: string;
  readonly data: Record<string, unknown>;
}

let seq = 0;

/**
 * Seals a token set and stores an active link through the store, as a connect would leave it
 * (default: connected 10 minutes ago, so a token due for refresh is not "just issued").
 */
export async function seedSealedLink(
  deps: {
    readonly store: Pick<Store, 'saveLink'>;
    readonly vault: Vault;
    readonly now: () => number;
  },
  o: SeedLinkOptions = {},
): Promise<LinkRecord> {
  const { store, vault, now } = deps;
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

export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const dir = mkdtempSync(join(tmpdir(), 'lv-stack-'));
  let server: Server | null = null;
  let publicUrl = 'http://127.0.0.1:3000';
  if (options.listen) {
    const listening = createServer();
    await new Promise<void>((resolve) => listening.listen(0, '127.0.0.1', () => resolve()));
    server = listening;
    publicUrl = `http://127.0.0.1:${(listening.address() as AddressInfo).port}`;
  }
  const closeServer = () =>
    server
      ? new Promise<void>((resolve) => {
          server!.close(() => resolve());
          server!.closeAllConnections();
        })
      : Promise.resolve();

  try {
    const services = options.services ?? makeTestServices();
    const servicesFile = join(dir, 'services.json');
    writeFileSync(servicesFile, JSON.stringify(services.servicesFile));
    const sqlitePath = options.redisUrl || options.store ? null : join(dir, 'lv.db');
    const config = loadConfig(
      {
        NODE_ENV: 'test',
        LINKVAULT_PUBLIC_URL: publicUrl,
        LINKVAULT_SANDBOX: options.sandbox ? 'true' : 'false',
        LINKVAULT_LOCAL_KEY_FILE: join(dir, 'master.key'),
        LINKVAULT_LOG_LEVEL: 'debug',
        LINKVAULT_SERVICES_FILE: servicesFile,
        LINKVAULT_AUDIENCE: services.audience,
        ...services.env,
        ...(options.redisUrl
          ? {
              LINKVAULT_STORE: 'redis',
              LINKVAULT_REDIS_URL: options.redisUrl,
              LINKVAULT_REDIS_PREFIX: `lvt${process.pid}`,
            }
          : {
              LINKVAULT_STORE: 'sqlite',
              LINKVAULT_SQLITE_PATH: sqlitePath ?? join(dir, 'unused.db'),
            }),
        ...options.env,
      },
      dir,
    );
    const lines: string[] = [];
    const log =
      options.log ??
      createLogger({ level: 'debug', destination: { write: (s: string) => void lines.push(s) } });
    const metrics = new Metrics();
    const keys = await LocalKeyProvider.load({
      keyFile: join(dir, 'master.key'),
      mayGenerate: true,
      metrics,
    });
    const adapters = await buildAdapters(config, {
      log,
      metrics,
      keys,
      ...(options.store ? { store: options.store } : {}),
    });
    const now = options.now ?? Date.now;
    let features: Features;
    let deps: typeof adapters;
    try {
      const hmacKey =
        options.auditHmacKey ??
        (await loadAuditKey({
          store: adapters.store,
          vault: adapters.vault,
          currentKeyId: () => keys.currentKeyId(),
          now,
        }));
      deps = options.wrapStore
        ? { ...adapters, store: options.wrapStore(adapters.store) }
        : adapters;
      const providers =
        typeof options.providers === 'function'
          ? await options.providers(publicUrl)
          : (options.providers ?? []);
      const {
        env: _env,
        store: _store,
        redisUrl: _redisUrl,
        wrapStore: _wrapStore,
        providers: _providers,
        sandbox: _sandbox,
        listen: _listen,
        services: _services,
        log: _log,
        ...featureOptions
      } = options;
      features = await buildFeatures(deps, {
        ...featureOptions,
        extraProviders: providers,
        auditHmacKey: hmacKey,
        startRefresher: options.startRefresher ?? false,
        startWorker: options.startWorker ?? false,
        startAuditExporter: options.startAuditExporter ?? false,
      });
    } catch (err) {
      await adapters.close();
      throw err;
    }
    const {
      routers: _routers,
      readiness: _readiness,
      background,
      fastPath: _fastPath,
      ...built
    } = features;
    const app = buildApp(deps, features);
    const listener = buildListener(app, features);
    server?.on('request', listener);
    const store = deps.store;
    const vault = adapters.vault;

    const seedLink = (o: SeedLinkOptions = {}): Promise<LinkRecord> =>
      seedSealedLink({ store, vault, now }, o);

    async function createLink(input: CreateLinkInput): Promise<LinkRecord> {
      const id = `lnk_${randomUUID()}`;
      const sealed = await sealTokenSet(
        vault,
        { id, tenantId: input.tenantId, providerId: input.providerId },
        input.tokens,
        null,
      );
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
      await store.putGrant({
        id: `grt_${randomUUID()}`,
        serviceId: 'crm-sync',
        tenantId: null,
        providerId: null,
        linkId: id,
        scopes: null,
        purpose: 'tests',
        createdAtMs: now(),
        expiresAtMs: null,
      });
      return saved;
    }

    async function auditEvents(): Promise<AuditEventSeen[]> {
      const out: AuditEventSeen[] = [];
      let after: string | undefined;
      for (;;) {
        const page = await store.readAudit(after, 1000);
        for (const e of page) out.push({ type: e.type, data: { ...e.data } });
        if (page.length < 1000) return out;
        after = page[page.length - 1]!.seq;
      }
    }

    let closed: Promise<void> | undefined;
    return {
      ...built,
      config,
      store,
      keys,
      vault,
      metrics,
      log,
      services,
      app,
      listener,
      publicUrl,
      dir,
      sqlitePath,
      seedLink,
      createLink,
      addGrant: (input) =>
        built.grants.create(
          { purpose: 'test', ...input },
          { serviceId: 'crm-sync', requestId: 'test' },
        ),
      async sessionToken(tenantId, userId) {
        const created = await built.sessions.createSession({ tenantId, userId }, 'crm-sync');
        return created.session_token;
      },
      auditEvents,
      async auditEventsWhen(until, what, timeoutMs = 5000) {
        for (const deadline = Date.now() + timeoutMs; ;) {
          const events = await auditEvents();
          if (until(events)) return events;
          if (Date.now() >= deadline)
            throw new Error(`no audit record ${what} within ${timeoutMs} ms`);
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      },
      logText: () => lines.join(''),
      close: () =>
        (closed ??= (async () => {
          await Promise.allSettled(background.map((task) => task.stop()));
          await closeServer();
          await adapters.close();
          rmSync(dir, { recursive: true, force: true });
        })()),
    };
  } catch (err) {
    await closeServer();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

/** A token set as a provider would hand it over. */
export function tokenSet(
  accessToken: string,
  refreshToken: string | null,
  expiresInSeconds = 3600,
): TokenSet {
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
