import { existsSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createSecretKey, type KeyObject } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Express, Router } from 'express';
import type { Logger } from 'pino';
import { createApp } from './app.js';
import { DEV_SERVICE_ID, DEV_SERVICE_KID, loadDevService } from './auth/dev-service.js';
import { ConfigError, type Config } from './config.js';
import { createConnectRouter } from './http/connect-routes.js';
import { createGrantRouter } from './http/grant-routes.js';
import type { ReadinessCheck } from './http/health-routes.js';
import { createLinkRouter } from './http/link-routes.js';
import { createProxyPath } from './http/proxy-routes.js';
import { createRevocationRouter } from './http/revocation-routes.js';
import { createServiceAuth, type ServiceAuth } from './http/service-auth.js';
import { createTokenFastPath } from './http/token-fast-path.js';
import { createTokenRouter } from './http/token-routes.js';
import { createWebRouter } from './http/web-routes.js';
import { createKeyProvider } from './keys/create-key-provider.js';
import type { KeyProvider } from './keys/key-provider.js';
import { createVault, type Vault } from './keys/vault.js';
import { auditKeyLoader, createAudit, type Audit } from './links/audit/audit.js';
import { createAuditQuery } from './links/audit/audit-query.js';
import { createAuditExporter } from './links/audit/export/audit-exporter.js';
import { createAuditRouter } from './http/audit-routes.js';
import { WEBHOOK_JOB_KIND, withLifecycleWebhooks } from './links/webhooks/lifecycle-webhooks.js';
import { createWebhookDeliveryJob } from './links/webhooks/webhook-delivery-job.js';
import { createWebhookEndpoints } from './links/webhooks/webhook-endpoints.js';
import { createWebhookRouter } from './http/webhook-routes.js';
import { checkWebhookUrl } from './net/check-webhook-url.js';
import { createWebhookSender, type WebhookSender } from './net/webhook-sender.js';
import {
  captureMetadata,
  CONFIRMATION_EXPIRY_JOB_KIND,
  createConnect,
  type Connect,
} from './links/connect/connect.js';
import { createSessions, type Sessions } from './links/connect/sessions.js';
import { createConfirmationExpiryJob } from './links/connect/confirmation-expiry-job.js';
import { createConfirmationRouter } from './http/confirmation-routes.js';
import { createJobWorker, type JobWorker, type JobWorkerOptions } from './jobs/job-worker.js';
import { createProxy, type Proxy } from './links/proxy/proxy.js';
import { createBackgroundRefresher } from './links/release/background-refresher.js';
import { createPendingRotations } from './links/release/rotation-pending.js';
import { createRotationSpool } from './links/release/rotation-spool.js';
import { createGrants, type Grants } from './links/release/grants.js';
import {
  createRefreshCoordinator,
  type RefreshCoordinator,
} from './links/release/refresh-coordinator.js';
import { createTokenRelease, type TokenRelease } from './links/release/token-release.js';
import { createRevocation, type Revocation } from './links/revoke/revocation.js';
import {
  createRevocationWorker,
  revocationWorkerOptionsFrom,
  type RevocationWorker,
  type RevocationWorkerOptions,
} from './links/revoke/revocation-worker.js';
import { createLogger } from './log.js';
import { Metrics } from './metrics.js';
import type { OAuthClient } from './oauth/oauth-client.js';
import { createOAuthClient } from './oauth/openid-oauth-client.js';
import {
  CatalogueError,
  loadCatalogue,
  type Catalogue,
  type ExtraProvider,
} from './providers/catalogue.js';
import type { SandboxProvider } from './sandbox/sandbox-provider.js';
import { createStore } from './store/create-store.js';
import type { Store } from './store/store.js';

/**
 * The only place the adapters and the features are composed. main.ts, the CLI and every test
 * build through here, so what tests exercise is what production runs.
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

export interface Adapters {
  readonly config: Config;
  readonly store: Store;
  readonly keys: KeyProvider;
  readonly vault: Vault;
  readonly metrics: Metrics;
  readonly log: Logger;
  /** Closes what buildAdapters opened itself (not what the caller passed in). */
  close(): Promise<void>;
}

