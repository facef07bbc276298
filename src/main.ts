import { existsSync } from 'node:fs';
import { createServer, type Server, type ServerResponse } from 'node:http';
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
}

/**
 * Builds the feature routers and background tasks from the adapters.
 *
 * ===== FEATURES: the lead wires the connect flow, token release, links, grants and revocation
 * here (push their routers onto `routers`, background workers onto `background`, extra
 * readiness checks onto `readiness`). Keep this the only place that composes them. =====
 */
export async function buildFeatures(deps: FeatureDeps): Promise<Features> {
  const routers: Router[] = [];
  const readiness: ReadinessCheck[] = [];
  const background: BackgroundTask[] = [];
  void deps;
  return { routers, readiness, background };
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

    const httpServer = createServer(app);
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
