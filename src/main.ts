import { existsSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Router } from 'express';
import type { Logger } from 'pino';
import { createApp } from './app.js';
import { ConfigError, type Config } from './config.js';
import type { ReadinessCheck } from './http/health-routes.js';
import type { KeyProvider } from './keys/key-provider.js';
import { createKeyProvider } from './keys/create-key-provider.js';
import { createVault, type Vault } from './keys/vault.js';
import { createLogger } from './log.js';
import { Metrics } from './metrics.js';
import { createStore } from './store/create-store.js';
import type { Store } from './store/store.js';
import { DEV_SERVICE_ID, DEV_SERVICE_KID, loadDevService } from './auth/dev-service.js';
import { createConnectRouter } from './http/connect-routes.js';
import { createGrantRouter } from './http/grant-routes.js';
import { createLinkRouter } from './http/link-routes.js';
import { createRevocationRouter } from './http/revocation-routes.js';
import { createServiceAuth } from './http/service-auth.js';
import { createTokenFastPath } from './http/token-fast-path.js';
import { createTokenRouter } from './http/token-routes.js';
import { createWebRouter } from './http/web-routes.js';
import { auditKeyLoader, createAudit } from './links/audit/audit.js';
import { createBackgroundRefresher } from './links/release/background-refresher.js';
import { CatalogueError, loadCatalogue, type Catalogue } from './providers/catalogue.js';
import { captureMetadata, createConnect } from './links/connect/connect.js';
import { createGrants } from './links/release/grants.js';
import { createRefreshCoordinator } from './links/release/refresh-coordinator.js';
import { createRevocation } from './links/revoke/revocation.js';
import { createRevocationWorker, revocationWorkerOptionsFrom } from './links/revoke/revocation-worker.js';
import { createSessions } from './links/connect/sessions.js';
import { createTokenRelease } from './links/release/token-release.js';
import { createOAuthClient } from './oauth/openid-oauth-client.js';
import { createSandboxProvider } from './sandbox/sandbox-provider.js';

/**
 * The composition root: config → logger → store → key provider → vault → features → HTTP
 * server, and the graceful shutdown that undoes it in reverse. Nothing else builds adapters.
 */

function findPackageRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}

/**
 * The directory holding package.json and config/ (the built-in catalogue config/providers.json
 * lives there), the same whether this runs from src/ through tsx or compiled from dist/src/.
 */
export const PACKAGE_ROOT = findPackageRoot(dirname(fileURLToPath(import.meta.url)));

/** Something that runs in the background (refresh scheduler, queue worker, dormant-link sweep). */
export interface BackgroundTask {
  readonly name: string;
  /** Stops scheduling new work and resolves when work in progress has finished. */
  stop(): Promise<void>;
}

export interface FeatureDeps {
  readonly config: Config;
  readonly store: Store;
  readonly keys: KeyProvider;
  readonly vault: Vault;
  readonly metrics: Metrics;
  readonly log: Logger;
}

export interface Features {
  readonly routers: Router[];
  readonly readiness: ReadinessCheck[];
  readonly background: BackgroundTask[];
  /**
   * Answers the token route's plain case without Express (the hot path) and returns true, or
   * returns false without touching the request, which then goes to the Express app.
   */
  readonly fastPath: ((req: IncomingMessage, res: ServerResponse) => boolean) | null;
}

/**
 * Builds the features from the adapters: the catalogue (with the Sandbox CRM outside production),
 * the OAuth client, service authentication, the audit log, sessions and the connect flow, grants
 * and token release with its refresh coordinator, revocation and its worker, and the pages.
 * This is the only place that composes them.
 */