export type FeatureDeps = Omit<Adapters, 'close'>;

export interface AdapterOverrides {
  /** Logger to use instead of one built from config.logLevel (tests pass one writing to a stream). */
  readonly log?: Logger;
  readonly metrics?: Metrics;
  /** A store the caller owns (not closed by close()). */
  readonly store?: Store;
  /** A key provider the caller owns. */
  readonly keys?: KeyProvider;
  /** Wraps the store every feature uses (tests make one method fail). */
  readonly wrapStore?: (store: Store) => Store;
}

/** Builds logger, metrics, store, key provider and vault; rejects (closing what it opened) when one cannot start. */
export async function buildAdapters(
  config: Config,
  overrides: AdapterOverrides = {},
): Promise<Adapters> {
  const log = overrides.log ?? createLogger({ level: config.logLevel });
  const metrics = overrides.metrics ?? new Metrics();
  const ownStore = overrides.store
    ? null
    : await createStore(config.store, {
        metrics,
        log,
        // A shard holding the retention plus a backlog of unexported events (as many again, at least
        // 100,000: seconds of releases at full speed) has not been exported or trimmed for a while:
        // appends to it fail closed (audit_unavailable) long before the store runs out.
        auditMaxEvents: auditShardBound(config.audit.storeMaxEvents),
      });
  const baseStore = overrides.store ?? ownStore!;
  let keys: KeyProvider;
  try {
    keys = overrides.keys ?? (await createKeyProvider(config.keys, { metrics, log }));
  } catch (err) {
    await ownStore?.close().catch(() => undefined);
    throw err;
  }
  const vault = createVault({
    keys,
    metrics,
    maxEntries: config.keyCache.maxEntries,
    maxAgeMs: config.keyCache.maxAgeMs,
  });
  const store = overrides.wrapStore ? overrides.wrapStore(baseStore) : baseStore;
  return {
    config,
    store,
    keys,
    vault,
    metrics,
    log,
    close: async () => void (await ownStore?.close()),
  };
}

/** Loads the sandbox module; injectable so a test can stand for a missing development dependency. */
export type SandboxLoader = () => Promise<{
  createSandboxProvider: typeof import('./sandbox/sandbox-provider.js').createSandboxProvider;
}>;

const loadSandboxModule: SandboxLoader = () => import('./sandbox/sandbox-provider.js');

export interface FeatureOptions {
  /** Catalogue entries registered in code besides the sandbox (tests' loopback providers). */
  readonly extraProviders?: readonly ExtraProvider[];
  /** An OAuth client to use instead of the openid-client adapter. */
  readonly oauth?: OAuthClient;
  readonly now?: () => number;
  /** Overrides of the revocation worker's options derived from config. */
  readonly revocationWorker?: Partial<RevocationWorkerOptions>;
  /** Refresh lock TTL (default config.refreshLockTtlMs). */
  readonly refreshLockTtlMs?: number;
  /** How long a caller waits for another replica's refresh (coordinator default when absent). */
  readonly refreshWaitForPeerMs?: number;
  /** Start the background refresher when config.backgroundRefresh is on (default true). */
  readonly startRefresher?: boolean;
  /** Start the revocation worker's loop and sweeps (default true). */
  readonly startWorker?: boolean;
  /** Sends webhook deliveries (default: node:http(s) with the SSRF checks of net/public-address.ts). */
  readonly webhookSender?: WebhookSender;
  /** Start the audit exporter (or, without an export directory, the retention) (default true). */
  readonly startAuditExporter?: boolean;
  /** The audit HMAC key, or a loader of it (default: loaded from the store on first use). */
  readonly auditHmacKey?: KeyObject | Buffer | (() => Promise<KeyObject>);
  readonly loadSandbox?: SandboxLoader;
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
  readonly catalogue: Catalogue;
  readonly oauth: OAuthClient;
  readonly auth: ServiceAuth;
  readonly audit: Audit;
  readonly sessions: Sessions;
  readonly connect: Connect;
  readonly grants: Grants;
  readonly revocation: Revocation;
  /** Runs the confirmation-expiry jobs (tests call runOnce). */
  readonly confirmationWorker: JobWorker;
  readonly coordinator: RefreshCoordinator;
  readonly release: TokenRelease;
  readonly proxy: Proxy;
  readonly worker: RevocationWorker;
  readonly sandbox: SandboxProvider | null;
}

