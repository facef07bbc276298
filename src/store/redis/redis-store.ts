/**
 * RedisStore: the Store adapter over a standalone Redis or a Redis Cluster (ioredis).
 *
 * Fail fast, never hang: no offline queue, no resend of unanswered commands after a reconnect
 * (a resent XADD or claim would apply twice), a ~1 s command timeout plus a guard timer of our own
 * around every call. Any transport failure becomes LinkvaultError('store_unavailable', retry 1 s).
 *
 * Key layout (`P` = keyPrefix, every variable part URI-encoded so `:`, `{` and `}` cannot collide):
 *   {P:t:<tenant>}:l:<id>          hash j=<link JSON> v=<version> u=<lastUsedAtMs>
 *   {P:t:<tenant>}:ix:all|u:<user>|p:<provider>|s:<status>|a:<providerAccountId>
 *                                   sorted sets of link ids scored by createdAtMs
 *   {P:t:<tenant>}:ix:exp           the expiry index: link ids scored by expiryIndexScore (active
 *                                   links with an expiring token, or a refresh to retry)
 *   P:ix:exp:built                  set once every link stored before the expiry index existed is in it
 *   P:ref:<id>                      the link's tenant (immutable; cached in process)
 *   P:tenants                       set of tenants that have links (for listings without a tenant)
 *   P:f:<key>  P:s:<id>  P:lk:<name>  P:rv:<linkId>  P:js:<id>   single-key records
 *   {P:g}:all  {P:g}:svc:<service>  grant hashes id -> JSON
 *   {P:audit}:log                   the audit stream
 *   {P:q}:due (zset) :kind :payload :attempts :runat :lease (hashes by job id)
 * Every key a multi-key script touches shares one hash tag, so each script runs on one slot and
 * declares all its keys in KEYS (a requirement for Redis Cluster).
 *
 * Hot path: getLink, touchLink and appendAudit are one round trip each once the link's tenant is cached.
 */
import { randomBytes } from 'node:crypto';
import { Cluster, Redis, ReplyError } from 'ioredis';
import type { ClusterOptions, RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import { LinkvaultError, isLinkvaultError } from '../../errors.js';
import {
  checkAttempts,
  checkAuditEvent,
  checkExpectedVersion,
  checkGrant,
  checkId,
  checkJob,
  checkLimit,
  checkLink,
  checkLinkStatus,
  checkObject,
  checkOptionalId,
  checkPositiveInt,
  checkSession,
  checkTimeMs,
  checkTtlSeconds,
  MAX_LIMIT,
  refuseAuditCursor,
  refuseTenantChange,
} from '../store-input.js';
import { expiryIndexScore } from '../expiry-index-score.js';
import type { AuditEvent, FlowStateRecord, JobStatusRecord, QueueJob, RevocationRecordRow, ScannedJob, Store } from '../store.js';
import type { GrantRecord } from '../../links/release/grants.js';
import type { LinkFilter, LinkRecord } from '../../links/link.js';
import type { SessionRecord } from '../../links/connect/sessions.js';

export type RedisClient = Redis | Cluster;

/** Where Redis is: a standalone URL or the seed nodes of a cluster. */
export type RedisTarget = { readonly url: string } | { readonly clusterNodes: readonly { readonly host: string; readonly port: number }[] };

/** Per-command timeout; the store's own guard fires shortly after it. */
export const REDIS_COMMAND_TIMEOUT_MS = 1000;
const GUARD_MS = REDIS_COMMAND_TIMEOUT_MS + 200;

/** Capped exponential backoff: 100, 200, 400, 800, 1000, 1000, ... ms; never gives up. */
function reconnectDelayMs(times: number): number {
  return Math.min(100 * 2 ** Math.max(0, times - 1), 1000);
}

const NODE_OPTIONS = {
  commandTimeout: REDIS_COMMAND_TIMEOUT_MS,
  connectTimeout: 1000,
  // 0: a command in flight when the connection drops is rejected at once, never resent after
  // reconnect (it may already have been applied: XADD, queue claims and CAS scripts are not idempotent).
  maxRetriesPerRequest: 0,
  autoResendUnfulfilledCommands: false,
  enableReadyCheck: true,
  keepAlive: 10_000,
  connectionName: 'linkvault',
} satisfies RedisOptions;

/** An ioredis client configured to fail fast (see the file comment). Connects in the background. */
export function createRedisClient(target: RedisTarget): RedisClient {
  if ('url' in target) {
    return new Redis(target.url, { ...NODE_OPTIONS, enableOfflineQueue: false, retryStrategy: reconnectDelayMs });
  }
  const options: ClusterOptions = {
    enableOfflineQueue: false,
    enableReadyCheck: true,
    clusterRetryStrategy: reconnectDelayMs,
    // A restarted master keeps its slots, so reconnect to it rather than wait for a MOVED.
    clusterNodeRetryStrategy: reconnectDelayMs,
    slotsRefreshTimeout: 1000,
    slotsRefreshInterval: 5000,
    retryDelayOnClusterDown: 100,
    retryDelayOnFailover: 100,
    retryDelayOnTryAgain: 100,
    maxRedirections: 8,
    redisOptions: NODE_OPTIONS,
  };
  return new Cluster(
    target.clusterNodes.map((n) => ({ host: n.host, port: n.port })),
    options,
  );
}

/** Resolves when `client` is ready; rejects store_unavailable after `timeoutMs`. */
export function waitForRedisReady(client: RedisClient, timeoutMs: number): Promise<void> {
  if (client.status === 'ready') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onReady = (): void => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      client.off('ready', onReady);
      reject(new LinkvaultError('store_unavailable', { detail: `Redis was not ready within ${timeoutMs} ms`, retryAfterSeconds: 1 }));
    }, timeoutMs);
    client.once('ready', onReady);
  });
}

/**
 * Redis replies with an error code word first (`-LOADING ...`, `-CLUSTERDOWN ...`): these codes mean
 * "cannot serve now"; any other reply error is a bug on our side.
 */
