import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import {
  parseServicesFile,
  ServicesFileError,
  type ServiceDefinition,
} from './auth/services-file.js';

/**
 * The only reader of the environment. loadConfig validates every variable of docs/configuration.md
 * (and the few operational ones documented in config/example.env) and returns a frozen object.
 * An invalid value throws ConfigError whose message is one line naming the variable.
 */

/** Where a development setup listens when LINKVAULT_HOST is not set: loopback only. */
export const DEVELOPMENT_HOST = '127.0.0.1';

/** Concurrent connections accepted when LINKVAULT_MAX_CONNECTIONS is not set. */
export const DEFAULT_MAX_CONNECTIONS = 4096;

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    readonly problem: string,
  ) {
    super(`${variable}: ${problem}`);
    this.name = 'ConfigError';
  }
}

export type StoreConfig =
  | { readonly kind: 'sqlite'; readonly sqlitePath: string }
  | {
      readonly kind: 'redis';
      readonly redisUrl: string | null;
      readonly clusterNodes: readonly { readonly host: string; readonly port: number }[] | null;
      /** Key prefix, so that several deployments can share one Redis. */
      readonly keyPrefix: string;
      /**
       * Replicas that must confirm each must-not-lose write (WAIT): null = 1 where a master has
       * replicas, 0 = off. Absent: null.
       */
      readonly waitReplicas?: number | null;
      /** How long one WAIT may block before the write is let stand unconfirmed. Absent: 500. */
      readonly waitTimeoutMs?: number;
    };

export type KeysConfig =
  | {
      readonly kind: 'local';
      readonly localKeyFile: string;
      /** Older master key files kept so that data keys wrapped before a rotation still open. */
      readonly previousKeyFiles: readonly string[];
      /** Whether a missing key file may be generated (never in production). */
      readonly mayGenerate: boolean;
    }
  | {
      readonly kind: 'aws-kms';
      readonly kmsKeyId: string;
      readonly region: string | null;
      readonly endpoint: string | null;
    };

export interface ProviderCredentials {
  readonly clientId: string;
  readonly clientSecret: string;
}

