import type { Server } from 'node:http';
import type { Logger } from 'pino';
import { ConfigError, type Config } from './config.js';
import {
  buildAdapters,
  buildApp,
  buildFeatures,
  buildListener,
  type AdapterOverrides,
  type Adapters,
  type Features,
} from './features.js';
import { metricsOnlyListener, serve, type Serving } from './http/server.js';
import { createLogger } from './log.js';

/**
 * The composition root: config → adapters → features → HTTP server, and the graceful shutdown
 * that undoes it in reverse.
 */

export type ServiceOverrides = Omit<AdapterOverrides, 'wrapStore'>;

export interface RunningService {
  readonly server: Server;
  /** Loopback URL of the listening server (http://127.0.0.1:<port>), for local clients and tests. */
  readonly url: string;
  /** Loopback URL of the metrics listener (LINKVAULT_METRICS_PORT), or null when /metrics is on the public port. */
  readonly metricsUrl: string | null;
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
  if (store.kind === 'sqlite')
    log.info({ store: 'sqlite', sqlite_path: store.sqlitePath }, 'store: SQLite file');
  else if (store.clusterNodes)
    log.info(
      {
        store: 'redis',
        mode: 'cluster',
        seeds: store.clusterNodes.map((n) => `${n.host}:${n.port}`),
        key_prefix: store.keyPrefix,
      },
      'store: Redis Cluster',
    );
  else
    log.info(
      {
        store: 'redis',
        mode: 'standalone',
        redis: describeRedisUrl(store.redisUrl ?? ''),
        key_prefix: store.keyPrefix,
      },
      'store: Redis',
    );

  const keys = config.keys;
  if (keys.kind === 'local') {
    log.info(
      {
        keys: 'local',
        key_file: keys.localKeyFile,
        previous_key_files: keys.previousKeyFiles.length,
      },
      'key provider: local master key file',
    );
  } else {
    log.info(
      { keys: 'aws-kms', kms_key_id: keys.kmsKeyId, region: keys.region, endpoint: keys.endpoint },
      'key provider: AWS KMS',
    );
  }

  if (!config.production) {
    const parts = [
      store.kind === 'sqlite' ? `SQLite file ${store.sqlitePath}` : 'Redis store',
      keys.kind === 'local'
        ? `master key ${keys.localKeyFile}${keys.mayGenerate ? ' (generated when missing)' : ''}`
        : 'AWS KMS keys',
      ...(config.sandbox ? ['the sandbox provider enabled'] : []),
      ...(config.allowInsecureProviderUrls ? ['http:// provider URLs allowed'] : []),
    ];
    log.warn(
      { node_env: config.nodeEnv },
      `DEVELOPMENT SETUP - NOT FOR PRODUCTION: ${parts.join(', ')}. Set NODE_ENV=production and move to Redis and KMS (docs/operations.md: "Moving to Redis and KMS").`,
    );
  }
}

/**
 * Builds every adapter, starts listening on config.host:config.port (port 0 picks a free one) and
 * returns the running service. Rejects (closing whatever it opened) when an adapter cannot start.
 */
export async function startService(
  config: Config,
  overrides: ServiceOverrides = {},
): Promise<RunningService> {
  const log = overrides.log ?? createLogger({ level: config.logLevel });
  let adapters: Adapters | undefined;
  let features: Features | undefined;
  let serving: Serving | undefined;
  let metricsServing: Serving | undefined;
  try {
    adapters = await buildAdapters(config, { ...overrides, log });
    features = await buildFeatures(adapters);
    const metrics = adapters.metrics;
    metrics.runtime.start();
    // First in the list so a load balancer sees 503 as soon as shutdown starts.
    const accepting = {
      name: 'accepting',
      check: async () => {
        if (serving?.closing()) throw new Error('shutting down');
      },
    };
    serving = await serve(buildListener(buildApp(adapters, features, [accepting]), features), {
      port: config.port,
      host: config.host,
      shutdownTimeoutMs: config.shutdownTimeoutMs,
      maxConnections: config.maxConnections,
      log,
    });
    if (config.metricsPort !== null) {
      // Same host as the service: the port is only as reachable as the service itself.
      metricsServing = await serve(
        metricsOnlyListener(() => metrics.render()),
        {
          port: config.metricsPort,
          host: config.host,
          shutdownTimeoutMs: config.shutdownTimeoutMs,
          maxConnections: 64,
          log,
        },
      );
    }
    logSetup(config, log);
    log.info(
      {
        port: serving.port,
        host: config.host ?? '*',
        public_url: config.publicUrl,
        ...(metricsServing ? { metrics_port: metricsServing.port } : {}),
      },
      `linkvault listening on port ${serving.port}`,
    );

    const running = { adapters, features, serving, metricsServing };
    let closed: Promise<void> | undefined;
    const close = (): Promise<void> =>
      (closed ??= (async () => {
        const drained = Promise.all([running.serving.close(), running.metricsServing?.close()]);
        const stopping = Promise.allSettled(running.features.background.map((task) => task.stop()));
        await drained;
        for (const [i, outcome] of (await stopping).entries()) {
          if (outcome.status === 'rejected')
            log.error(
              { task: running.features.background[i]!.name, err: outcome.reason },
              'background task did not stop cleanly',
            );
        }
        await running.adapters.close();
        running.adapters.metrics.runtime.stop();
        log.info('stopped');
        // The log destination writes asynchronously: nothing said during shutdown may be lost.
        await new Promise<void>((resolve) => log.flush(() => resolve()));
      })());

    return {
      server: serving.server,
      url: `http://127.0.0.1:${serving.port}`,
      metricsUrl: metricsServing ? `http://127.0.0.1:${metricsServing.port}` : null,
      config,
      log,
      close,
    };
  } catch (err) {
    if (!(err instanceof ConfigError)) log.fatal({ err }, 'cannot start');
    await serving?.close();
    adapters?.metrics.runtime.stop();
    // Undo what was opened so a failed start leaves no socket, timer or connection behind.
    if (features) await Promise.allSettled(features.background.map((task) => task.stop()));
    await adapters?.close().catch(() => undefined);
    throw err;
  }
}