const UNAVAILABLE_REPLY_CODES: ReadonlySet<string> = new Set([
  'LOADING',
  'BUSY',
  'MASTERDOWN',
  'CLUSTERDOWN',
  'TRYAGAIN',
  'READONLY',
  'MISCONF',
  'OOM',
  'NOREPLICAS',
  'MOVED',
  'ASK',
  'NOAUTH',
  'WRONGPASS',
  'UNBLOCKED',
]);

/**
 * A cause safe to log: ioredis errors carry the command's arguments (flow state, sessions, sealed
 * tokens) in `.command`, and some server messages echo arguments; keep the class and code only.
 */
export function describeRedisError(err: unknown): { name: string; code: string } {
  if (err instanceof ReplyError) {
    return { name: 'ReplyError', code: /^[A-Z]+/.exec(String((err as Error).message))?.[0] ?? 'ERR' };
  }
  if (err instanceof Error) {
    const errno = (err as NodeJS.ErrnoException).code;
    return { name: err.name, code: typeof errno === 'string' ? errno : err.message.slice(0, 120) };
  }
  return { name: typeof err, code: 'unknown' };
}

/** Translates an ioredis failure by class: a reply error by its code, anything else is transport. */
export function translateRedisError(err: unknown): LinkvaultError {
  if (isLinkvaultError(err)) return err;
  const { name, code } = describeRedisError(err);
  const cause = new Error(`${name}: ${code}`);
  if (err instanceof ReplyError && !UNAVAILABLE_REPLY_CODES.has(code)) return new LinkvaultError('internal_error', { cause });
  return new LinkvaultError('store_unavailable', { cause, retryAfterSeconds: 1 });
}

// ---- Lua scripts (each touches only its KEYS, all in one slot) ----

/**
 * KEYS[1] link hash, KEYS[2] the tenant's expiry index, KEYS[3..2+nrm] indexes to leave, the rest
 * indexes to join.
 * ARGV: expectedVersion ('' = create), json, newVersion, score, id, nrm, lastUsedAtMs ('' = none),
 * expiry index score ('' = not in the expiry index).
 * Returns nil on a version conflict, else {1, stored lastUsedAtMs or ''}.
 */
const SAVE_LINK = `
local cur = redis.call('HGET', KEYS[1], 'v')
if ARGV[1] == '' then
  if cur then return false end
elseif cur ~= ARGV[1] then
  return false
end
local nrm = tonumber(ARGV[6])
for i = 3, 2 + nrm do redis.call('ZREM', KEYS[i], ARGV[5]) end
for i = 3 + nrm, #KEYS do redis.call('ZADD', KEYS[i], ARGV[4], ARGV[5]) end
if ARGV[8] == '' then
  redis.call('ZREM', KEYS[2], ARGV[5])
else
  redis.call('ZADD', KEYS[2], ARGV[8], ARGV[5])
end
local u = redis.call('HGET', KEYS[1], 'u')
if ARGV[7] ~= '' and ((not u) or tonumber(ARGV[7]) > tonumber(u)) then u = ARGV[7] end
if u then
  redis.call('HSET', KEYS[1], 'j', ARGV[2], 'v', ARGV[3], 'u', u)
else
  redis.call('HSET', KEYS[1], 'j', ARGV[2], 'v', ARGV[3])
end
return {1, u or ''}
`;

/**
 * KEYS[1] link hash, KEYS[2] the tenant's expiry index; ARGV version read, expiry index score ('' =
 * none), id. Files a link stored before the expiry index existed, only if it is still the version
 * read (a newer write filed it itself). 1 filed, 0 changed meanwhile.
 */
const FILE_EXPIRY = `
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('ZREM', KEYS[2], ARGV[3])
else
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
end
return 1
`;

/** KEYS[1] link hash; ARGV[1] lastUsedAtMs. Moves `u` forward only; no-op for an absent link. */
const TOUCH_LINK = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local u = redis.call('HGET', KEYS[1], 'u')
if (not u) or tonumber(ARGV[1]) > tonumber(u) then
  redis.call('HSET', KEYS[1], 'u', ARGV[1])
  return 1
end
return 0
`;

const RELEASE_LOCK = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

const EXTEND_LOCK = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`;

/** KEYS {g}:all, {g}:svc:<new>, {g}:svc:<old>; ARGV id, json, the JSON the caller read ('' = none). 0 = changed meanwhile. */
const PUT_GRANT = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (cur or '') ~= ARGV[3] then return 0 end
if cur then redis.call('HDEL', KEYS[3], ARGV[1]) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
`;

/** KEYS {g}:all, {g}:svc:<service>; ARGV id, the JSON the caller read. 1 deleted, 0 absent, -1 changed meanwhile. */
const DELETE_GRANT = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 0 end
if cur ~= ARGV[2] then return -1 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
`;

// Queue KEYS, always in this order: due, kind, payload, attempts, runat, lease.

/** ARGV id, kind, payload, attempts, runAtMs. Leaves an existing job alone. */
const ENQUEUE = `
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[4])
redis.call('HSET', KEYS[5], ARGV[1], ARGV[5])
redis.call('ZADD', KEYS[1], ARGV[5], ARGV[1])
return 1
`;

/**
 * ARGV nowMs, limit, leaseUntilMs, token base. A claimed job's score moves to the lease end, so it
 * is due again (for anyone) when the lease runs out; its lease token is replaced on each claim.
 * Returns a flat list id, kind, payload, attempts, runAtMs, token per job.
 */
const CLAIM_JOBS = `
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for i, id in ipairs(ids) do
  local kind = redis.call('HGET', KEYS[2], id)
  if kind then
    local token = ARGV[4] .. '.' .. i
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    redis.call('HSET', KEYS[6], id, token)
    out[#out + 1] = id
    out[#out + 1] = kind
    out[#out + 1] = redis.call('HGET', KEYS[3], id)
    out[#out + 1] = redis.call('HGET', KEYS[4], id)
    out[#out + 1] = redis.call('HGET', KEYS[5], id)
    out[#out + 1] = token
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
`;