/** The confirmation worker: few jobs, each one store read and at most one revocation (no provider call). */
const CONFIRMATION_WORKER_OPTIONS: JobWorkerOptions = {
  pollIntervalMs: 5_000,
  batchSize: 32,
  concurrency: 4,
  leaseMs: 60_000,
  backoffBaseMs: 5_000,
  backoffMaxMs: 600_000,
};
const CONFIRMATION_WORKER_STOP_WAIT_MS = 5_000;

async function startSandbox(
  config: Config,
  log: Logger,
  load: SandboxLoader,
): Promise<SandboxProvider | null> {
  if (!config.sandbox) return null;
  let module: Awaited<ReturnType<SandboxLoader>>;
  try {
    module = await load();
  } catch (err) {
    log.debug({ err }, 'the sandbox module could not be loaded');
    throw new ConfigError(
      'LINKVAULT_SANDBOX',
      'the sandbox needs the development dependency oidc-provider, which cannot be loaded: install the development dependencies (npm install) or set LINKVAULT_SANDBOX=false',
    );
  }
  return module.createSandboxProvider({
    publicUrl: config.publicUrl,
    log,
    returnOrigins: config.returnUrlAllowlist,
  });
}

/**
 * Builds the features from the adapters: the catalogue (with the Sandbox CRM outside production),
 * the OAuth client, service authentication, the audit log, sessions and the connect flow, grants
 * and token release with its refresh coordinator, revocation and its worker, and the pages.
 */