export async function buildFeatures(deps: FeatureDeps): Promise<Features> {
  const { config, store, keys, vault, metrics, log } = deps;
  const now = Date.now;
  const background: BackgroundTask[] = [];

  const sandbox = config.sandbox ? await createSandboxProvider({ publicUrl: config.publicUrl, log, returnOrigins: config.returnUrlAllowlist }) : null;
  if (sandbox) background.push({ name: 'sandbox', stop: () => sandbox.close() });
  let catalogue: Catalogue;
  try {
    catalogue = loadCatalogue({ builtinFile: join(PACKAGE_ROOT, 'config', 'providers.json'), config, extraEntries: sandbox ? [sandbox] : [] });
  } catch (err) {
    if (err instanceof CatalogueError) throw new ConfigError(config.providersFile ? 'LINKVAULT_PROVIDERS_FILE' : 'config/providers.json', err.message);
    throw err;
  }
  const oauth = createOAuthClient({ catalogue, config, log });

  const dev = loadDevService(config);
  if (dev?.created) log.warn({ key_file: dev.keyFile }, 'created the development service key; `linkvault dev-token` prints a 5-minute service JWT');
  const services = dev && !config.services.some((s) => s.id === DEV_SERVICE_ID || s.keys.has(DEV_SERVICE_KID)) ? [...config.services, dev.service] : config.services;
  const serviceIds = new Set(services.map((s) => s.id));
  const auth = createServiceAuth({ services, audience: config.audience });

  // A loader, not an awaited key: a key service that is down at start fails releases closed
  // (503 audit_unavailable) instead of failing the start.
  const audit = createAudit({ store, hmacKey: auditKeyLoader({ store, vault, currentKeyId: () => keys.currentKeyId(), now }), now });

  const sessions = createSessions({ config, store, catalogue, now });
  const connect = createConnect({ config, store, sessions, catalogue, oauth, vault, metrics, log, audit, now });
  background.push({ name: 'connect', stop: () => connect.idle() });

  const grants = createGrants({ store, audit, isService: (id) => serviceIds.has(id), now });
  const revocation = createRevocation({ store, vault, catalogue, audit, log, metrics, now });
  const coordinator = createRefreshCoordinator({
    store,
    vault,
    oauth,
    audit,
    metrics,
    log,
    now,
    lockTtlMs: config.refreshLockTtlMs,
    // Metadata a provider may change on refresh (Pipedrive's and Zoho's api_domain, Salesforce's
    // instance_url), re-read under the same api_hosts check as at connect.
    captureMetadata: (providerId, extra) => {
      const entry = catalogue.get(providerId);
      return entry ? captureMetadata(entry, extra) : {};
    },
    // A refresh that loses to a revocation hands its new tokens to the durable revocation queue.
    revocation,
  });
  const release = createTokenRelease({ store, vault, coordinator, audit, metrics, log, now });
  if (config.backgroundRefresh) {
    const refresher = createBackgroundRefresher({ store, coordinator, log, now, intervalMs: config.backgroundRefreshIntervalMs, leadMs: config.refreshLeadMs });
    refresher.start();
    background.push(refresher);
  }

  const revocationWorker = createRevocationWorker({ store, vault, oauth, catalogue, revocation, audit, metrics, log, now, options: revocationWorkerOptionsFrom(config) });
  revocationWorker.start();
  background.push(revocationWorker);

  const routers: Router[] = [
    createConnectRouter({ config, sessions, connect, serviceAuth: auth }),
    createLinkRouter({ store, sessions, serviceAuth: auth }),
    createTokenRouter({ auth, release }),
    createGrantRouter({ auth, grants }),
    createRevocationRouter({ revocation, auth, sessions }),
    createWebRouter({ config, sessions, catalogue }),
  ];
  if (sandbox) routers.push(sandbox.router);

  const fastPath = createTokenFastPath({ auth, release, metrics, log, hsts: config.publicUrl.startsWith('https:') });
  return { routers, readiness: [], background, fastPath };
}

export interface ServiceOverrides {
  /** Logger to use instead of one built from config.logLevel (tests pass one writing to a stream). */
  readonly log?: Logger;
  readonly metrics?: Metrics;
  /** A store the caller owns (not closed by close()). */
  readonly store?: Store;
  /** A key provider the caller owns. */
  readonly keys?: KeyProvider;
}

export interface RunningService {
  readonly server: Server;
  /** Loopback URL of the listening server (http://127.0.0.1:<port>), for local clients and tests. */
  readonly url: string;
  readonly config: Config;
  readonly log: Logger;
  /**
   * Graceful shutdown, idempotent: readiness turns 503 and new connections are refused, requests
   * in flight finish (bounded by config.shutdownTimeoutMs, then their sockets are destroyed),
   * background tasks stop, the store closes.
   */
  close(): Promise<void>;
}