/** ARGV id, leaseToken. */
const COMPLETE_JOB = `
if redis.call('HGET', KEYS[6], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
for i = 2, 6 do redis.call('HDEL', KEYS[i], ARGV[1]) end
return 1
`;

/** ARGV id, leaseToken, runAtMs, attempts, payload ('' = keep). */
const RESCHEDULE_JOB = `
if redis.call('HGET', KEYS[6], ARGV[1]) ~= ARGV[2] then return 0 end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[3], ARGV[1], ARGV[5]) end
redis.call('HSET', KEYS[4], ARGV[1], ARGV[4])
redis.call('HSET', KEYS[5], ARGV[1], ARGV[3])
redis.call('HDEL', KEYS[6], ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
`;

/**
 * ARGV cursor, count. One HSCAN step over the job ids (the kind hash), with each job read in the
 * same script so its fields are consistent. Returns next cursor, then id, kind, payload, attempts,
 * runAtMs, leased ('1'/'0') per job. HSCAN may repeat an id; the caller de-duplicates.
 */
const SCAN_JOBS = `
local page = redis.call('HSCAN', KEYS[2], ARGV[1], 'COUNT', tonumber(ARGV[2]))
local out = { page[1] }
local flat = page[2]
for i = 1, #flat, 2 do
  local id = flat[i]
  out[#out + 1] = id
  out[#out + 1] = flat[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[3], id) or '{}'
  out[#out + 1] = redis.call('HGET', KEYS[4], id) or '0'
  out[#out + 1] = redis.call('HGET', KEYS[5], id) or '0'
  out[#out + 1] = tostring(redis.call('HEXISTS', KEYS[6], id))
end
return out
`;

/** ARGV id, expected payload, new payload. Replaces only an unleased job whose payload is still the expected one. */
const REPLACE_JOB_PAYLOAD = `
if redis.call('HEXISTS', KEYS[6], ARGV[1]) == 1 then return 0 end
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
return 1
`;

type ScriptArg = string | number;
interface ScriptCommands {
  linkvaultSaveLink(numKeys: number, ...args: ScriptArg[]): Promise<[number, string] | null>;
  linkvaultTouchLink(key: string, lastUsedAtMs: string): Promise<number>;
  linkvaultFileExpiry(linkKey: string, expiryKey: string, version: string, score: string, id: string): Promise<number>;
  linkvaultReleaseLock(key: string, owner: string): Promise<number>;
  linkvaultExtendLock(key: string, owner: string, ttlMs: string): Promise<number>;
  linkvaultPutGrant(all: string, svcNew: string, svcOld: string, id: string, json: string, seen: string): Promise<number>;
  linkvaultDeleteGrant(all: string, svc: string, id: string, seen: string): Promise<number>;
  linkvaultEnqueue(...args: ScriptArg[]): Promise<number>;
  linkvaultClaimJobs(...args: ScriptArg[]): Promise<(string | null)[]>;
  linkvaultCompleteJob(...args: ScriptArg[]): Promise<number>;
  linkvaultRescheduleJob(...args: ScriptArg[]): Promise<number>;
  linkvaultScanJobs(...args: ScriptArg[]): Promise<string[]>;
  linkvaultReplaceJobPayload(...args: ScriptArg[]): Promise<number>;
}

function defineScripts(client: RedisClient): ScriptCommands {
  // defineCommand sends EVALSHA and falls back to EVAL on NOSCRIPT (a restarted or new node).
  client.defineCommand('linkvaultSaveLink', { lua: SAVE_LINK });
  client.defineCommand('linkvaultTouchLink', { lua: TOUCH_LINK, numberOfKeys: 1 });
  client.defineCommand('linkvaultFileExpiry', { lua: FILE_EXPIRY, numberOfKeys: 2 });
  client.defineCommand('linkvaultReleaseLock', { lua: RELEASE_LOCK, numberOfKeys: 1 });
  client.defineCommand('linkvaultExtendLock', { lua: EXTEND_LOCK, numberOfKeys: 1 });
  client.defineCommand('linkvaultPutGrant', { lua: PUT_GRANT, numberOfKeys: 3 });
  client.defineCommand('linkvaultDeleteGrant', { lua: DELETE_GRANT, numberOfKeys: 2 });
  client.defineCommand('linkvaultEnqueue', { lua: ENQUEUE, numberOfKeys: 6 });
  client.defineCommand('linkvaultClaimJobs', { lua: CLAIM_JOBS, numberOfKeys: 6 });
  client.defineCommand('linkvaultCompleteJob', { lua: COMPLETE_JOB, numberOfKeys: 6 });
  client.defineCommand('linkvaultRescheduleJob', { lua: RESCHEDULE_JOB, numberOfKeys: 6 });
  client.defineCommand('linkvaultScanJobs', { lua: SCAN_JOBS, numberOfKeys: 6 });
  client.defineCommand('linkvaultReplaceJobPayload', { lua: REPLACE_JOB_PAYLOAD, numberOfKeys: 6 });
  return client as unknown as ScriptCommands;
}

const enc = encodeURIComponent;

/** The hash tag shared by every key of one tenant's links and indexes. */
export function redisTenantTag(keyPrefix: string, tenantId: string): string {
  return `{${keyPrefix}:t:${enc(tenantId)}}`;
}

export interface RedisStoreOptions {
  readonly client: RedisClient;
  /** Namespace for every key, so that several deployments can share one Redis. */
  readonly keyPrefix: string;
  readonly log?: Logger;
  /** Called once for every operation that failed with store_unavailable (metrics). */
  readonly onUnavailable?: () => void;
  /** Size of the in-process link id → tenant cache (tenants never change, so entries never go stale). */
  readonly tenantCacheSize?: number;
}