export async function buildFeatures(
  deps: FeatureDeps,
  options: FeatureOptions = {},
): Promise<Features> {
  const { config, store, keys, vault, metrics, log } = deps;
  const now = options.now ?? Date.now;
  const background: BackgroundTask[] = [];

  const sandbox = await startSandbox(config, log, options.loadSandbox ?? loadSandboxModule);
  if (sandbox) background.push({ name: 'sandbox', stop: () => sandbox.close() });
  try {
    let catalogue: Catalogue;
    try {
      catalogue = loadCatalogue({
        builtinFile: join(PACKAGE_ROOT, 'config', 'providers.json'),
        config,
        extraEntries: [...(options.extraProviders ?? []), ...(sandbox ? [sandbox] : [])],
      });
    } catch (err) {
      if (err instanceof CatalogueError)
        throw new ConfigError(
          config.providersFile ? 'LINKVAULT_PROVIDERS_FILE' : 'config/providers.json',
          err.message,
        );
      throw err;
    }
    const oauth = options.oauth ?? createOAuthClient({ catalogue, config, log });

    const dev = loadDevService(config);
    if (dev?.created)
      log.warn(
        { key_file: dev.keyFile },
        'created the development service key; `linkvault dev-token` prints a 5-minute service JWT',
      );
    const services =
      dev && !config.services.some((s) => s.id === DEV_SERVICE_ID || s.keys.has(DEV_SERVICE_KID))
        ? [...config.services, dev.service]
        : config.services;
    const serviceIds = new Set(services.map((s) => s.id));
    const auth = createServiceAuth({
      services,
      audience: config.audience,
      failuresPerMinute: config.rateLimitPerMinute,
      trustedProxyHops: config.trustedProxyHops,
    });

    // A loader, not an awaited key: a key service that is down at start fails releases closed
    // (503 audit_unavailable) instead of failing the start.
    const auditHmacKey =
      options.auditHmacKey ??
      auditKeyLoader({ store, vault, currentKeyId: () => keys.currentKeyId(), now });
    const auditLog = createAudit({ store, hmacKey: auditHmacKey, now });
    const exporter = createAuditExporter({
      store,
      dir: config.audit.exportDir,
      key: async () =>
        typeof auditHmacKey === 'function'
          ? auditHmacKey()
          : Buffer.isBuffer(auditHmacKey)
            ? createSecretKey(auditHmacKey)
            : auditHmacKey,
      maxStoreEvents: config.audit.storeMaxEvents,
      log,
      now,
      onPass: (pass) => {
        metrics.auditExported.inc({}, pass.exported);
        metrics.auditTrimmed.inc({}, pass.trimmed);
      },
      onFailure: () => metrics.auditExportFailures.inc(),
    });
    if (options.startAuditExporter !== false) exporter.start();
    background.push({ name: 'audit exporter', stop: () => exporter.stop() });
    const auditQuery = createAuditQuery({ store });
    // Lifecycle webhooks are a projection of the audit trail (links/webhooks/lifecycle-webhooks.ts).
    let wakeWorker = (): void => undefined;
    const audit = withLifecycleWebhooks(auditLog, {
      store,
      log,
      metrics,
      now,
      onQueued: () => wakeWorker(),
    });
    const webhookEndpoints = createWebhookEndpoints({
      store,
      vault,
      now,
      checkUrl: (url) => checkWebhookUrl(url, config.production),
    });
    const webhookSender =
      options.webhookSender ??
      createWebhookSender({ publicOnly: config.production, timeoutMs: WEBHOOK_TIMEOUT_MS });

    const sessions = createSessions({ config, store, catalogue, now });
    const revocation = createRevocation({ store, vault, catalogue, audit, log, metrics, now });
    const connect = createConnect({
      config,
      store,
      sessions,
      catalogue,
      oauth,
      vault,
      metrics,
      log,
      audit,
      revocation,
      now,
    });
    background.push({ name: 'connect', stop: () => connect.idle() });
    // Discards pending_confirmation links left unconfirmed: a durable job per link on the shared queue.
    const confirmationWorker = createJobWorker({
      name: 'confirmation worker',
      store,
      handlers: {
        [CONFIRMATION_EXPIRY_JOB_KIND]: createConfirmationExpiryJob({ connect, log }),
      },
      log,
      now,
      options: CONFIRMATION_WORKER_OPTIONS,
    });
    if (options.startWorker !== false) confirmationWorker.start();
    background.push({
      name: 'confirmation-worker',
      stop: () => confirmationWorker.stop(CONFIRMATION_WORKER_STOP_WAIT_MS),
    });

    const grants = createGrants({ store, audit, isService: (id) => serviceIds.has(id), now });
    // A refreshed token set the store refuses is spooled on the node and retried (rotation-pending.ts).
    const rotations = createPendingRotations({
      store,
      vault,
      audit,
      revocation,
      metrics,
      log,
      now,
      spool: createRotationSpool(config.rotationSpoolDir),
      retryForMs: config.rotationStoreRetryMs,
    });
    rotations.start(config.backgroundRefreshIntervalMs);
    background.push({ name: 'rotation-spool', stop: () => rotations.stop() });
    const coordinator = createRefreshCoordinator({
      store,
      vault,
      oauth,
      audit,
      metrics,
      log,
      now,
      lockTtlMs: options.refreshLockTtlMs ?? config.refreshLockTtlMs,
      ...(options.refreshWaitForPeerMs === undefined
        ? {}
        : { waitForPeerMs: options.refreshWaitForPeerMs }),
      // Metadata a provider may change on refresh (Pipedrive's and Zoho's api_domain, Salesforce's
      // instance_url), re-read under the same api_hosts check as at connect.
      captureMetadata: (providerId, extra) => {
        const entry = catalogue.get(providerId);
        return entry ? captureMetadata(entry, extra) : {};
      },
      // A refresh that loses to a revocation hands its new tokens to the durable revocation queue.
      revocation,
      rotations,
    });
    const release = createTokenRelease({
      store,
      vault,
      coordinator,
      audit,
      metrics,
      log,
      now,
      // An opened token set is kept no longer than the data key that opens it (none: no cache).
      openedTokenTtlMs: Math.min(
        30_000,
        config.keyCache.maxEntries > 0 ? config.keyCache.maxAgeMs : 0,
      ),
    });
    const proxy = createProxy({ release, catalogue, audit, metrics, log, limits: config.proxy });
    background.push({ name: 'proxy', stop: async () => proxy.close() });
    if (config.backgroundRefresh && options.startRefresher !== false) {
      const refresher = createBackgroundRefresher({
        store,
        coordinator,
        log,
        now,
        intervalMs: config.backgroundRefreshIntervalMs,
        leadMs: config.refreshLeadMs,
      });
      refresher.start();
      background.push(refresher);
    }

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
      options: { ...revocationWorkerOptionsFrom(config), ...options.revocationWorker },
      otherJobs: {
        [WEBHOOK_JOB_KIND]: createWebhookDeliveryJob({
          store,
          vault,
          sender: webhookSender,
          metrics,
          log,
          now,
        }),
      },
    });
    wakeWorker = () => worker.wake();
    if (options.startWorker !== false) worker.start();
    background.push(worker);

    const routers: Router[] = [
      createConnectRouter({ config, sessions, connect, serviceAuth: auth }),
      createConfirmationRouter({ connect, serviceAuth: auth }),
      createLinkRouter({ store, sessions, serviceAuth: auth }),
      createTokenRouter({ auth, release }),
      createGrantRouter({ auth, grants, store }),
      createRevocationRouter({ revocation, auth, sessions, store }),
      createWebRouter({ config, sessions, catalogue }),
      createWebhookRouter({ auth, endpoints: webhookEndpoints }),
      createAuditRouter({ auditQuery, sessions, auth }),
    ];
    if (sandbox) routers.push(sandbox.router);

    const tokenFastPath = createTokenFastPath({
      auth,
      release,
      metrics,
      log,
      hsts: config.publicUrl.startsWith('https:'),
    });
    // The proxy streams bodies, so it is answered before Express (whose JSON parser would read them).
    const proxyPath = createProxyPath({
      auth,
      proxy,
      metrics,
      log,
      hsts: config.publicUrl.startsWith('https:'),
    });
    const fastPath = (req: IncomingMessage, res: ServerResponse): boolean =>
      proxyPath(req, res) || tokenFastPath(req, res);
    return {
      routers,
      readiness: [],
      background,
      fastPath,
      catalogue,
      oauth,
      auth,
      audit,
      sessions,
      connect,
      grants,
      revocation,
      confirmationWorker,
      coordinator,
      release,
      proxy,
      worker,
      sandbox,
    };
  } catch (err) {
    await Promise.allSettled(background.map((task) => task.stop()));
    throw err;
  }
}

/** Events one audit shard may hold before appends to it fail closed: the retention plus a backlog. */
export function auditShardBound(storeMaxEvents: number): number {
  return storeMaxEvents + Math.max(storeMaxEvents, 100_000);
}

/** One webhook delivery attempt, connect to answer; well inside the job worker's lease. */
const WEBHOOK_TIMEOUT_MS = 10_000;

/** The Express app over the adapters and features; `readiness` checks come first (shutdown's 503). */
export function buildApp(
  deps: FeatureDeps,
  features: Features,
  readiness: readonly ReadinessCheck[] = [],
): Express {
  const { config, store, keys, metrics, log } = deps;
  return createApp({
    config,
    store,
    keys,
    metrics,
    log,
    routers: features.routers,
    readiness: [...readiness, ...features.readiness],
  });
}

/** The request listener: the token fast path, then the Express app. */
export function buildListener(
  app: Express,
  features: Pick<Features, 'fastPath'>,
): (req: IncomingMessage, res: ServerResponse) => void {
  const fastPath = features.fastPath;
  return fastPath ? (req, res) => void (fastPath(req, res) || app(req, res)) : app;
}