export interface Config {
  readonly nodeEnv: string;
  readonly production: boolean;
  readonly port: number;
  /**
   * Listen address (LINKVAULT_HOST); null means every interface. Default: 127.0.0.1 outside
   * production (a development setup, whose sandbox signs anyone in, is not reachable from the
   * network unless asked), every interface in production.
   */
  readonly host: string | null;
  /**
   * Port of a separate listener serving only GET /metrics, on the same host (LINKVAULT_METRICS_PORT;
   * 0 picks a free one). When set, /metrics is not served on the public port. Null: /metrics on
   * the public port.
   */
  readonly metricsPort: number | null;
  /** External base URL without a trailing slash; every redirect URI is built from it. */
  readonly publicUrl: string;
  readonly store: StoreConfig;
  readonly keys: KeysConfig;
  readonly keyCache: { readonly maxEntries: number; readonly maxAgeMs: number };
  readonly audience: string;
  readonly servicesFile: string | null;
  readonly services: readonly ServiceDefinition[];
  readonly providersFile: string | null;
  /** Client credentials by provider id, from LINKVAULT_PROVIDER_<ID>_CLIENT_ID/_CLIENT_SECRET. */
  readonly providerCredentials: ReadonlyMap<string, ProviderCredentials>;
  readonly allowInsecureProviderUrls: boolean;
  /** Allowed return_to origins (scheme://host[:port]). */
  readonly returnUrlAllowlist: readonly string[];
  readonly dormantLinkDays: number | null;
  /** The audit trail's export and retention (docs/operations.md, "The audit trail"). */
  readonly audit: {
    /** Where events are exported as hash-chained JSON lines; null: kept in the store by count only. */
    readonly exportDir: string | null;
    /** Exported (or, without an export directory, retained) events the store keeps. */
    readonly storeMaxEvents: number;
  };
  readonly sessionTtlSeconds: number;
  /** The built-in Sandbox CRM provider (never in production). */
  readonly sandbox: boolean;
  readonly backgroundRefresh: boolean;
  /** How often the background refresher looks for links about to expire (LINKVAULT_BACKGROUND_REFRESH_INTERVAL_SECONDS). */
  readonly backgroundRefreshIntervalMs: number;
  /** Links whose access token expires within this window are refreshed ahead of time (LINKVAULT_REFRESH_LEAD_SECONDS). */
  readonly refreshLeadMs: number;
  /** TTL of the per-link refresh lock (LINKVAULT_REFRESH_LOCK_TTL_SECONDS); longer than one provider call. */
  readonly refreshLockTtlMs: number;
  /** How long a refreshed token set the store refused is retried in memory (LINKVAULT_ROTATION_STORE_RETRY_SECONDS). */
  readonly rotationStoreRetryMs: number;
  /** Directory where such sets are spooled, sealed, until the store takes them (LINKVAULT_ROTATION_SPOOL_DIR). */
  readonly rotationSpoolDir: string;
  readonly providerTimeoutMs: number;
  /** Limits of one proxied API call (LINKVAULT_PROXY_*): the whole exchange's time, and the bodies' sizes. */
  readonly proxy: {
    readonly timeoutMs: number;
    readonly maxRequestBytes: number;
    readonly maxResponseBytes: number;
  };
  readonly shutdownTimeoutMs: number;
  /** Concurrent connections the HTTP server accepts (LINKVAULT_MAX_CONNECTIONS); more are closed at once. */
  readonly maxConnections: number;
  /** Requests per minute (and burst) one client address may make of what unauthenticated callers can start: connect starts, OAuth callbacks, service-auth failures (LINKVAULT_RATE_LIMIT_PER_MINUTE). Per replica. */
  readonly rateLimitPerMinute: number;
  /** Proxies of ours in front of linkvault whose X-Forwarded-For entries the rate limiter believes (LINKVAULT_TRUSTED_PROXY_HOPS; 0 = none). */
  readonly trustedProxyHops: number;
  /** Connect flows one session may start over its lifetime, counted across replicas (LINKVAULT_CONNECT_STARTS_PER_SESSION). */
  readonly connectStartsPerSession: number;
  /** Default of a session's require_confirmation: new links are held until the host confirms them (LINKVAULT_REQUIRE_CONNECT_CONFIRMATION). */
  readonly requireConnectConfirmation: boolean;
  /** The host application's name, shown on the hosted pages (LINKVAULT_APP_NAME); null when unset. */
  readonly appName: string | null;
  readonly logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  /** Directory for development defaults (SQLite file, generated key). */
  readonly dataDir: string;
  /** Credentials for a catalogue provider id (looked up by its env-variable form), or null when not enabled. */
  readonly providerCredentialFor: (providerId: string) => ProviderCredentials | null;
}

type Env = Readonly<Record<string, string | undefined>>;

function text(env: Env, name: string): string | undefined {
  const value = env[name];
  return value === undefined || value.trim() === '' ? undefined : value.trim();
}

function bool(env: Env, name: string, fallback: boolean): boolean {
  const value = text(env, name);
  if (value === undefined) return fallback;
  if (value === 'true' || value === '1') return true;
  if (value === 'false' || value === '0') return false;
  throw new ConfigError(name, `must be true or false, got "${value}"`);
}

/** LINKVAULT_APP_NAME: shown to people on the hosted pages, so printable and short. */
function appNameOf(env: Env): string | null {
  const value = text(env, 'LINKVAULT_APP_NAME');
  if (value === undefined) return null;
  if (value.length > 80 || /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u.test(value))
    throw new ConfigError(
      'LINKVAULT_APP_NAME',
      'must be at most 80 printable characters (no control or format characters)',
    );
  return value;
}

function int(env: Env, name: string, fallback: number, min: number, max: number): number {
  const value = text(env, name);
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value)) throw new ConfigError(name, `must be a whole number, got "${value}"`);
  const n = Number(value);
  if (n < min || n > max)
    throw new ConfigError(name, `must be between ${min} and ${max}, got ${n}`);
  return n;
}