function randomToken(): string {
  return randomBytes(18).toString('base64url');
}

function compareNewestFirst(a: LinkRecord, b: LinkRecord): number {
  if (a.createdAtMs !== b.createdAtMs) return b.createdAtMs - a.createdAtMs;
  return a.id < b.id ? 1 : a.id > b.id ? -1 : 0;
}

function matches(link: LinkRecord, filter: LinkFilter): boolean {
  return (
    (filter.tenantId === undefined || link.tenantId === filter.tenantId) &&
    (filter.userId === undefined || link.userId === filter.userId) &&
    (filter.providerId === undefined || link.providerId === filter.providerId) &&
    (filter.status === undefined || link.status === filter.status) &&
    (filter.providerAccountId === undefined || link.providerAccountId === filter.providerAccountId)
  );
}

export class RedisStore implements Store {
  readonly kind = 'redis' as const;
  readonly #client: RedisClient;
  readonly #scripts: ScriptCommands;
  readonly #p: string;
  readonly #log: Logger | undefined;
  readonly #onUnavailable: (() => void) | undefined;
  readonly #tenantOfLink = new Map<string, string>();
  readonly #tenantCacheSize: number;
  #closed = false;
  /** Set once this process knows every link is in the expiry index (#ensureExpiryIndex). */
  #expiryIndexBuilt = false;
  #lastErrorLogMs = 0;

  constructor(options: RedisStoreOptions) {
    if (!/^[A-Za-z0-9_.-]{1,32}$/.test(options.keyPrefix)) throw new Error('keyPrefix must be 1-32 characters of letters, digits, _ . -');
    this.#client = options.client;
    this.#p = options.keyPrefix;
    this.#log = options.log;
    this.#onUnavailable = options.onUnavailable;
    this.#tenantCacheSize = options.tenantCacheSize ?? 100_000;
    this.#scripts = defineScripts(this.#client);
    // Without a listener ioredis prints every connection error to the console; log them, sanitised and rate-limited.
    this.#client.on('error', this.#onClientError);
  }

  readonly #onClientError = (err: unknown): void => {
    const now = Date.now();
    if (now - this.#lastErrorLogMs < 5000) return;
    this.#lastErrorLogMs = now;
    this.#log?.warn({ store: 'redis', err: describeRedisError(err) }, 'redis connection error');
  };