/** A redis URL for the log: host and port only, never the password it may carry. */
function describeRedisUrl(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}`;
  } catch {
    return 'redis';
  }
}

function logSetup(config: Config, log: Logger): void {
  const store = config.store;
  if (store.kind === 'sqlite') log.info({ store: 'sqlite', sqlite_path: store.sqlitePath }, 'store: SQLite file');
  else if (store.clusterNodes) log.info({ store: 'redis', mode: 'cluster', seeds: store.clusterNodes.map((n) => `${n.host}:${n.port}`), key_prefix: store.keyPrefix }, 'store: Redis Cluster');
  else log.info({ store: 'redis', mode: 'standalone', redis: describeRedisUrl(store.redisUrl ?? ''), key_prefix: store.keyPrefix }, 'store: Redis');

  const keys = config.keys;
  if (keys.kind === 'local') {
    log.info({ keys: 'local', key_file: keys.localKeyFile, previous_key_files: keys.previousKeyFiles.length }, 'key provider: local master key file');
  } else {
    log.info({ keys: 'aws-kms', kms_key_id: keys.kmsKeyId, region: keys.region, endpoint: keys.endpoint }, 'key provider: AWS KMS');
  }

  if (!config.production) {
    const parts = [
      store.kind === 'sqlite' ? `SQLite file ${store.sqlitePath}` : 'Redis store',
      keys.kind === 'local' ? `master key ${keys.localKeyFile}${keys.mayGenerate ? ' (generated when missing)' : ''}` : 'AWS KMS keys',
      ...(config.sandbox ? ['the sandbox provider enabled'] : []),
      ...(config.allowInsecureProviderUrls ? ['http:// provider URLs allowed'] : []),
    ];
    log.warn(
      { node_env: config.nodeEnv },
      `DEVELOPMENT SETUP - NOT FOR PRODUCTION: ${parts.join(', ')}. Set NODE_ENV=production and move to Redis and KMS (README: "Moving to Redis and KMS").`,
    );
  }
}

/**
 * Builds every adapter, starts listening on config.host:config.port (port 0 picks a free one) and
 * returns the running service. Rejects (closing whatever it opened) when an adapter cannot start.
 */
export async function startService(config: Config, overrides: ServiceOverrides = {}): Promise<RunningService> {
  const log = overrides.log ?? createLogger({ level: config.logLevel });
  const metrics = overrides.metrics ?? new Metrics();

  const store = overrides.store ?? (await createStore(config.store, { metrics, log }));
  const ownsStore = overrides.store === undefined;
  let server: Server | undefined;
  let features: Features | undefined;
  try {
    const keys = overrides.keys ?? (await createKeyProvider(config.keys, { metrics, log }));
    const vault = createVault({ keys, metrics, maxEntries: config.keyCache.maxEntries, maxAgeMs: config.keyCache.maxAgeMs });
    features = await buildFeatures({ config, store, keys, vault, metrics, log });

    let closing = false;
    const app = createApp({
      config,
      store,
      keys,
      metrics,
      log,
      routers: features.routers,
      readiness: [
        // First in the list so a load balancer sees 503 as soon as shutdown starts.
        {
          name: 'accepting',
          check: async () => {
            if (closing) throw new Error('shutting down');
          },
        },
        ...features.readiness,
      ],
    });

    const fastPath = features.fastPath;
    const httpServer = createServer(fastPath ? (req, res) => void (fastPath(req, res) || app(req, res)) : app);
    server = httpServer;
    // Longer than common load-balancer idle timeouts (60 s), so the balancer, not us, closes
    // idle connections and never reuses one we are closing; headersTimeout must exceed it.
    httpServer.keepAliveTimeout = 65_000;
    httpServer.headersTimeout = 66_000;
    httpServer.requestTimeout = 60_000;
    // While closing, every response still to be written says Connection: close, so clients do not
    // reuse a connection we are about to end (RFC 9112 §9.6). Responses begun before the signal are
    // tracked so that they get the header too.
    const unanswered = new Set<ServerResponse>();
    httpServer.prependListener('request', (_req, res) => {
      if (closing) {
        res.setHeader('Connection', 'close');
        return;
      }
      unanswered.add(res);
      res.once('close', () => unanswered.delete(res));
    });

    await new Promise<void>((resolve, reject) => {
      httpServer.once('error', reject);
      httpServer.listen(config.port, config.host ?? undefined, () => {
        httpServer.off('error', reject);
        resolve();
      });
    });
    const port = (httpServer.address() as AddressInfo).port;
    const url = `http://127.0.0.1:${port}`;
    logSetup(config, log);
    log.info({ port, host: config.host ?? '*', public_url: config.publicUrl }, `linkvault listening on port ${port}`);

    const running = features;
    let closed: Promise<void> | undefined;
    const close = (): Promise<void> =>
      (closed ??= (async () => {
        closing = true;
        for (const res of unanswered) if (!res.headersSent) res.setHeader('Connection', 'close');
        unanswered.clear();
        log.info({ timeout_ms: config.shutdownTimeoutMs }, 'shutting down: refusing new connections, finishing requests in flight');
        const drained = new Promise<void>((resolve) => httpServer.close(() => resolve()));
        // Node closes idle keep-alive sockets on close(); do it explicitly so none holds shutdown open.
        httpServer.closeIdleConnections();
        const stopping = Promise.allSettled(running.background.map((task) => task.stop()));
        let timer: NodeJS.Timeout | undefined;
        const timedOut = await Promise.race([
          drained.then(() => false),
          new Promise<boolean>((resolve) => {
            timer = setTimeout(() => resolve(true), config.shutdownTimeoutMs);
          }),
        ]);
        clearTimeout(timer);
        if (timedOut) {
          log.warn({ timeout_ms: config.shutdownTimeoutMs }, 'shutdown timeout: destroying connections still open');
          httpServer.closeAllConnections();
          await drained;
        }
        for (const [i, outcome] of (await stopping).entries()) {
          if (outcome.status === 'rejected') log.error({ task: running.background[i]!.name, err: outcome.reason }, 'background task did not stop cleanly');
        }
        if (ownsStore) await store.close();
        log.info('stopped');
      })());

    return { server: httpServer, url, config, log, close };
  } catch (err) {
    if (!(err instanceof ConfigError)) log.fatal({ err }, 'cannot start');
    // Undo what was opened so a failed start leaves no socket, timer or connection behind.
    if (server?.listening) await new Promise<void>((resolve) => server!.close(() => resolve()));
    if (features) await Promise.allSettled(features.background.map((task) => task.stop()));
    if (ownsStore) await store.close().catch(() => undefined);
    throw err;
  }
}