function url(name: string, value: string, allowHttp: boolean): URL {
  let parsed: URL;
  try {
    parsed = new URL(value);
  } catch {
    throw new ConfigError(name, `must be an absolute URL, got "${value}"`);
  }
  if (parsed.protocol !== 'https:' && !(allowHttp && parsed.protocol === 'http:')) {
    throw new ConfigError(
      name,
      `must use https${allowHttp ? ' or http' : ''}, got "${parsed.protocol}"`,
    );
  }
  if (parsed.username || parsed.password) throw new ConfigError(name, 'must not carry credentials');
  if (parsed.search || parsed.hash)
    throw new ConfigError(name, 'must not have a query or fragment');
  return parsed;
}

/** The env-variable form of a provider id: upper-cased, non-alphanumerics as `_`. */
export function providerEnvName(providerId: string): string {
  return providerId.toUpperCase().replace(/[^A-Z0-9]/g, '_');
}

function parseClusterNodes(name: string, value: string): { host: string; port: number }[] {
  return value.split(',').map((part) => {
    const seed = part.trim();
    const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(seed);
    const port = m ? Number(m[2]) : 0;
    if (!m || port < 1 || port > 65535)
      throw new ConfigError(name, `each seed must be host:port, got "${seed}"`);
    return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
  });
}

function parseOrigin(name: string, value: string, production: boolean): string {
  const parsed = url(name, value, !production);
  if (parsed.pathname !== '/' || value.replace(/\/$/, '') !== parsed.origin) {
    throw new ConfigError(
      name,
      `each entry must be an origin (scheme://host[:port]) with no path, got "${value}"`,
    );
  }
  return parsed.origin;
}