  /** Stores one JSON document under `key` (revocation records, job status). */
  async #setJson(key: string, value: Readonly<Record<string, unknown>>): Promise<void> {
    await this.#call(() => this.#client.set(key, JSON.stringify(value)));
  }

  /** The JSON document under `key`, or null when there is none. */
  async #getJson(key: string): Promise<Record<string, unknown> | null> {
    const json = await this.#call(() => this.#client.get(key));
    return json === null ? null : (JSON.parse(json) as Record<string, unknown>);
  }

  /**
   * Runs one Redis call. Rejects store_unavailable when the call fails in transport or does not
   * settle within the guard time (ioredis's own timeout should fire first; the guard also covers
   * commands a cluster holds back while it re-discovers slots).
   */
  #call<T>(op: () => Promise<T>): Promise<T> {
    if (this.#closed) return Promise.reject(this.#fail(new LinkvaultError('store_unavailable', { detail: 'the store is closed', retryAfterSeconds: 1 })));
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => {
        settled = true;
        reject(this.#fail(new LinkvaultError('store_unavailable', { detail: `Redis did not answer within ${GUARD_MS} ms`, retryAfterSeconds: 1 })));
      }, GUARD_MS);
      let pending: Promise<T>;
      try {
        pending = op();
      } catch (err) {
        pending = Promise.reject(err);
      }
      pending.then(
        (value) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          resolve(value);
        },
        (err: unknown) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          reject(this.#fail(translateRedisError(err)));
        },
      );
    });
  }

  #fail(err: LinkvaultError): LinkvaultError {
    if (err.code === 'store_unavailable') this.#onUnavailable?.();
    return err;
  }

  // ---- keys ----

  #linkKey(tenantId: string, id: string): string {
    return `${redisTenantTag(this.#p, tenantId)}:l:${enc(id)}`;
  }

  #indexKeys(link: Pick<LinkRecord, 'tenantId' | 'userId' | 'providerId' | 'status' | 'providerAccountId'>): string[] {
    const tag = redisTenantTag(this.#p, link.tenantId);
    const keys = [`${tag}:ix:all`, `${tag}:ix:u:${enc(link.userId)}`, `${tag}:ix:p:${enc(link.providerId)}`, `${tag}:ix:s:${link.status}`];
    if (link.providerAccountId !== null) keys.push(`${tag}:ix:a:${enc(link.providerAccountId)}`);
    return keys;
  }

  #expiryKey(tenantId: string): string {
    return `${redisTenantTag(this.#p, tenantId)}:ix:exp`;
  }

  #refKey(id: string): string {
    return `${this.#p}:ref:${enc(id)}`;
  }

  get #tenantsKey(): string {
    return `${this.#p}:tenants`;
  }

  #queueKeys(): string[] {
    const tag = `{${this.#p}:q}`;
    return [`${tag}:due`, `${tag}:kind`, `${tag}:payload`, `${tag}:attempts`, `${tag}:runat`, `${tag}:lease`];
  }

  #grantKeys(serviceId: string): { all: string; svc: string } {
    return { all: `{${this.#p}:g}:all`, svc: `{${this.#p}:g}:svc:${enc(serviceId)}` };
  }

  get #auditKey(): string {
    return `{${this.#p}:audit}:log`;
  }

  // ---- lifecycle ----

  async ping(): Promise<void> {
    const client = this.#client;
    if (client instanceof Cluster) {
      // Ready only when every master answers and sees the cluster as whole: with a master down,
      // the links in its slots are unreachable (and PING alone still succeeds on the others).
      const masters = client.nodes('master');
      if (masters.length === 0) throw this.#fail(new LinkvaultError('store_unavailable', { detail: 'no Redis Cluster master known', retryAfterSeconds: 1 }));
      const infos = await Promise.all(masters.map((node) => this.#call(() => node.call('CLUSTER', 'INFO'))));
      if (!infos.every((info) => /^cluster_state:ok\b/m.test(String(info)))) {
        throw this.#fail(new LinkvaultError('store_unavailable', { detail: 'the Redis Cluster state is not ok', retryAfterSeconds: 1 }));
      }
      return;
    }
    await this.#call(() => client.ping());
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const client = this.#client;
    if (client.status === 'ready') {
      await Promise.race([client.quit().catch(() => undefined), new Promise((resolve) => setTimeout(resolve, GUARD_MS).unref())]);
    }
    client.disconnect();
    client.off('error', this.#onClientError);
  }

  // ---- links ----

  /** The tenant of link `id` (cached: a link never changes tenant), or null when there is no such link. */
  async #tenantOf(id: string): Promise<string | null> {
    const cached = this.#tenantOfLink.get(id);
    if (cached !== undefined) return cached;
    const tenant = await this.#call(() => this.#client.get(this.#refKey(id)));
    if (tenant !== null) this.#remember(id, tenant);
    return tenant;
  }

  #remember(id: string, tenant: string): void {
    if (this.#tenantOfLink.has(id)) return;
    if (this.#tenantOfLink.size >= this.#tenantCacheSize) {
      // Evict the oldest entry (Map keeps insertion order).
      const oldest = this.#tenantOfLink.keys().next().value;
      if (oldest !== undefined) this.#tenantOfLink.delete(oldest);
    }
    this.#tenantOfLink.set(id, tenant);
  }

  #decodeLink(json: string, lastUsed: string | null): LinkRecord {
    const link = JSON.parse(json) as LinkRecord;
    return lastUsed === null ? link : { ...link, lastUsedAtMs: Number(lastUsed) };
  }

  async getLink(id: string): Promise<LinkRecord | null> {
    checkId('id', id);
    const tenant = await this.#tenantOf(id);
    if (tenant === null) return null;
    const [json, lastUsed] = await this.#call(() => this.#client.hmget(this.#linkKey(tenant, id), 'j', 'u'));
    return json ? this.#decodeLink(json, lastUsed ?? null) : null;
  }

  async listLinks(filter: LinkFilter, limit?: number): Promise<LinkRecord[]> {
    checkObject('filter', filter);
    const max = checkLimit(limit, 1000);
    checkOptionalId('filter.tenantId', filter.tenantId);
    checkOptionalId('filter.userId', filter.userId);
    checkOptionalId('filter.providerId', filter.providerId);
    if (filter.status !== undefined) checkLinkStatus('filter.status', filter.status);
    checkOptionalId('filter.providerAccountId', filter.providerAccountId);

    if (filter.tenantId !== undefined) return this.#listTenantLinks(filter.tenantId, filter, max);
    // No tenant: each tenant's indexes live in their own slot, so ask each and merge.
    const tenants = await this.#allTenants();
    const found: LinkRecord[] = [];
    for (let i = 0; i < tenants.length; i += 16) {
      const batch = await Promise.all(tenants.slice(i, i + 16).map((t) => this.#listTenantLinks(t, filter, max)));
      for (const links of batch) found.push(...links);
    }
    return found.sort(compareNewestFirst).slice(0, max);
  }

  async #allTenants(): Promise<string[]> {
    const tenants = new Set<string>();
    let cursor = '0';
    do {
      const [next, members] = await this.#call(() => this.#client.sscan(this.#tenantsKey, cursor, 'COUNT', 500));
      cursor = next;
      for (const m of members) tenants.add(m);
    } while (cursor !== '0');
    return [...tenants];
  }

  async #listTenantLinks(tenantId: string, filter: LinkFilter, max: number): Promise<LinkRecord[]> {
    const tag = redisTenantTag(this.#p, tenantId);
    // Walk the most selective index newest first; check every field on the records themselves.
    const index =
      filter.providerAccountId !== undefined
        ? `${tag}:ix:a:${enc(filter.providerAccountId)}`
        : filter.userId !== undefined
          ? `${tag}:ix:u:${enc(filter.userId)}`
          : filter.providerId !== undefined
            ? `${tag}:ix:p:${enc(filter.providerId)}`
            : filter.status !== undefined
              ? `${tag}:ix:s:${filter.status}`
              : `${tag}:ix:all`;
    const pageSize = Math.min(Math.max(max, 50), 1000);
    const out: LinkRecord[] = [];
    for (let start = 0; out.length < max; start += pageSize) {
      const ids = await this.#call(() => this.#client.zrevrange(index, start, start + pageSize - 1));
      if (ids.length === 0) break;
      const pipeline = this.#client.pipeline();
      for (const id of ids) pipeline.hmget(this.#linkKey(tenantId, id), 'j', 'u');
      const replies = await this.#call(() => pipeline.exec());
      for (const [err, reply] of replies ?? []) {
        if (err) throw this.#fail(translateRedisError(err));
        const [json, lastUsed] = reply as [string | null, string | null];
        if (!json) continue;
        const link = this.#decodeLink(json, lastUsed);
        if (matches(link, { ...filter, tenantId }) && out.length < max) out.push(link);
      }
      if (ids.length < pageSize) break;
    }
    return out;
  }

  async saveLink(link: LinkRecord, expectedVersion: number | null): Promise<LinkRecord | null> {
    checkLink(link);
    const expected = checkExpectedVersion(expectedVersion);
    const { id, tenantId } = link;
    const linkKey = this.#linkKey(tenantId, id);
    const addKeys = this.#indexKeys(link);
    let removeKeys: string[] = [];

    if (expected === null) {
      // Claim the id for this tenant first (SET NX: the ref is immutable), and register the tenant so
      // that listings without a tenant find it. Both idempotent, so a crash before the script is harmless.
      const [claimed] = await Promise.all([
        this.#call(() => this.#client.set(this.#refKey(id), tenantId, 'NX')),
        this.#call(() => this.#client.sadd(this.#tenantsKey, tenantId)),
      ]);
      if (claimed !== 'OK') {
        const owner = await this.#call(() => this.#client.get(this.#refKey(id)));
        if (owner !== tenantId) return null;
      }
    } else {
      // The indexes to leave depend on the current record; the script re-checks the version, and a
      // version names exactly one write, so the record read here is the one the script replaces.
      const json = await this.#call(() => this.#client.hget(linkKey, 'j'));
      if (json === null) {
        const owner = await this.#call(() => this.#client.get(this.#refKey(id)));
        if (owner !== null && owner !== tenantId) refuseTenantChange();
        return null;
      }
      const current = JSON.parse(json) as LinkRecord;
      if (current.version !== expected) return null;
      removeKeys = this.#indexKeys(current).filter((k) => !addKeys.includes(k));
    }

    const version = (expected ?? 0) + 1;
    const stored: LinkRecord = { ...link, version };
    const expiryScore = expiryIndexScore(stored);
    const result = await this.#call(() =>
      this.#scripts.linkvaultSaveLink(
        2 + removeKeys.length + addKeys.length,
        linkKey,
        this.#expiryKey(tenantId),
        ...removeKeys,
        ...addKeys,
        expected === null ? '' : String(expected),
        JSON.stringify(stored),
        String(version),
        String(link.createdAtMs),
        id,
        String(removeKeys.length),
        link.lastUsedAtMs === null ? '' : String(link.lastUsedAtMs),
        expiryScore === null ? '' : String(expiryScore),
      ),
    );
    if (result === null) return null;
    this.#remember(id, tenantId);
    const lastUsed = String(result[1]);
    return { ...stored, lastUsedAtMs: lastUsed === '' ? null : Number(lastUsed) };
  }

  async listLinksExpiringBefore(cutoffMs: number, limit: number): Promise<LinkRecord[]> {
    checkTimeMs('cutoffMs', cutoffMs);
    checkPositiveInt('limit', limit, MAX_LIMIT);
    await this.#ensureExpiryIndex();
    // Each tenant's index lives in its own slot: ask each (16 at a time) and merge.
    const tenants = await this.#allTenants();
    const found: { link: LinkRecord; score: number }[] = [];
    for (let i = 0; i < tenants.length; i += 16) {
      const batch = await Promise.all(tenants.slice(i, i + 16).map((t) => this.#tenantLinksExpiringBefore(t, cutoffMs, limit)));
      for (const links of batch) found.push(...links);
    }
    found.sort((a, b) => (a.score !== b.score ? a.score - b.score : a.link.id < b.link.id ? -1 : a.link.id > b.link.id ? 1 : 0));
    return found.slice(0, limit).map((f) => f.link);
  }

  async #tenantLinksExpiringBefore(tenantId: string, cutoffMs: number, limit: number): Promise<{ link: LinkRecord; score: number }[]> {
    const ids = await this.#call(() => this.#client.zrangebyscore(this.#expiryKey(tenantId), '-inf', `(${cutoffMs}`, 'LIMIT', 0, limit));
    if (ids.length === 0) return [];
    const pipeline = this.#client.pipeline();
    for (const id of ids) pipeline.hmget(this.#linkKey(tenantId, id), 'j', 'u');
    const replies = await this.#call(() => pipeline.exec());
    const out: { link: LinkRecord; score: number }[] = [];
    for (const [err, reply] of replies ?? []) {
      if (err) throw this.#fail(translateRedisError(err));
      const [json, lastUsed] = reply as [string | null, string | null];
      if (!json) continue;
      const link = this.#decodeLink(json, lastUsed);
      // Written after the index was read: judge the record itself.
      const score = expiryIndexScore(link);
      if (score !== null && score < cutoffMs) out.push({ link, score });
    }
    return out;
  }

  /**
   * Links stored before the expiry index existed are not in it: the first listing (per process)
   * files every link once, unless a marker says some process already did. Each link is filed only
   * if it still is the version read, so the walk never undoes a newer write. Idempotent: replicas
   * that start together may both walk.
   */
  async #ensureExpiryIndex(): Promise<void> {
    if (this.#expiryIndexBuilt) return;
    const markerKey = `${this.#p}:ix:exp:built`;
    if ((await this.#call(() => this.#client.exists(markerKey))) === 1) {
      this.#expiryIndexBuilt = true;
      return;
    }
    for (const tenant of await this.#allTenants()) {
      const index = `${redisTenantTag(this.#p, tenant)}:ix:all`;
      let cursor = '0';
      do {
        const [next, flat] = await this.#call(() => this.#client.zscan(index, cursor, 'COUNT', 500));
        cursor = next;
        for (let i = 0; i < flat.length; i += 2) {
          const id = flat[i]!;
          const json = await this.#call(() => this.#client.hget(this.#linkKey(tenant, id), 'j'));
          if (!json) continue;
          const link = JSON.parse(json) as LinkRecord;
          const score = expiryIndexScore(link);
          await this.#call(() => this.#scripts.linkvaultFileExpiry(this.#linkKey(tenant, id), this.#expiryKey(tenant), String(link.version), score === null ? '' : String(score), id));
        }
      } while (cursor !== '0');
    }
    await this.#call(() => this.#client.set(markerKey, String(Date.now())));
    this.#expiryIndexBuilt = true;
  }

  async touchLink(id: string, lastUsedAtMs: number): Promise<void> {
    checkId('id', id);
    checkTimeMs('lastUsedAtMs', lastUsedAtMs);
    const tenant = await this.#tenantOf(id);
    if (tenant === null) return;
    await this.#call(() => this.#scripts.linkvaultTouchLink(this.#linkKey(tenant, id), String(lastUsedAtMs)));
  }

  // ---- flow state ----

  async putFlowState(key: string, value: FlowStateRecord, ttlSeconds: number): Promise<void> {
    checkId('key', key);
    checkObject('value', value);
    const ttl = checkTtlSeconds('ttlSeconds', ttlSeconds);
    await this.#call(() => this.#client.set(`${this.#p}:f:${enc(key)}`, JSON.stringify(value), 'PX', Math.ceil(ttl * 1000)));
  }

  async takeFlowState(key: string): Promise<FlowStateRecord | null> {
    checkId('key', key);
    // GETDEL is atomic: of any number of concurrent takers exactly one sees the value.
    const json = await this.#call(() => this.#client.getdel(`${this.#p}:f:${enc(key)}`));
    return json === null ? null : (JSON.parse(json) as FlowStateRecord);
  }

  // ---- sessions ----

  async putSession(session: SessionRecord): Promise<void> {
    checkSession(session);
    const key = `${this.#p}:s:${enc(session.id)}`;
    if (session.expiresAtMs <= Date.now()) {
      await this.#call(() => this.#client.del(key));
      return;
    }
    await this.#call(() => this.#client.set(key, JSON.stringify(session), 'PXAT', session.expiresAtMs));
  }

  async getSession(id: string): Promise<SessionRecord | null> {
    checkId('id', id);
    const json = await this.#call(() => this.#client.get(`${this.#p}:s:${enc(id)}`));
    if (json === null) return null;
    const session = JSON.parse(json) as SessionRecord;
    // Redis expires the key on its own clock; also honour ours so both adapters agree at the edge.
    return session.expiresAtMs > Date.now() ? session : null;
  }

  async deleteSession(id: string): Promise<void> {
    checkId('id', id);
    await this.#call(() => this.#client.del(`${this.#p}:s:${enc(id)}`));
  }

  // ---- grants ----

  async putGrant(grant: GrantRecord): Promise<void> {
    checkGrant(grant);
    const json = JSON.stringify(grant);
    const { all, svc } = this.#grantKeys(grant.serviceId);
    // Optimistic: read the current grant to learn which service index it leaves; the script
    // applies only if the grant is still what we read.
    for (let attempt = 0; attempt < 10; attempt++) {
      const seen = await this.#call(() => this.#client.hget(all, grant.id));
      const oldSvc = seen === null ? svc : this.#grantKeys((JSON.parse(seen) as GrantRecord).serviceId).svc;
      const done = await this.#call(() => this.#scripts.linkvaultPutGrant(all, svc, oldSvc, grant.id, json, seen ?? ''));
      if (done === 1) return;
    }
    throw new LinkvaultError('conflict', { detail: 'the grant kept changing concurrently' });
  }

  async getGrant(id: string): Promise<GrantRecord | null> {
    checkId('id', id);
    const json = await this.#call(() => this.#client.hget(this.#grantKeys('').all, id));
    return json === null ? null : (JSON.parse(json) as GrantRecord);
  }

  async listGrants(serviceId?: string): Promise<GrantRecord[]> {
    const key = serviceId === undefined ? this.#grantKeys('').all : this.#grantKeys(checkId('serviceId', serviceId)).svc;
    const values = await this.#call(() => this.#client.hvals(key));
    return values
      .map((v) => JSON.parse(v) as GrantRecord)
      .sort((a, b) => (a.createdAtMs !== b.createdAtMs ? a.createdAtMs - b.createdAtMs : a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  async deleteGrant(id: string): Promise<boolean> {
    checkId('id', id);
    const { all } = this.#grantKeys('');
    for (let attempt = 0; attempt < 10; attempt++) {
      const seen = await this.#call(() => this.#client.hget(all, id));
      if (seen === null) return false;
      const { svc } = this.#grantKeys((JSON.parse(seen) as GrantRecord).serviceId);
      const result = await this.#call(() => this.#scripts.linkvaultDeleteGrant(all, svc, id, seen));
      if (result !== -1) return result === 1;
    }
    throw new LinkvaultError('conflict', { detail: 'the grant kept changing concurrently' });
  }

  // ---- revocation records ----

  async putRevocation(row: RevocationRecordRow): Promise<void> {
    checkObject('row', row);
    checkId('row.linkId', row.linkId);
    checkObject('row.record', row.record);
    await this.#setJson(`${this.#p}:rv:${enc(row.linkId)}`, row.record);
  }

  async getRevocation(linkId: string): Promise<RevocationRecordRow | null> {
    checkId('linkId', linkId);
    const record = await this.#getJson(`${this.#p}:rv:${enc(linkId)}`);
    return record === null ? null : { linkId, record };
  }

  // ---- locks ----

  async acquireLock(name: string, ttlMs: number): Promise<string | null> {
    checkId('name', name);
    checkPositiveInt('ttlMs', ttlMs);
    const owner = randomToken();
    const ok = await this.#call(() => this.#client.set(`${this.#p}:lk:${enc(name)}`, owner, 'PX', ttlMs, 'NX'));
    return ok === 'OK' ? owner : null;
  }

  async extendLock(name: string, owner: string, ttlMs: number): Promise<boolean> {
    checkId('name', name);
    checkId('owner', owner);
    checkPositiveInt('ttlMs', ttlMs);
    return (await this.#call(() => this.#scripts.linkvaultExtendLock(`${this.#p}:lk:${enc(name)}`, owner, String(ttlMs)))) === 1;
  }

  async releaseLock(name: string, owner: string): Promise<boolean> {
    checkId('name', name);
    checkId('owner', owner);
    return (await this.#call(() => this.#scripts.linkvaultReleaseLock(`${this.#p}:lk:${enc(name)}`, owner))) === 1;
  }

  // ---- audit ----

  async appendAudit(event: AuditEvent): Promise<string> {
    checkAuditEvent(event);
    const json = JSON.stringify({ atMs: event.atMs, type: event.type, requestId: event.requestId ?? null, data: event.data });
    const id = await this.#call(() => this.#client.xadd(this.#auditKey, '*', 'e', json));
    if (id === null) throw new LinkvaultError('internal_error', { detail: 'XADD returned no id' });
    return id;
  }

  async readAudit(afterSeq?: string, limit?: number): Promise<AuditEvent[]> {
    const max = checkLimit(limit, 1000);
    if (afterSeq !== undefined && (typeof afterSeq !== 'string' || !/^\d{1,20}-\d{1,20}$/.test(afterSeq))) refuseAuditCursor();
    // `(id` is an exclusive range start (Redis 6.2+): strictly after afterSeq.
    const start = afterSeq === undefined ? '-' : `(${afterSeq}`;
    const entries = await this.#call(() => this.#client.xrange(this.#auditKey, start, '+', 'COUNT', max));
    return entries.map(([seq, fields]) => {
      const json = fields[fields.indexOf('e') + 1]!;
      const e = JSON.parse(json) as Omit<AuditEvent, 'seq'>;
      return { seq, atMs: e.atMs, type: e.type, requestId: e.requestId ?? null, data: e.data };
    });
  }

  // ---- queue ----

  async enqueue(job: Omit<QueueJob, 'leaseToken'>): Promise<void> {
    checkJob(job);
    await this.#call(() =>
      this.#scripts.linkvaultEnqueue(...this.#queueKeys(), job.id, job.kind, JSON.stringify(job.payload), String(job.attempts), String(job.runAtMs)),
    );
  }

  async claimJobs(nowMs: number, limit: number, leaseMs: number): Promise<QueueJob[]> {
    checkTimeMs('nowMs', nowMs);
    checkPositiveInt('limit', limit, 1000);
    checkPositiveInt('leaseMs', leaseMs);
    const flat = await this.#call(() =>
      this.#scripts.linkvaultClaimJobs(...this.#queueKeys(), String(nowMs), String(limit), String(nowMs + leaseMs), randomToken()),
    );
    const jobs: QueueJob[] = [];
    for (let i = 0; i + 5 < flat.length; i += 6) {
      jobs.push({
        id: flat[i]!,
        kind: flat[i + 1]!,
        payload: JSON.parse(flat[i + 2] ?? '{}') as Record<string, unknown>,
        attempts: Number(flat[i + 3] ?? 0),
        runAtMs: Number(flat[i + 4] ?? nowMs),
        leaseToken: flat[i + 5]!,
      });
    }
    return jobs;
  }

  async completeJob(id: string, leaseToken: string): Promise<boolean> {
    checkId('id', id);
    checkId('leaseToken', leaseToken);
    return (await this.#call(() => this.#scripts.linkvaultCompleteJob(...this.#queueKeys(), id, leaseToken))) === 1;
  }

  async rescheduleJob(id: string, leaseToken: string, runAtMs: number, attempts: number, payload?: Readonly<Record<string, unknown>>): Promise<boolean> {
    checkId('id', id);
    checkId('leaseToken', leaseToken);
    checkTimeMs('runAtMs', runAtMs);
    checkAttempts(attempts);
    const payloadJson = payload === undefined ? '' : JSON.stringify(checkObject('payload', payload));
    return (
      (await this.#call(() => this.#scripts.linkvaultRescheduleJob(...this.#queueKeys(), id, leaseToken, String(runAtMs), String(attempts), payloadJson))) === 1
    );
  }

  async countJobs(): Promise<number> {
    return this.#call(() => this.#client.zcard(this.#queueKeys()[0]!));
  }

  async *scanJobs(): AsyncIterable<ScannedJob> {
    const seen = new Set<string>();
    let cursor = '0';
    do {
      const flat = await this.#call(() => this.#scripts.linkvaultScanJobs(...this.#queueKeys(), cursor, '200'));
      cursor = String(flat[0]);
      for (let i = 1; i + 5 < flat.length; i += 6) {
        const id = String(flat[i]);
        if (seen.has(id)) continue;
        seen.add(id);
        yield {
          id,
          kind: String(flat[i + 1]),
          payload: JSON.parse(String(flat[i + 2])) as Record<string, unknown>,
          attempts: Number(flat[i + 3]),
          runAtMs: Number(flat[i + 4]),
          leased: String(flat[i + 5]) === '1',
        };
      }
    } while (cursor !== '0');
  }

  async replaceJobPayload(id: string, expected: Readonly<Record<string, unknown>>, payload: Readonly<Record<string, unknown>>): Promise<boolean> {
    checkId('id', id);
    const expectedJson = JSON.stringify(checkObject('expected', expected));
    const payloadJson = JSON.stringify(checkObject('payload', payload));
    return (await this.#call(() => this.#scripts.linkvaultReplaceJobPayload(...this.#queueKeys(), id, expectedJson, payloadJson))) === 1;
  }

  // ---- job status ----

  async putJobStatus(row: JobStatusRecord): Promise<void> {
    checkObject('row', row);
    checkId('row.id', row.id);
    checkObject('row.status', row.status);
    await this.#setJson(`${this.#p}:js:${enc(row.id)}`, row.status);
  }

  async getJobStatus(id: string): Promise<JobStatusRecord | null> {
    checkId('id', id);
    const status = await this.#getJson(`${this.#p}:js:${enc(id)}`);
    return status === null ? null : { id, status };
  }

  // ---- maintenance ----

  async *scanLinkIds(): AsyncIterable<string> {
    for (const tenant of await this.#allTenants()) {
      const index = `${redisTenantTag(this.#p, tenant)}:ix:all`;
      // ZSCAN returns every member present for the whole scan, possibly more than once.
      const seen = new Set<string>();
      let cursor = '0';
      do {
        const [next, flat] = await this.#call(() => this.#client.zscan(index, cursor, 'COUNT', 500));
        cursor = next;
        for (let i = 0; i < flat.length; i += 2) {
          const id = flat[i]!;
          if (seen.has(id)) continue;
          seen.add(id);
          yield id;
        }
      } while (cursor !== '0');
    }
  }
}
