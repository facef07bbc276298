import type { Logger } from 'pino';
import type { StoreConfig } from '../config.js';
import { Counter, type Metrics } from '../metrics.js';
import { checkRedisPersistence } from './redis/redis-persistence.js';
import { createRedisClient, describeRedisError, waitForRedisReady } from './redis/client.js';
import { RedisStore } from './redis/redis-store.js';
import { ReplicaWait } from './redis/replica-wait.js';
import { SqliteStore } from './sqlite/sqlite-store.js';
import { checkedStore } from './checked-store.js';
import type { Store } from './store.js';

/** How long start-up waits for Redis by default before giving up with store_unavailable. */
const REDIS_STARTUP_TIMEOUT_MS = 5000;

/** One replication-lag counter per Metrics registry (createStore may run more than once per process). */
const replicationLagCounters = new WeakMap<Metrics, Counter>();

/** `linkvault_store_replication_lag_total`: must-not-lose writes the replicas did not confirm in time. */
export function replicationLagCounter(metrics: Metrics): Counter {
  let counter = replicationLagCounters.get(metrics);
  if (!counter) {
    counter = metrics.add(
      new Counter(
        'linkvault_store_replication_lag_total',
        'Acknowledged Redis writes whose replicas did not confirm them within LINKVAULT_REDIS_WAIT_TIMEOUT_MS',
        ['store'],
      ),
    );
    replicationLagCounters.set(metrics, counter);
  }
  return counter;
}

/**
 * Builds the configured Store, behind the input checks of checked-store.ts. Every operation that
 * fails with store_unavailable is counted in `metrics.storeErrors{store}`. For Redis, waits until the
 * client is ready (rejects store_unavailable after `startupTimeoutMs`, default 5 s) and logs a
 * warning when persistence settings put acknowledged writes at risk (see redis-persistence.ts).
 * Where the masters have replicas, must-not-lose writes wait for them (replica-wait.ts); a write
 * they do not confirm in time stands and counts in `linkvault_store_replication_lag_total{store}`.
 */
export async function createStore(
  config: StoreConfig,
  deps: {
    metrics: Metrics;
    log?: Logger;
    startupTimeoutMs?: number;
    /** The bound of each audit shard (appends fail closed beyond it); default none. */
    auditMaxEvents?: number;
  },
): Promise<Store> {
  const auditBound =
    deps.auditMaxEvents === undefined ? {} : { auditMaxEvents: deps.auditMaxEvents };
  const onUnavailable = (): void => deps.metrics.storeErrors.inc({ store: config.kind });
  if (config.kind === 'sqlite') {
    return checkedStore(
      new SqliteStore({ path: config.sqlitePath, log: deps.log, onUnavailable, ...auditBound }),
    );
  }

  const target = config.clusterNodes
    ? { clusterNodes: config.clusterNodes }
    : config.redisUrl
      ? { url: config.redisUrl }
      : null;
  if (!target) throw new Error('redis store: set a Redis URL or cluster nodes');
  const client = createRedisClient(target);
  // Until the store is built nobody else listens: keep ioredis from printing connection errors.
  const quiet = (): void => undefined;
  client.on('error', quiet);
  try {
    await waitForRedisReady(client, deps.startupTimeoutMs ?? REDIS_STARTUP_TIMEOUT_MS);
  } catch (err) {
    client.disconnect();
    onUnavailable();
    throw err;
  } finally {
    client.off('error', quiet);
  }
  const lag = replicationLagCounter(deps.metrics);
  const replicaWait = new ReplicaWait({
    client,
    replicas: config.waitReplicas ?? null,
    timeoutMs: config.waitTimeoutMs ?? 500,
    log: deps.log,
    onMiss: () => lag.inc({ store: 'redis' }),
  });
  try {
    await replicaWait.detect();
  } catch (err) {
    // The count is read again in the background on the first writes.
    deps.log?.warn(
      { store: 'redis', err: describeRedisError(err) },
      'Redis replicas could not be counted at start',
    );
  }
  const store = new RedisStore({
    client,
    keyPrefix: config.keyPrefix,
    log: deps.log,
    onUnavailable,
    replicaWait,
    ...auditBound,
  });
  try {
    const report = await checkRedisPersistence(client);
    if (!report.ok)
      deps.log?.warn(
        { store: 'redis', problems: report.problems },
        'Redis persistence settings put acknowledged writes at risk',
      );
    if (report.unknown.length)
      deps.log?.info(
        { store: 'redis', unknown: report.unknown },
        'Redis persistence settings could not be read (CONFIG disabled); confirm them with your provider',
      );
  } catch (err) {
    deps.log?.warn(
      { store: 'redis', err: describeRedisError(err) },
      'Redis persistence settings could not be checked',
    );
  }
  return checkedStore(store);
}