/** Reads, validates and freezes the configuration. Throws ConfigError on the first problem. */
export function loadConfig(env: Env, cwd: string = process.cwd()): Config {
  const nodeEnv = text(env, 'NODE_ENV') ?? 'development';
  const production = nodeEnv === 'production';
  const dataDir = resolve(cwd, 'data');

  const port = int(env, 'LINKVAULT_PORT', 3000, 0, 65535);
  const host = text(env, 'LINKVAULT_HOST') ?? (production ? null : DEVELOPMENT_HOST);
  if (host !== null && !/^(\[?[0-9a-fA-F:.]+\]?|[A-Za-z0-9.-]{1,253})$/.test(host)) {
    throw new ConfigError('LINKVAULT_HOST', `must be an IP address or host name, got "${host}"`);
  }
  const metricsPort =
    text(env, 'LINKVAULT_METRICS_PORT') === undefined
      ? null
      : int(env, 'LINKVAULT_METRICS_PORT', 0, 0, 65535);
  if (metricsPort !== null && metricsPort !== 0 && metricsPort === port)
    throw new ConfigError('LINKVAULT_METRICS_PORT', `must differ from LINKVAULT_PORT (${port})`);
  const publicUrlRaw = text(env, 'LINKVAULT_PUBLIC_URL') ?? `http://localhost:${port}`;
  const publicUrlParsed = url('LINKVAULT_PUBLIC_URL', publicUrlRaw, !production);
  const publicUrl = publicUrlParsed.href.replace(/\/$/, '');

  const allowInsecureProviderUrls = bool(env, 'LINKVAULT_ALLOW_INSECURE_PROVIDER_URLS', false);
  if (production && allowInsecureProviderUrls) {
    throw new ConfigError(
      'LINKVAULT_ALLOW_INSECURE_PROVIDER_URLS',
      'must not be true when NODE_ENV=production',
    );
  }

  // ---- store ----
  const storeKind = text(env, 'LINKVAULT_STORE') ?? 'sqlite';
  let store: StoreConfig;
  if (storeKind === 'sqlite') {
    store = {
      kind: 'sqlite',
      sqlitePath: resolve(cwd, text(env, 'LINKVAULT_SQLITE_PATH') ?? './data/linkvault.db'),
    };
  } else if (storeKind === 'redis') {
    const redisUrl = text(env, 'LINKVAULT_REDIS_URL') ?? null;
    const clusterRaw = text(env, 'LINKVAULT_REDIS_CLUSTER_NODES');
    if (redisUrl && clusterRaw) {
      throw new ConfigError(
        'LINKVAULT_REDIS_URL',
        'set either LINKVAULT_REDIS_URL or LINKVAULT_REDIS_CLUSTER_NODES, not both',
      );
    }
    if (!redisUrl && !clusterRaw) {
      throw new ConfigError(
        'LINKVAULT_REDIS_URL',
        'is required when LINKVAULT_STORE=redis (or set LINKVAULT_REDIS_CLUSTER_NODES for a Redis Cluster)',
      );
    }
    if (redisUrl) {
      let parsed: URL;
      try {
        parsed = new URL(redisUrl);
      } catch {
        throw new ConfigError('LINKVAULT_REDIS_URL', 'must be a redis:// or rediss:// URL');
      }
      if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') {
        throw new ConfigError(
          'LINKVAULT_REDIS_URL',
          `must be a redis:// or rediss:// URL, got "${parsed.protocol}"`,
        );
      }
    }
    const keyPrefix = text(env, 'LINKVAULT_REDIS_PREFIX') ?? 'lv';
    if (!/^[A-Za-z0-9_.-]{1,32}$/.test(keyPrefix))
      throw new ConfigError(
        'LINKVAULT_REDIS_PREFIX',
        'must be 1-32 characters of letters, digits, _ . -',
      );
    store = {
      kind: 'redis',
      redisUrl,
      clusterNodes: clusterRaw
        ? parseClusterNodes('LINKVAULT_REDIS_CLUSTER_NODES', clusterRaw)
        : null,
      keyPrefix,
      // Only when set: absent, createStore applies the defaults (1 where there are replicas, 500 ms).
      ...(text(env, 'LINKVAULT_REDIS_WAIT_REPLICAS') === undefined
        ? {}
        : { waitReplicas: int(env, 'LINKVAULT_REDIS_WAIT_REPLICAS', 0, 0, 16) }),
      // At most 800: below the Redis client's 1 s command timeout, which would cut WAIT short.
      ...(text(env, 'LINKVAULT_REDIS_WAIT_TIMEOUT_MS') === undefined
        ? {}
        : { waitTimeoutMs: int(env, 'LINKVAULT_REDIS_WAIT_TIMEOUT_MS', 500, 10, 800) }),
    };
  } else {
    throw new ConfigError('LINKVAULT_STORE', `must be sqlite or redis, got "${storeKind}"`);
  }

  // ---- keys ----
  const keysKind = text(env, 'LINKVAULT_KEYS') ?? 'local';
  let keys: KeysConfig;
  if (keysKind === 'local') {
    const localKeyFile = resolve(cwd, text(env, 'LINKVAULT_LOCAL_KEY_FILE') ?? './data/master.key');
    if (production && !existsSync(localKeyFile)) {
      throw new ConfigError(
        'LINKVAULT_LOCAL_KEY_FILE',
        `${localKeyFile} does not exist; production never generates a master key (create one, or use LINKVAULT_KEYS=aws-kms)`,
      );
    }
    const previous = (text(env, 'LINKVAULT_LOCAL_PREVIOUS_KEY_FILES') ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean)
      .map((p) => resolve(cwd, p));
    for (const p of previous) {
      if (!existsSync(p))
        throw new ConfigError('LINKVAULT_LOCAL_PREVIOUS_KEY_FILES', `${p} does not exist`);
    }
    keys = { kind: 'local', localKeyFile, previousKeyFiles: previous, mayGenerate: !production };
  } else if (keysKind === 'aws-kms') {
    const kmsKeyId = text(env, 'LINKVAULT_KMS_KEY_ID');
    if (!kmsKeyId)
      throw new ConfigError('LINKVAULT_KMS_KEY_ID', 'is required when LINKVAULT_KEYS=aws-kms');
    const region = text(env, 'AWS_REGION') ?? text(env, 'AWS_DEFAULT_REGION') ?? null;
    if (!region) throw new ConfigError('AWS_REGION', 'is required when LINKVAULT_KEYS=aws-kms');
    const endpointRaw = text(env, 'AWS_ENDPOINT_URL_KMS') ?? text(env, 'AWS_ENDPOINT_URL') ?? null;
    const endpoint = endpointRaw
      ? url('AWS_ENDPOINT_URL_KMS', endpointRaw, !production).href
      : null;
    keys = { kind: 'aws-kms', kmsKeyId, region, endpoint };
  } else {
    throw new ConfigError('LINKVAULT_KEYS', `must be local or aws-kms, got "${keysKind}"`);
  }

  const keyCache = {
    maxEntries: int(env, 'LINKVAULT_KEY_CACHE_MAX_ENTRIES', 10_000, 0, 10_000_000),
    maxAgeMs: int(env, 'LINKVAULT_KEY_CACHE_MAX_AGE_SECONDS', 300, 0, 86_400) * 1000,
  };

  const audience = text(env, 'LINKVAULT_AUDIENCE') ?? 'linkvault';

  // ---- services ----
  const servicesVar = text(env, 'LINKVAULT_SERVICES_FILE');
  const defaultServices = resolve(cwd, 'config/services.json');
  const servicesFile = servicesVar
    ? resolve(cwd, servicesVar)
    : existsSync(defaultServices)
      ? defaultServices
      : null;
  let services: ServiceDefinition[] = [];
  if (servicesFile) {
    let json: unknown;
    try {
      json = JSON.parse(readFileSync(servicesFile, 'utf8'));
    } catch (err) {
      throw new ConfigError(
        'LINKVAULT_SERVICES_FILE',
        `cannot read ${servicesFile} as JSON (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
      );
    }
    try {
      services = parseServicesFile(json, env);
    } catch (err) {
      if (err instanceof ServicesFileError)
        throw new ConfigError('LINKVAULT_SERVICES_FILE', `${servicesFile}: ${err.message}`);
      throw err;
    }
  }

  const providersVar = text(env, 'LINKVAULT_PROVIDERS_FILE');
  const providersFile = providersVar ? resolve(cwd, providersVar) : null;
  if (providersFile && !existsSync(providersFile))
    throw new ConfigError('LINKVAULT_PROVIDERS_FILE', `${providersFile} does not exist`);

  // ---- provider credentials ----
  const providerCredentials = new Map<string, ProviderCredentials>();
  const credentialPattern = /^LINKVAULT_PROVIDER_([A-Z0-9_]+)_CLIENT_(ID|SECRET)$/;
  const halves = new Map<string, { id?: string; secret?: string }>();
  for (const [name, value] of Object.entries(env)) {
    const m = credentialPattern.exec(name);
    if (!m || value === undefined || value.trim() === '') continue;
    const entry = halves.get(m[1]!) ?? {};
    if (m[2] === 'ID') entry.id = value.trim();
    else entry.secret = value.trim();
    halves.set(m[1]!, entry);
  }
  for (const [envId, entry] of halves) {
    if (!entry.id)
      throw new ConfigError(
        `LINKVAULT_PROVIDER_${envId}_CLIENT_ID`,
        `is required because LINKVAULT_PROVIDER_${envId}_CLIENT_SECRET is set`,
      );
    if (!entry.secret)
      throw new ConfigError(
        `LINKVAULT_PROVIDER_${envId}_CLIENT_SECRET`,
        `is required because LINKVAULT_PROVIDER_${envId}_CLIENT_ID is set`,
      );
    providerCredentials.set(envId, { clientId: entry.id, clientSecret: entry.secret });
  }

  // ---- browser-facing ----
  const allowRaw = text(env, 'LINKVAULT_RETURN_URL_ALLOWLIST');
  const returnUrlAllowlist = allowRaw
    ? allowRaw
        .split(',')
        .map((o) => parseOrigin('LINKVAULT_RETURN_URL_ALLOWLIST', o.trim(), production))
    : [publicUrlParsed.origin];

  const dormantRaw = text(env, 'LINKVAULT_DORMANT_LINK_DAYS');
  const dormantLinkDays =
    dormantRaw === undefined ? null : int(env, 'LINKVAULT_DORMANT_LINK_DAYS', 0, 1, 36_500);

  const auditExportRaw = text(env, 'LINKVAULT_AUDIT_EXPORT_DIR');
  const audit = Object.freeze({
    exportDir: auditExportRaw === undefined ? null : resolve(cwd, auditExportRaw),
    storeMaxEvents: int(env, 'LINKVAULT_AUDIT_STORE_MAX_EVENTS', 100_000, 100, 100_000_000),
  });

  const sandbox = bool(env, 'LINKVAULT_SANDBOX', !production);
  if (production && sandbox)
    throw new ConfigError(
      'LINKVAULT_SANDBOX',
      'the sandbox provider is refused when NODE_ENV=production',
    );

  const providerTimeoutMs = int(env, 'LINKVAULT_PROVIDER_TIMEOUT_SECONDS', 10, 1, 120) * 1000;
  // The refresh lock must outlive one provider call: a holder still waiting on a healthy but slow
  // provider must not see a second replica spend the same refresh token (RFC 9700 §4.14.2 reuse detection).
  const refreshLockTtlMs =
    int(env, 'LINKVAULT_REFRESH_LOCK_TTL_SECONDS', providerTimeoutMs / 1000 + 5, 2, 600) * 1000;
  if (refreshLockTtlMs < providerTimeoutMs + 1000) {
    throw new ConfigError(
      'LINKVAULT_REFRESH_LOCK_TTL_SECONDS',
      `must be at least LINKVAULT_PROVIDER_TIMEOUT_SECONDS + 1 (${providerTimeoutMs / 1000 + 1})`,
    );
  }

  const logLevel = (text(env, 'LINKVAULT_LOG_LEVEL') ?? 'info') as Config['logLevel'];
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(logLevel)) {
    throw new ConfigError(
      'LINKVAULT_LOG_LEVEL',
      `must be one of fatal, error, warn, info, debug, trace, silent, got "${logLevel}"`,
    );
  }

  const config: Config = {
    nodeEnv,
    production,
    port,
    host: host === null ? null : host.replace(/^\[|\]$/g, ''),
    metricsPort,
    publicUrl,
    store: Object.freeze(store),
    keys: Object.freeze(keys),
    keyCache: Object.freeze(keyCache),
    audience,
    servicesFile,
    services: Object.freeze(services),
    providersFile,
    providerCredentials,
    allowInsecureProviderUrls,
    returnUrlAllowlist: Object.freeze(returnUrlAllowlist),
    dormantLinkDays,
    audit,
    sessionTtlSeconds: int(env, 'LINKVAULT_SESSION_TTL_SECONDS', 900, 60, 86_400),
    sandbox,
    backgroundRefresh: bool(env, 'LINKVAULT_BACKGROUND_REFRESH', true),
    backgroundRefreshIntervalMs:
      int(env, 'LINKVAULT_BACKGROUND_REFRESH_INTERVAL_SECONDS', 60, 1, 3600) * 1000,
    refreshLeadMs: int(env, 'LINKVAULT_REFRESH_LEAD_SECONDS', 300, 0, 86_400) * 1000,
    refreshLockTtlMs,
    rotationStoreRetryMs: int(env, 'LINKVAULT_ROTATION_STORE_RETRY_SECONDS', 120, 1, 86_400) * 1000,
    rotationSpoolDir: resolve(
      cwd,
      text(env, 'LINKVAULT_ROTATION_SPOOL_DIR') ?? './data/rotation-spool',
    ),
    providerTimeoutMs,
    proxy: Object.freeze({
      timeoutMs: int(env, 'LINKVAULT_PROXY_TIMEOUT_SECONDS', 30, 1, 600) * 1000,
      maxRequestBytes: int(env, 'LINKVAULT_PROXY_MAX_REQUEST_BYTES', 10_485_760, 0, 1_073_741_824),
      maxResponseBytes: int(
        env,
        'LINKVAULT_PROXY_MAX_RESPONSE_BYTES',
        104_857_600,
        0,
        10_737_418_240,
      ),
    }),
    shutdownTimeoutMs: int(env, 'LINKVAULT_SHUTDOWN_TIMEOUT_SECONDS', 10, 1, 300) * 1000,
    maxConnections: int(env, 'LINKVAULT_MAX_CONNECTIONS', DEFAULT_MAX_CONNECTIONS, 1, 1_000_000),
    rateLimitPerMinute: int(env, 'LINKVAULT_RATE_LIMIT_PER_MINUTE', 600, 1, 1_000_000),
    trustedProxyHops: int(env, 'LINKVAULT_TRUSTED_PROXY_HOPS', 0, 0, 10),
    connectStartsPerSession: int(env, 'LINKVAULT_CONNECT_STARTS_PER_SESSION', 20, 1, 1000),
    requireConnectConfirmation: bool(env, 'LINKVAULT_REQUIRE_CONNECT_CONFIRMATION', false),
    appName: appNameOf(env),
    logLevel,
    dataDir,
    providerCredentialFor: (providerId) =>
      providerCredentials.get(providerEnvName(providerId)) ?? null,
  };
  return Object.freeze(config);
}

/**
 * Every variable name loadConfig reads, besides LINKVAULT_PROVIDER_<ID>_CLIENT_ID/_CLIENT_SECRET and
 * the services file's secret_env names: check-config warns about a LINKVAULT_* name that is none of
 * them (src/config-check.ts). test/cli/config-check.test.ts keeps it equal to the names this file reads.
 */
export const CONFIG_VARIABLES: readonly string[] = [
  'AWS_DEFAULT_REGION',
  'AWS_ENDPOINT_URL',
  'AWS_ENDPOINT_URL_KMS',
  'AWS_REGION',
  'LINKVAULT_ALLOW_INSECURE_PROVIDER_URLS',
  'LINKVAULT_APP_NAME',
  'LINKVAULT_AUDIT_EXPORT_DIR',
  'LINKVAULT_AUDIT_STORE_MAX_EVENTS',
  'LINKVAULT_AUDIENCE',
  'LINKVAULT_BACKGROUND_REFRESH',
  'LINKVAULT_BACKGROUND_REFRESH_INTERVAL_SECONDS',
  'LINKVAULT_CONNECT_STARTS_PER_SESSION',
  'LINKVAULT_DORMANT_LINK_DAYS',
  'LINKVAULT_HOST',
  'LINKVAULT_KEYS',
  'LINKVAULT_KEY_CACHE_MAX_AGE_SECONDS',
  'LINKVAULT_KEY_CACHE_MAX_ENTRIES',
  'LINKVAULT_KMS_KEY_ID',
  'LINKVAULT_LOCAL_KEY_FILE',
  'LINKVAULT_LOCAL_PREVIOUS_KEY_FILES',
  'LINKVAULT_LOG_LEVEL',
  'LINKVAULT_MAX_CONNECTIONS',
  'LINKVAULT_METRICS_PORT',
  'LINKVAULT_PORT',
  'LINKVAULT_PROVIDERS_FILE',
  'LINKVAULT_PROVIDER_TIMEOUT_SECONDS',
  'LINKVAULT_PROXY_MAX_REQUEST_BYTES',
  'LINKVAULT_PROXY_MAX_RESPONSE_BYTES',
  'LINKVAULT_PROXY_TIMEOUT_SECONDS',
  'LINKVAULT_PUBLIC_URL',
  'LINKVAULT_RATE_LIMIT_PER_MINUTE',
  'LINKVAULT_REDIS_CLUSTER_NODES',
  'LINKVAULT_REDIS_PREFIX',
  'LINKVAULT_REDIS_URL',
  'LINKVAULT_REDIS_WAIT_REPLICAS',
  'LINKVAULT_REDIS_WAIT_TIMEOUT_MS',
  'LINKVAULT_REFRESH_LEAD_SECONDS',
  'LINKVAULT_REFRESH_LOCK_TTL_SECONDS',
  'LINKVAULT_REQUIRE_CONNECT_CONFIRMATION',
  'LINKVAULT_RETURN_URL_ALLOWLIST',
  'LINKVAULT_ROTATION_SPOOL_DIR',
  'LINKVAULT_ROTATION_STORE_RETRY_SECONDS',
  'LINKVAULT_SANDBOX',
  'LINKVAULT_SERVICES_FILE',
  'LINKVAULT_SESSION_TTL_SECONDS',
  'LINKVAULT_SHUTDOWN_TIMEOUT_SECONDS',
  'LINKVAULT_SQLITE_PATH',
  'LINKVAULT_STORE',
  'LINKVAULT_TRUSTED_PROXY_HOPS',
  'NODE_ENV',
];
