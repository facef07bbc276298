/**
 * RedisStore: the Store adapter over a standalone Redis or a Redis Cluster (ioredis).
 *
 * Fail fast, never hang: the client is configured so (client.ts), and every call also runs under a
 * guard timer of our own. Any transport failure becomes LinkvaultError('store_unavailable', retry 1 s).
 * Keys are named in keys.ts, the atomic multi-key steps are the Lua scripts of scripts.ts. Input is
 * not checked here: createStore wraps the adapter in checked-store.ts.
 *
 * Hot path: getLink, touchLink and appendAudit are one round trip each once the link's tenant is cached.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Cluster } from 'ioredis';
import type { Logger } from 'pino';
import { LinkvaultError } from '../../errors.js';
import { refuseAuditCursor, refuseTenantChange } from '../store-input.js';
import { expiryIndexScore } from '../expiry-index-score.js';
import type {
  AuditEvent,
  FlowStateRecord,
  JobStatusRecord,
  QueueJob,
  ReleaseCommit,
  ReleaseExpectation,
  ReleaseRead,
  RevocationRecordRow,
  ScannedJob,
  Store,
} from '../store.js';
import type { GrantRecord } from '../../links/release/grants.js';
import type { LinkFilter, LinkRecord } from '../../links/link.js';
import type { SessionRecord } from '../../links/connect/sessions.js';
import {
  REDIS_COMMAND_TIMEOUT_MS,
  describeRedisError,
  translateRedisError,
  type RedisClient,
} from './client.js';
import { RedisKeys, type RedisDocumentSlot } from './keys.js';
import { defineScripts, type ScriptCommands } from './scripts.js';
import type { ReplicaWait } from './replica-wait.js';
import type { WebhookDeliveryRecord, WebhookEndpointRecord, WebhookStore } from '../store.js';
import { createRedisWebhooks } from './redis-webhooks.js';

/** Parsed link records kept for the release read (readForRelease). */
const RELEASE_LINK_CACHE_SIZE = 10_000;
import type { AuditFilter, AuditPage, AuditQueryOptions } from '../store.js';

/** The store's own guard fires shortly after ioredis's command timeout. */
const GUARD_MS = REDIS_COMMAND_TIMEOUT_MS + 200;

export interface RedisStoreOptions {
  readonly client: RedisClient;
  /**
   * Events one audit shard may hold before appends to it fail closed (audit_unavailable): the
   * exporter (or the retention) keeps each shard below; reaching it means they have stopped. Default: no bound.
   */
  readonly auditMaxEvents?: number;
  /** Namespace for every key, so that several deployments can share one Redis. */
  readonly keyPrefix: string;
  readonly log?: Logger | undefined;
  /** Called once for every operation that failed with store_unavailable (metrics). */
  readonly onUnavailable?: () => void;
  /** Size of the in-process link id → tenant cache (tenants never change, so entries never go stale). */
  readonly tenantCacheSize?: number;
  /**
   * Waits for replicas after each write that must not be lost (saveLink, putRevocation,
   * appendAudit, enqueue, rescheduleJob); none: no wait.
   */
  readonly replicaWait?: ReplicaWait | undefined;
}

function randomToken(): string {
  return randomBytes(18).toString('base64url');
}

/**
 * The JSON of a frozen `data` object, kept per object: a token release that repeats its
 * predecessor's audit data (token-release.ts reuses the frozen object while nothing it was made of
 * changed) is serialised once, not on every release. Only frozen objects are kept, and those hold
 * primitives only (the release's data does), so the kept JSON cannot go stale.
 */
const frozenDataJson = new WeakMap<object, string>();

/** The audit event as a stream entry's `e` field (the shape every shard keeps). */
function auditJson(event: AuditEvent): string {
  const data = event.data;
  if (!Object.isFrozen(data))
    return JSON.stringify({
      atMs: event.atMs,
      type: event.type,
      requestId: event.requestId ?? null,
      data,
    });
  let json = frozenDataJson.get(data);
  if (json === undefined) {
    json = JSON.stringify(data);
    frozenDataJson.set(data, json);
  }
  // Byte for byte what JSON.stringify gives for the object above (same keys, same order).
  return `{"atMs":${JSON.stringify(event.atMs)},"type":${JSON.stringify(event.type)},"requestId":${JSON.stringify(event.requestId ?? null)},"data":${json}}`;
}

/** The audit shard of events that name no tenant (the stream of the layout before sharding). */
export const GLOBAL_AUDIT_SHARD = 'global';

function tenantShard(tenant: string): string {
  return `t:${encodeURIComponent(tenant)}`;
}

/** The public name of a tenant's shard (what listAuditShards returns). */
function tenantAuditShard(tenant: string): string {
  return tenantShard(tenant);
}

/** A query cursor: the shard and the stream id of the last entry looked at, opaque to callers. */
function encodeQueryCursor(shard: string, id: string): string {
  return Buffer.from(JSON.stringify([shard, id])).toString('base64url');
}

function queryCursor(shard: string, last: AuditEvent): string {
  return encodeQueryCursor(shard, parseAuditSeq(last.seq!).id);
}

function parseQueryCursor(cursor: string): { shard: string; id: string } {
  try {
    const [shard, id] = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown[];
    if (typeof shard === 'string' && typeof id === 'string' && /^\d{1,20}-\d{1,20}$/.test(id))
      return { shard, id };
  } catch {
    // fall through
  }
  throw new LinkvaultError('invalid_request', {
    detail: 'after is not a cursor of this audit log',
    extra: { parameter: 'after' },
  });
}

/** The tenant of shard `shard` (null for the global shard), undefined for a name that is no shard. */
function shardTenant(shard: string): string | null | undefined {
  if (shard === GLOBAL_AUDIT_SHARD) return null;
  if (!shard.startsWith('t:')) return undefined;
  try {
    return decodeURIComponent(shard.slice(2));
  } catch {
    return undefined;
  }
}

/** A seq of a tenant shard: the stream id, `/`, the URI-encoded tenant (a global seq is the stream id alone). */
function tenantSeq(id: string, tenant: string): string {
  return `${id}/${encodeURIComponent(tenant)}`;
}

const AUDIT_SEQ = /^(\d{1,20})-(\d{1,20})(?:\/([^/]{1,600}))?$/;

function parseAuditSeq(seq: string): { id: string; tenant: string | null } {
  const m = typeof seq === 'string' ? AUDIT_SEQ.exec(seq) : null;
  if (!m) refuseAuditCursor();
  if (m[3] === undefined) return { id: `${m[1]}-${m[2]}`, tenant: null };
  try {
    return { id: `${m[1]}-${m[2]}`, tenant: decodeURIComponent(m[3]) };
  } catch {
    refuseAuditCursor();
  }
}

function compareDecimal(a: string, b: string): number {
  return a.length !== b.length ? a.length - b.length : a < b ? -1 : a > b ? 1 : 0;
}

/** Global shard first, then tenants in code-unit order. */
function compareShardOrder(a: string | null, b: string | null): number {
  if (a === b) return 0;
  if (a === null) return -1;
  if (b === null) return 1;
  return a < b ? -1 : 1;
}

function compareAuditSeq(a: string, b: string): number {
  const x = parseAuditSeq(a);
  const y = parseAuditSeq(b);
  const [xm, xn] = x.id.split('-') as [string, string];
  const [ym, yn] = y.id.split('-') as [string, string];
  return compareDecimal(xm, ym) || compareDecimal(xn, yn) || compareShardOrder(x.tenant, y.tenant);
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

/** One release waiting in its tenant's queue for the commit script (see commitRelease). */
interface QueuedCommit {
  readonly linkKey: string;
  readonly grantId: string;
  /** The audit event's JSON. */
  readonly event: string;
  /** '' when the caller stated no expectation. */
  readonly linkVersion: string;
  readonly grantDigest: string;
  readonly resolve: (reply: CommitReply) => void;
  readonly reject: (err: unknown) => void;
}

/** One release's reply from COMMIT_RELEASES: 1 and the stream id, or 0, a reason and a status. */
type CommitReply = readonly [ok: number, value: string, status: string];

/**
 * At most this many releases in one script call: a larger turn's queue is split, so that no
 * single call holds Redis for long (each release costs the script a few microseconds).
 */
const MAX_COMMITS_PER_CALL = 64;

/**
 * The changed-shard hints (takeChangedAuditShards): a process adds the shards it appended to, after
 * the events are stored, to AUDIT_HINT_BUCKETS sets (a shard's bucket by a hash of its name, each in
 * its own slot) at most every HINT_FLUSH_MS; the exporter takes them. A hint is a shard name, or
 * SWEEP_HINT: this process lost hints (Redis was down for long), so the exporter should visit every
 * shard.
 */
const AUDIT_HINT_BUCKETS = 16;
const HINT_FLUSH_MS = 250;
/** Members taken by one SPOP. */
const HINT_TAKE = 1000;
const SWEEP_HINT = '*';

function hintBucket(shard: string): number {
  let h = 0;
  for (let i = 0; i < shard.length; i++) h = (h * 31 + shard.charCodeAt(i)) | 0;
  return (h >>> 0) % AUDIT_HINT_BUCKETS;
}

export class RedisStore implements Store {
  readonly kind = 'redis' as const;
  readonly #client: RedisClient;
  readonly #scripts: ScriptCommands;
  readonly #keys: RedisKeys;
  readonly #log: Logger | undefined;
  readonly #onUnavailable: (() => void) | undefined;
  readonly #tenantOfLink = new Map<string, string>();
  readonly #tenantCacheSize: number;
  /** The bound of every audit shard, as a script argument ('' = none). */
  readonly #auditMaxEvents: string;
  #lastAuditFullLogMs = 0;
  readonly #replicaWait: ReplicaWait | undefined;
  readonly #webhooks: WebhookStore;
  #closed = false;
  #closing = false;
  /** Set once this process knows every link is in the expiry index (#ensureExpiryIndex). */
  #expiryIndexBuilt = false;
  /** Set once this process knows no grant is left in the pre-index layout (#ensureGrantIndex). */
  #grantIndexChecked = false;
  /**
   * Link records the release read parsed, by id (each is one exact version: the release read sends
   * the version it holds and gets the JSON back only when it changed). Bounded; never mutated.
   */
  readonly #releaseLinks = new Map<string, LinkRecord>();
  /**
   * The SHA-1 of the stored JSON of each grant readForRelease returned: commitRelease sends it (not
   * the JSON) and the script compares it with the stored grant's.
   */
  readonly #grantDigests = new WeakMap<GrantRecord, string>();
  /** The stored JSON of each grant readForRelease returned (digested only when a release uses it). */
  readonly #grantJson = new WeakMap<GrantRecord, string>();
  /** Tenant audit shards this process has registered (#registerShard). */
  readonly #shardsKnown = new Set<string>();
  /** Audit shards this process appended to since its last hint flush (#flushHints). */
  #changedShards = new Set<string>();
  /** Set when hints were dropped (the set outgrew its bound while Redis was unreachable). */
  #hintsLost = false;
  #hintTimer: NodeJS.Timeout | null = null;
  /** Release commits waiting for the end of this event-loop turn, by tenant (null: none). */
  #commits: Map<string, QueuedCommit[]> | null = null;
  #lastErrorLogMs = 0;

  constructor(options: RedisStoreOptions) {
    if (!/^[A-Za-z0-9_.-]{1,32}$/.test(options.keyPrefix))
      throw new Error('keyPrefix must be 1-32 characters of letters, digits, _ . -');
    this.#client = options.client;
    this.#keys = new RedisKeys(options.keyPrefix);
    this.#log = options.log;
    this.#onUnavailable = options.onUnavailable;
    this.#tenantCacheSize = options.tenantCacheSize ?? 100_000;
    this.#auditMaxEvents =
      options.auditMaxEvents === undefined ? '' : String(Math.trunc(options.auditMaxEvents));
    this.#replicaWait = options.replicaWait;
    this.#scripts = defineScripts(this.#client);
    this.#webhooks = createRedisWebhooks(this.#client, options.keyPrefix, (op) => this.#call(op));
    // Without a listener ioredis prints every connection error to the console; log them, sanitised and rate-limited.
    this.#client.on('error', this.#onClientError);
  }

  readonly #onClientError = (err: unknown): void => {
    const now = Date.now();
    if (now - this.#lastErrorLogMs < 5000) return;
    this.#lastErrorLogMs = now;
    this.#log?.warn({ store: 'redis', err: describeRedisError(err) }, 'redis connection error');
  };

  /** Stores one JSON document in `slot` (revocation records, job status: the same code for both). */
  async #putDocument(
    slot: RedisDocumentSlot,
    id: string,
    value: Readonly<Record<string, unknown>>,
  ): Promise<void> {
    await this.#call(() => this.#client.set(this.#keys.document(slot, id), JSON.stringify(value)));
  }

  /** The JSON document `id` in `slot`, or null when there is none. */
  async #getDocument(slot: RedisDocumentSlot, id: string): Promise<Record<string, unknown> | null> {
    const json = await this.#call(() => this.#client.get(this.#keys.document(slot, id)));
    return json === null ? null : (JSON.parse(json) as Record<string, unknown>);
  }

  /**
   * Runs one Redis call. Rejects store_unavailable when the call fails in transport or does not
   * settle within the guard time (ioredis's own timeout should fire first; the guard also covers
   * commands a cluster holds back while it re-discovers slots).
   */
  #call<T>(op: () => Promise<T>): Promise<T> {
    if (this.#closed)
      return Promise.reject(
        this.#fail(
          new LinkvaultError('store_unavailable', {
            detail: 'the store is closed',
            retryAfterSeconds: 1,
          }),
        ),
      );
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => {
        settled = true;
        reject(
          this.#fail(
            new LinkvaultError('store_unavailable', {
              detail: `Redis did not answer within ${GUARD_MS} ms`,
              retryAfterSeconds: 1,
            }),
          ),
        );
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

  /** The digest commitRelease compares; a grant this store did not read is digested as it would be stored. */
  #grantDigest(grant: GrantRecord): string {
    let digest = this.#grantDigests.get(grant);
    if (digest === undefined) {
      const json = this.#grantJson.get(grant) ?? JSON.stringify(grant);
      digest = createHash('sha1').update(json).digest('hex');
      this.#grantDigests.set(grant, digest);
    }
    return digest;
  }

  /**
   * After a write that must not be lost: wait for the replicas of the masters holding `keys`, every
   * key the write touched (never rejects; see replica-wait.ts). Nothing to wait for (a standalone
   * Redis): no promise at all, since commitRelease calls this on every release.
   */
  #awaitReplicas(keys: readonly string[]): Promise<void> | undefined {
    return this.#replicaWait?.mayWait ? this.#replicaWait.afterWrite(keys) : undefined;
  }

  #fail(err: LinkvaultError): LinkvaultError {
    if (err.code === 'store_unavailable') this.#onUnavailable?.();
    return err;
  }

  // ---- lifecycle ----

  async ping(): Promise<void> {
    const client = this.#client;
    if (client instanceof Cluster) {
      // Ready only when every master answers and sees the cluster as whole: with a master down,
      // the links in its slots are unreachable (and PING alone still succeeds on the others).
      const masters = client.nodes('master');
      if (masters.length === 0)
        throw this.#fail(
          new LinkvaultError('store_unavailable', {
            detail: 'no Redis Cluster master known',
            retryAfterSeconds: 1,
          }),
        );
      const infos = await Promise.all(
        masters.map((node) => this.#call(() => node.call('CLUSTER', 'INFO'))),
      );
      if (!infos.every((info) => /^cluster_state:ok\b/m.test(String(info)))) {
        throw this.#fail(
          new LinkvaultError('store_unavailable', {
            detail: 'the Redis Cluster state is not ok',
            retryAfterSeconds: 1,
          }),
        );
      }
      return;
    }
    await this.#call(() => client.ping());
  }

  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    const client = this.#client;
    if (client.status === 'ready') {
      // The hints not yet flushed first (without them the exporter would find these events only at
      // its next visit of every shard), then QUIT: both within one GUARD_MS, for a hung Redis.
      const flushAndQuit = async (): Promise<void> => {
        await this.#flushHints();
        this.#closed = true;
        await client.quit().catch(() => undefined);
      };
      await Promise.race([
        flushAndQuit(),
        new Promise((resolve) => setTimeout(resolve, GUARD_MS).unref()),
      ]);
    }
    this.#closed = true;
    client.disconnect();
    client.off('error', this.#onClientError);
  }

  // ---- links ----

  /** The tenant of link `id` (cached: a link never changes tenant), or null when there is no such link. */
  async #tenantOf(id: string): Promise<string | null> {
    const cached = this.#tenantOfLink.get(id);
    if (cached !== undefined) return cached;
    const tenant = await this.#call(() => this.#client.get(this.#keys.ref(id)));
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

  /** The links `ids` of one tenant, in one round trip, in order; ids with no link are skipped. */
  async #readLinks(tenantId: string, ids: readonly string[]): Promise<LinkRecord[]> {
    const pipeline = this.#client.pipeline();
    for (const id of ids) pipeline.hmget(this.#keys.link(tenantId, id), 'j', 'u');
    const replies = await this.#call(() => pipeline.exec());
    const links: LinkRecord[] = [];
    for (const [err, reply] of replies ?? []) {
      if (err) throw this.#fail(translateRedisError(err));
      const [json, lastUsed] = reply as [string | null, string | null];
      if (json) links.push(this.#decodeLink(json, lastUsed));
    }
    return links;
  }

  async getLink(id: string): Promise<LinkRecord | null> {
    const tenant = await this.#tenantOf(id);
    if (tenant === null) return null;
    const [json, lastUsed] = await this.#call(() =>
      this.#client.hmget(this.#keys.link(tenant, id), 'j', 'u'),
    );
    return json ? this.#decodeLink(json, lastUsed ?? null) : null;
  }

  async listLinks(filter: LinkFilter, limit?: number): Promise<LinkRecord[]> {
    const max = limit ?? 1000;
    if (filter.tenantId !== undefined) return this.#listTenantLinks(filter.tenantId, filter, max);
    const found = await this.#acrossTenants((t) => this.#listTenantLinks(t, filter, max));
    return found.sort(compareNewestFirst).slice(0, max);
  }

  /** `query` asked of every tenant, 16 at a time, answers concatenated: each tenant's indexes live in their own slot. */
  async #acrossTenants<T>(query: (tenantId: string) => Promise<T[]>): Promise<T[]> {
    const tenants = await this.#allTenants();
    const found: T[] = [];
    for (let i = 0; i < tenants.length; i += 16) {
      const batch = await Promise.all(tenants.slice(i, i + 16).map(query));
      for (const part of batch) found.push(...part);
    }
    return found;
  }

  async #allTenants(): Promise<string[]> {
    const tenants = new Set<string>();
    let cursor = '0';
    do {
      const [next, members] = await this.#call(() =>
        this.#client.sscan(this.#keys.tenants, cursor, 'COUNT', 500),
      );
      cursor = next;
      for (const m of members) tenants.add(m);
    } while (cursor !== '0');
    return [...tenants];
  }

  async #listTenantLinks(tenantId: string, filter: LinkFilter, max: number): Promise<LinkRecord[]> {
    // Walk the most selective index newest first; check every field on the records themselves.
    const index = this.#keys.listingIndex(tenantId, filter);
    const pageSize = Math.min(Math.max(max, 50), 1000);
    const out: LinkRecord[] = [];
    for (let start = 0; out.length < max; start += pageSize) {
      const ids = await this.#call(() =>
        this.#client.zrevrange(index, start, start + pageSize - 1),
      );
      if (ids.length === 0) break;
      for (const link of await this.#readLinks(tenantId, ids)) {
        if (matches(link, { ...filter, tenantId }) && out.length < max) out.push(link);
      }
      if (ids.length < pageSize) break;
    }
    return out;
  }

  async saveLink(link: LinkRecord, expectedVersion: number | null): Promise<LinkRecord | null> {
    const { id, tenantId } = link;
    const linkKey = this.#keys.link(tenantId, id);
    const addKeys = this.#keys.linkIndexes(link);
    let removeKeys: string[] = [];

    if (expectedVersion === null) {
      // Claim the id for this tenant first (SET NX: the ref is immutable), and register the tenant so
      // that listings without a tenant find it. Both idempotent, so a crash before the script is harmless.
      const [claimed] = await Promise.all([
        this.#call(() => this.#client.set(this.#keys.ref(id), tenantId, 'NX')),
        this.#call(() => this.#client.sadd(this.#keys.tenants, tenantId)),
      ]);
      if (claimed !== 'OK') {
        const owner = await this.#call(() => this.#client.get(this.#keys.ref(id)));
        if (owner !== tenantId) return null;
      }
    } else {
      // The indexes to leave depend on the current record; the script re-checks the version, and a
      // version names exactly one write, so the record read here is the one the script replaces.
      const json = await this.#call(() => this.#client.hget(linkKey, 'j'));
      if (json === null) {
        const owner = await this.#call(() => this.#client.get(this.#keys.ref(id)));
        if (owner !== null && owner !== tenantId) refuseTenantChange();
        return null;
      }
      const current = JSON.parse(json) as LinkRecord;
      if (current.version !== expectedVersion) return null;
      removeKeys = this.#keys.linkIndexes(current).filter((k) => !addKeys.includes(k));
    }

    const version = (expectedVersion ?? 0) + 1;
    const stored: LinkRecord = { ...link, version };
    const expiryScore = expiryIndexScore(stored);
    const result = await this.#call(() =>
      this.#scripts.linkvaultSaveLink(
        2 + removeKeys.length + addKeys.length,
        linkKey,
        this.#keys.expiry(tenantId),
        ...removeKeys,
        ...addKeys,
        expectedVersion === null ? '' : String(expectedVersion),
        JSON.stringify(stored),
        String(version),
        String(link.createdAtMs),
        id,
        String(removeKeys.length),
        link.lastUsedAtMs === null ? '' : String(link.lastUsedAtMs),
        expiryScore === null ? '' : String(expiryScore),
        stored.tokens === null ? `${stored.status}:empty` : stored.status,
      ),
    );
    if (result === null) return null;
    this.#remember(id, tenantId);
    await this.#awaitReplicas(
      expectedVersion === null ? [linkKey, this.#keys.ref(id), this.#keys.tenants] : [linkKey],
    );
    const lastUsed = String(result[1]);
    return { ...stored, lastUsedAtMs: lastUsed === '' ? null : Number(lastUsed) };
  }

  async listLinksExpiringBefore(cutoffMs: number, limit: number): Promise<LinkRecord[]> {
    await this.#ensureExpiryIndex();
    const found = await this.#acrossTenants((t) =>
      this.#tenantLinksExpiringBefore(t, cutoffMs, limit),
    );
    found.sort((a, b) =>
      a.score !== b.score
        ? a.score - b.score
        : a.link.id < b.link.id
          ? -1
          : a.link.id > b.link.id
            ? 1
            : 0,
    );
    return found.slice(0, limit).map((f) => f.link);
  }

  async #tenantLinksExpiringBefore(
    tenantId: string,
    cutoffMs: number,
    limit: number,
  ): Promise<{ link: LinkRecord; score: number }[]> {
    const ids = await this.#call(() =>
      this.#client.zrangebyscore(
        this.#keys.expiry(tenantId),
        '-inf',
        `(${cutoffMs}`,
        'LIMIT',
        0,
        limit,
      ),
    );
    if (ids.length === 0) return [];
    const out: { link: LinkRecord; score: number }[] = [];
    for (const link of await this.#readLinks(tenantId, ids)) {
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
    const markerKey = this.#keys.expiryBuilt;
    if ((await this.#call(() => this.#client.exists(markerKey))) === 1) {
      this.#expiryIndexBuilt = true;
      return;
    }
    for (const tenant of await this.#allTenants()) {
      for await (const id of this.#scanTenantLinkIds(tenant)) {
        const json = await this.#call(() => this.#client.hget(this.#keys.link(tenant, id), 'j'));
        if (!json) continue;
        const link = JSON.parse(json) as LinkRecord;
        const score = expiryIndexScore(link);
        await this.#call(() =>
          this.#scripts.linkvaultFileExpiry(
            this.#keys.link(tenant, id),
            this.#keys.expiry(tenant),
            String(link.version),
            score === null ? '' : String(score),
            id,
          ),
        );
      }
    }
    await this.#call(() => this.#client.set(markerKey, String(Date.now())));
    this.#expiryIndexBuilt = true;
  }

  async touchLink(id: string, lastUsedAtMs: number): Promise<void> {
    const tenant = await this.#tenantOf(id);
    if (tenant === null) return;
    await this.#call(() =>
      this.#scripts.linkvaultTouchLink(this.#keys.link(tenant, id), String(lastUsedAtMs)),
    );
  }

  // ---- flow state ----

  async putFlowState(key: string, value: FlowStateRecord, ttlSeconds: number): Promise<void> {
    await this.#call(() =>
      this.#client.set(
        this.#keys.flowState(key),
        JSON.stringify(value),
        'PX',
        Math.ceil(ttlSeconds * 1000),
      ),
    );
  }

  async takeFlowState(key: string): Promise<FlowStateRecord | null> {
    // GETDEL is atomic: of any number of concurrent takers exactly one sees the value.
    const json = await this.#call(() => this.#client.getdel(this.#keys.flowState(key)));
    return json === null ? null : (JSON.parse(json) as FlowStateRecord);
  }

  // ---- sessions ----

  async putSession(session: SessionRecord): Promise<void> {
    const key = this.#keys.session(session.id);
    if (session.expiresAtMs <= Date.now()) {
      await this.#call(() => this.#client.del(key));
      return;
    }
    await this.#call(() =>
      this.#client.set(key, JSON.stringify(session), 'PXAT', session.expiresAtMs),
    );
  }

  async getSession(id: string): Promise<SessionRecord | null> {
    const json = await this.#call(() => this.#client.get(this.#keys.session(id)));
    if (json === null) return null;
    const session = JSON.parse(json) as SessionRecord;
    // Redis expires the key on its own clock; also honour ours so both adapters agree at the edge.
    return session.expiresAtMs > Date.now() ? session : null;
  }

  async deleteSession(id: string): Promise<void> {
    await this.#call(() => this.#client.del(this.#keys.session(id)));
  }

  // ---- grants ----

  /**
   * The tenant a grant is filed under (its own, or its link's when it names only a link), so its
   * release bucket shares the slot of the links it can match: the release read and commit are one
   * script each. A grant naming only a link that does not exist is refused (as by the SQLite store).
   */
  async #grantTenant(grant: GrantRecord): Promise<string> {
    if (grant.tenantId !== null) return grant.tenantId;
    const tenant = grant.linkId === null ? null : await this.#tenantOf(grant.linkId);
    if (tenant === null)
      throw new LinkvaultError('link_not_found', { detail: 'the grant names no stored link' });
    return tenant;
  }

  /** The stored grant `id` and the tenant it is filed under, or null. */
  async #readGrant(id: string): Promise<{ tenant: string; json: string } | null> {
    const tenant = await this.#call(() => this.#client.get(this.#keys.grantRef(id)));
    if (tenant === null) return null;
    const json = await this.#call(() => this.#client.hget(this.#keys.grantRecords(tenant), id));
    return json === null ? null : { tenant, json };
  }

  #grantKeys(tenant: string, grant: GrantRecord): [string, string, string] {
    return [
      this.#keys.grantRecords(tenant),
      this.#keys.grantsOfService(tenant, grant.serviceId),
      this.#keys.grantBucket(tenant, grant),
    ];
  }

  async putGrant(grant: GrantRecord): Promise<void> {
    await this.#ensureGrantIndex();
    const tenant = await this.#grantTenant(grant);
    // A replaced grant leaves its old place first (a crash in between loses the grant: fail closed).
    const seen = await this.#readGrant(grant.id);
    if (seen !== null) {
      const old = JSON.parse(seen.json) as GrantRecord;
      const removed = await this.#call(() =>
        this.#scripts.linkvaultDeleteGrant(
          ...this.#grantKeys(seen.tenant, old),
          grant.id,
          seen.json,
        ),
      );
      if (removed === -1)
        throw new LinkvaultError('conflict', { detail: 'the grant changed concurrently' });
    }
    await Promise.all([
      this.#call(() => this.#client.set(this.#keys.grantRef(grant.id), tenant)),
      this.#call(() => this.#client.sadd(this.#keys.grantServiceTenants(grant.serviceId), tenant)),
      this.#call(() => this.#client.sadd(this.#keys.grantTenants, tenant)),
    ]);
    await this.#call(() =>
      this.#scripts.linkvaultPutGrant(
        ...this.#grantKeys(tenant, grant),
        grant.id,
        JSON.stringify(grant),
      ),
    );
  }

  async getGrant(id: string): Promise<GrantRecord | null> {
    await this.#ensureGrantIndex();
    const found = await this.#readGrant(id);
    return found === null ? null : (JSON.parse(found.json) as GrantRecord);
  }

  async listGrants(serviceId?: string): Promise<GrantRecord[]> {
    await this.#ensureGrantIndex();
    const setKey =
      serviceId === undefined ? this.#keys.grantTenants : this.#keys.grantServiceTenants(serviceId);
    const tenants = await this.#call(() => this.#client.smembers(setKey));
    const grants: GrantRecord[] = [];
    for (let i = 0; i < tenants.length; i += 16) {
      const batch = await Promise.all(
        tenants
          .slice(i, i + 16)
          .map((t) =>
            this.#call(() =>
              this.#client.hvals(
                serviceId === undefined
                  ? this.#keys.grantRecords(t)
                  : this.#keys.grantsOfService(t, serviceId),
              ),
            ),
          ),
      );
      for (const values of batch) for (const v of values) grants.push(JSON.parse(v) as GrantRecord);
    }
    return grants.sort((a, b) =>
      a.createdAtMs !== b.createdAtMs
        ? a.createdAtMs - b.createdAtMs
        : a.id < b.id
          ? -1
          : a.id > b.id
            ? 1
            : 0,
    );
  }

  async deleteGrant(id: string): Promise<boolean> {
    await this.#ensureGrantIndex();
    for (let attempt = 0; attempt < 10; attempt++) {
      const seen = await this.#readGrant(id);
      if (seen === null) return false;
      const grant = JSON.parse(seen.json) as GrantRecord;
      const result = await this.#call(() =>
        this.#scripts.linkvaultDeleteGrant(...this.#grantKeys(seen.tenant, grant), id, seen.json),
      );
      if (result === -1) continue;
      if (result === 1)
        await this.#call(() => this.#client.del(this.#keys.grantRef(id))).catch(() => undefined);
      return result === 1;
    }
    throw new LinkvaultError('conflict', { detail: 'the grant kept changing concurrently' });
  }

  /**
   * Grants stored before the index lived in two hashes of one slot: the first grant call of each
   * process files any that remain into the index, then removes them from the old hashes (each only
   * after it is filed, so a crash leaves it to the next run). Idempotent across replicas.
   */
  async #ensureGrantIndex(): Promise<void> {
    if (this.#grantIndexChecked) return;
    const { all } = this.#keys.legacyGrants('');
    const legacy = await this.#call(() => this.#client.hgetall(all));
    for (const [id, json] of Object.entries(legacy)) {
      const grant = JSON.parse(json) as GrantRecord;
      this.#grantIndexChecked = true; // putGrant below must not recurse into this walk
      try {
        await this.putGrant(grant);
      } catch (err) {
        // A grant naming only a link that no longer exists can never match: drop it.
        if (!(err instanceof LinkvaultError && err.code === 'link_not_found')) {
          this.#grantIndexChecked = false;
          throw err;
        }
      }
      await this.#call(() => this.#client.hdel(this.#keys.legacyGrants(grant.serviceId).svc, id));
      await this.#call(() => this.#client.hdel(all, id));
    }
    this.#grantIndexChecked = true;
  }

  // ---- token release ----

  async readForRelease(serviceId: string, linkId: string): Promise<ReleaseRead | null> {
    const tenant = await this.#tenantOf(linkId);
    if (tenant === null) return null;
    if (!this.#grantIndexChecked) await this.#ensureGrantIndex();
    const held = this.#releaseLinks.get(linkId);
    const flat = await this.#call(() =>
      this.#scripts.linkvaultReleaseRead(
        3,
        this.#keys.link(tenant, linkId),
        this.#keys.grantBucket(tenant, { serviceId, linkId }),
        this.#keys.grantBucket(tenant, { serviceId, linkId: null }),
        held === undefined ? '' : String(held.version),
      ),
    );
    if (flat === null) {
      this.#releaseLinks.delete(linkId);
      return null;
    }
    const [version, lastUsed, json] = flat as [string, string, string];
    let parsed: LinkRecord;
    if (json === '' && held !== undefined && String(held.version) === version) parsed = held;
    else {
      parsed = JSON.parse(json) as LinkRecord;
      if (this.#releaseLinks.size >= RELEASE_LINK_CACHE_SIZE) {
        const oldest = this.#releaseLinks.keys().next().value;
        if (oldest !== undefined) this.#releaseLinks.delete(oldest);
      }
      this.#releaseLinks.set(linkId, parsed);
    }
    const link: LinkRecord =
      lastUsed === '' ? parsed : { ...parsed, lastUsedAtMs: Number(lastUsed) };
    const grants: GrantRecord[] = [];
    for (let i = 3; i < flat.length; i++) {
      const raw = flat[i]!;
      const grant = JSON.parse(raw) as GrantRecord;
      // Stored exactly as read: what commitRelease compares when the release states what it expects.
      this.#grantJson.set(grant, raw);
      grants.push(grant);
    }
    return { link, grants };
  }

  /**
   * Queued for the end of this turn of the event loop: the releases of one tenant committed in the
   * same turn go to Redis as one script call (COMMIT_RELEASES judges each on its own, in order), so
   * a loaded replica sends one command per tenant and turn instead of one per release. A failed
   * call fails each of its releases alike (audit_unavailable at the caller: no record, no token).
   */
  async commitRelease(
    linkId: string,
    grantId: string,
    event: AuditEvent,
    expect?: ReleaseExpectation,
  ): Promise<ReleaseCommit> {
    // The cached tenant without a promise (the hot path); #tenantOf reads it when not cached.
    const tenant = this.#tenantOfLink.get(linkId) ?? (await this.#tenantOf(linkId));
    // No shard registration here: a link's tenant is in the tenant set (saveLink adds it before the
    // link exists), which listAuditShards also reads. So no single-slot key is on the release path.
    if (tenant === null) return { released: false, reason: 'link_not_found' };
    const linkKey = this.#keys.link(tenant, linkId);
    const [ok, value, status] = await this.#queueCommit(
      tenant,
      linkKey,
      grantId,
      auditJson(event),
      expect === undefined ? '' : String(expect.linkVersion),
      expect === undefined ? '' : this.#grantDigest(expect.grant),
    );
    if (value === 'audit_full') throw this.#auditFull(tenantAuditShard(tenant));
    if (ok === 1) {
      await this.#awaitReplicas([linkKey]);
      return { released: true, seq: tenantSeq(value, tenant) };
    }
    if (value === 'not_active') return { released: false, reason: 'not_active', status };
    if (
      value === 'no_tokens' ||
      value === 'grant_gone' ||
      value === 'link_not_found' ||
      value === 'changed'
    )
      return { released: false, reason: value };
    throw new LinkvaultError('internal_error', { detail: 'unexpected release commit reply' });
  }

  /** Adds one release to its tenant's queue for this turn; resolves with its three reply values. */
  #queueCommit(
    tenant: string,
    linkKey: string,
    grantId: string,
    event: string,
    linkVersion: string,
    grantDigest: string,
  ): Promise<CommitReply> {
    return new Promise<CommitReply>((resolve, reject) => {
      // No closure per release: the promise's own functions are kept (a closure per call showed
      // in profiles, and more under tsx, which names each one).
      const queued: QueuedCommit = {
        linkKey,
        grantId,
        event,
        linkVersion,
        grantDigest,
        resolve,
        reject,
      };
      let queues = this.#commits;
      if (queues === null) {
        queues = this.#commits = new Map();
        setImmediate(this.#flushCommits);
      }
      const queue = queues.get(tenant);
      if (queue === undefined) queues.set(tenant, [queued]);
      else queue.push(queued);
    });
  }

  /** Sends the queued releases: one script call per tenant (per MAX_COMMITS_PER_CALL of them). */
  readonly #flushCommits = (): void => {
    const queues = this.#commits;
    this.#commits = null;
    if (queues === null) return;
    for (const [tenant, queue] of queues)
      for (let i = 0; i < queue.length; i += MAX_COMMITS_PER_CALL)
        this.#sendCommits(tenant, queue.slice(i, i + MAX_COMMITS_PER_CALL));
  };

  #sendCommits(tenant: string, queue: readonly QueuedCommit[]): void {
    const grants = this.#keys.grantRecords(tenant);
    const audit = this.#keys.tenantAudit(tenant);
    const args: string[] = [];
    for (const c of queue) args.push(c.linkKey, grants, audit);
    args.push(this.#auditMaxEvents);
    for (const c of queue) args.push(c.grantId, c.event, c.linkVersion, c.grantDigest);
    const shard = tenantShard(tenant);
    this.#call(() => this.#scripts.linkvaultCommitReleases(3 * queue.length, ...args)).then(
      (flat) => {
        // After the records are stored: a hint flushed before them could send the exporter to the
        // shard too early. (Also on a failure below, as Redis may have stored them.)
        this.#noteChanged(shard);
        if (!Array.isArray(flat) || flat.length !== 3 * queue.length) {
          const err = new LinkvaultError('internal_error', {
            detail: 'unexpected release commit reply',
          });
          for (const c of queue) c.reject(err);
          return;
        }
        for (let i = 0; i < queue.length; i++)
          queue[i]!.resolve([
            Number(flat[3 * i]),
            String(flat[3 * i + 1]),
            String(flat[3 * i + 2]),
          ]);
      },
      (err: unknown) => {
        this.#noteChanged(shard);
        for (const c of queue) c.reject(err);
      },
    );
  }

  // ---- revocation records ----

  async putRevocation(row: RevocationRecordRow): Promise<void> {
    await this.#putDocument('rv', row.linkId, row.record);
    await this.#awaitReplicas([this.#keys.document('rv', row.linkId)]);
  }

  async getRevocation(linkId: string): Promise<RevocationRecordRow | null> {
    const record = await this.#getDocument('rv', linkId);
    return record === null ? null : { linkId, record };
  }

  // ---- locks ----

  async acquireLock(name: string, ttlMs: number): Promise<string | null> {
    const owner = randomToken();
    const ok = await this.#call(() =>
      this.#client.set(this.#keys.lock(name), owner, 'PX', ttlMs, 'NX'),
    );
    return ok === 'OK' ? owner : null;
  }

  async extendLock(name: string, owner: string, ttlMs: number): Promise<boolean> {
    return (
      (await this.#call(() =>
        this.#scripts.linkvaultExtendLock(this.#keys.lock(name), owner, String(ttlMs)),
      )) === 1
    );
  }

  async releaseLock(name: string, owner: string): Promise<boolean> {
    return (
      (await this.#call(() => this.#scripts.linkvaultReleaseLock(this.#keys.lock(name), owner))) ===
      1
    );
  }

  // ---- audit ----

  /**
   * Adds the tenant's shard to the shard set before its first event (once per process): whoever
   * enumerates the shards never misses one that holds events. For events written by appendAudit
   * (not the release: commitRelease's tenant has links, so it is in the tenant set already).
   */
  async #registerShard(tenant: string): Promise<boolean> {
    if (this.#shardsKnown.has(tenant)) return false;
    await this.#call(() => this.#client.sadd(this.#keys.auditShards, tenantShard(tenant)));
    if (this.#shardsKnown.size >= this.#tenantCacheSize) this.#shardsKnown.clear();
    this.#shardsKnown.add(tenant);
    return true;
  }

  async appendAudit(event: AuditEvent): Promise<string> {
    const tenant = typeof event.data['tenant_id'] === 'string' ? event.data['tenant_id'] : null;
    const registered = tenant !== null && (await this.#registerShard(tenant));
    const key = tenant === null ? this.#keys.audit : this.#keys.tenantAudit(tenant);
    const id = await this.#call(() =>
      this.#scripts.linkvaultAppendAudit(key, auditJson(event), this.#auditMaxEvents),
    );
    if (id === null)
      throw this.#auditFull(tenant === null ? GLOBAL_AUDIT_SHARD : tenantAuditShard(tenant));
    this.#noteChanged(tenant === null ? GLOBAL_AUDIT_SHARD : tenantShard(tenant));
    await this.#awaitReplicas(registered ? [key, this.#keys.auditShards] : [key]);
    return tenant === null ? id : tenantSeq(id, tenant);
  }

  /** Remembers that `shard` holds an event the exporter has not been told of; flushed within HINT_FLUSH_MS. */
  #noteChanged(shard: string): void {
    this.#changedShards.add(shard);
    this.#armHintTimer();
  }

  /** Schedules a hint flush in HINT_FLUSH_MS unless one is scheduled (or the store is closed). */
  #armHintTimer(): void {
    if (this.#hintTimer !== null || this.#closed) return;
    this.#hintTimer = setTimeout(this.#onHintTimer, HINT_FLUSH_MS);
    this.#hintTimer.unref();
  }

  readonly #onHintTimer = (): void => {
    void this.#flushHints();
  };

  /**
   * Adds the shards noted since the last flush to their hint buckets (one SADD per bucket). What a
   * failed SADD carried is noted again for the next flush; past the tenant bound the hints are
   * dropped and replaced by SWEEP_HINT, which sends the exporter to every shard. Never rejects.
   */
  async #flushHints(): Promise<void> {
    if (this.#hintTimer !== null) clearTimeout(this.#hintTimer);
    this.#hintTimer = null;
    const shards = this.#changedShards;
    if (shards.size === 0 && !this.#hintsLost) return;
    this.#changedShards = new Set();
    const buckets = new Map<number, string[]>();
    if (this.#hintsLost) {
      this.#hintsLost = false;
      buckets.set(0, [SWEEP_HINT]);
    }
    for (const shard of shards) {
      const bucket = hintBucket(shard);
      const members = buckets.get(bucket);
      if (members === undefined) buckets.set(bucket, [shard]);
      else members.push(shard);
    }
    await Promise.all(
      [...buckets].map(async ([bucket, members]) => {
        try {
          await this.#call(() => this.#client.sadd(this.#keys.auditChanged(bucket), members));
        } catch {
          // Kept for the next flush (the failure is logged and counted by #call).
          for (const m of members)
            if (m === SWEEP_HINT) this.#hintsLost = true;
            else this.#noteChanged(m);
          if (this.#changedShards.size > this.#tenantCacheSize) {
            this.#changedShards.clear();
            this.#hintsLost = true;
          }
          if (this.#hintsLost) this.#armHintTimer();
        }
      }),
    );
  }

  /**
   * The shards appended to since the last call, by any process (taken: each hint is answered once),
   * or null when a process lost hints and every shard should be visited. This process's own pending
   * hints are flushed first, so its events stored before the call are all answered; another
   * process's are at most HINT_FLUSH_MS late.
   */
  async takeChangedAuditShards(): Promise<string[] | null> {
    await this.#flushHints();
    const shards = new Set<string>();
    let sweep = false;
    await Promise.all(
      Array.from({ length: AUDIT_HINT_BUCKETS }, async (_, bucket) => {
        const key = this.#keys.auditChanged(bucket);
        for (;;) {
          const members = await this.#call(() => this.#client.spop(key, HINT_TAKE));
          for (const m of members)
            if (m === SWEEP_HINT) sweep = true;
            else shards.add(m);
          if (members.length < HINT_TAKE) break;
        }
      }),
    );
    return sweep ? null : [...shards].sort();
  }

  /** `global`, then every tenant shard: the registered ones and every tenant that has links (a release's shard). */
  async listAuditShards(): Promise<string[]> {
    const shards = new Set<string>();
    for (const key of [this.#keys.auditShards, this.#keys.tenants]) {
      let cursor = '0';
      do {
        const [next, members] = await this.#call(() =>
          this.#client.sscan(key, cursor, 'COUNT', 500),
        );
        cursor = next;
        for (const m of members) shards.add(key === this.#keys.tenants ? tenantShard(m) : m);
      } while (cursor !== '0');
    }
    return [GLOBAL_AUDIT_SHARD, ...[...shards].sort()];
  }

  async readAuditShard(shard: string, afterSeq?: string, limit?: number): Promise<AuditEvent[]> {
    const cursor = afterSeq === undefined ? null : parseAuditSeq(afterSeq);
    const tenant = shardTenant(shard);
    if (tenant === undefined) return [];
    if (cursor !== null && cursor.tenant !== tenant) refuseAuditCursor();
    return this.#readShard(tenant, cursor === null ? '-' : `(${cursor.id}`, limit ?? 1000);
  }

  /** Entries of one shard (`tenant` null: the global one) from XRANGE start `start`. */
  async #readShard(tenant: string | null, start: string, max: number): Promise<AuditEvent[]> {
    const key = tenant === null ? this.#keys.audit : this.#keys.tenantAudit(tenant);
    const entries = await this.#call(() => this.#client.xrange(key, start, '+', 'COUNT', max));
    return entries.map(([id, fields]) => {
      const e = JSON.parse(fields[fields.indexOf('e') + 1]!) as Omit<AuditEvent, 'seq'>;
      return {
        seq: tenant === null ? id : tenantSeq(id, tenant),
        atMs: e.atMs,
        type: e.type,
        requestId: e.requestId ?? null,
        data: e.data,
      };
    });
  }

  /**
   * Every shard merged in (stream id, shard) order, after the cursor: one XRANGE per shard, so for
   * tests and small stores; a reader of a large log pages each shard (listAuditShards).
   */
  async readAudit(afterSeq?: string, limit?: number): Promise<AuditEvent[]> {
    const max = limit ?? 1000;
    const cursor = afterSeq === undefined ? null : parseAuditSeq(afterSeq);
    const tenants: (string | null)[] = (await this.listAuditShards()).map(
      (s) => shardTenant(s) ?? null,
    );
    const found: AuditEvent[] = [];
    for (let i = 0; i < tenants.length; i += 16) {
      const batch = await Promise.all(
        tenants.slice(i, i + 16).map((t) => {
          if (cursor === null) return this.#readShard(t, '-', max);
          // Same stream id in a later shard comes after the cursor; in this or an earlier one, not.
          const later = compareShardOrder(t, cursor.tenant) > 0;
          return this.#readShard(t, later ? cursor.id : `(${cursor.id}`, max);
        }),
      );
      for (const part of batch) found.push(...part);
    }
    return found.sort((a, b) => compareAuditSeq(a.seq!, b.seq!)).slice(0, max);
  }

  /**
   * The shard is at its bound: the exporter (or the retention) has stopped trimming it. Logged
   * (rate-limited) with the shard; the caller answers audit_unavailable, nothing is released.
   */
  #auditFull(shard: string): LinkvaultError {
    const now = Date.now();
    if (now - this.#lastAuditFullLogMs >= 10_000) {
      this.#lastAuditFullLogMs = now;
      this.#log?.error(
        { store: 'redis', audit_shard: shard, audit_max_events: Number(this.#auditMaxEvents) },
        'an audit shard is full (its events have not been exported): releases of its tenant fail closed until the exporter catches up',
      );
    }
    return new LinkvaultError('audit_unavailable', {
      detail: 'the audit log is full: its events have not been exported',
      retryAfterSeconds: 5,
    });
  }

  async trimAuditShard(shard: string, throughSeq: string | null, keep: number): Promise<number> {
    const tenant = shardTenant(shard);
    if (tenant === undefined) return 0;
    let end = '+';
    if (throughSeq !== null) {
      const cursor = parseAuditSeq(throughSeq);
      if (cursor.tenant !== tenant) refuseAuditCursor();
      end = cursor.id;
    }
    const key = tenant === null ? this.#keys.audit : this.#keys.tenantAudit(tenant);
    return this.#call(() => this.#scripts.linkvaultTrimAudit(key, end, keep));
  }

  async queryAudit(filter: AuditFilter, options: AuditQueryOptions): Promise<AuditPage> {
    let tenants: (string | null)[];
    // A link's events are in its tenant's shard (the link record knows the tenant; a link never
    // stored, or gone, is looked for everywhere).
    const linkTenant =
      filter.linkId !== undefined && filter.tenantId === undefined
        ? await this.#tenantOf(filter.linkId)
        : null;
    if (filter.tenantId !== undefined) tenants = [filter.tenantId];
    else if (linkTenant !== null) tenants = [linkTenant];
    else tenants = (await this.listAuditShards()).map((s) => shardTenant(s) ?? null);
    if (options.order === 'desc') tenants.reverse();
    const shardName = (t: string | null) => (t === null ? GLOBAL_AUDIT_SHARD : tenantAuditShard(t));

    let start = 0;
    let afterId: string | null = null;
    if (options.after !== undefined) {
      const cursor = parseQueryCursor(options.after);
      start = tenants.findIndex((t) => shardName(t) === cursor.shard);
      if (start < 0) return { events: [], next: null };
      afterId = cursor.id;
    }
    const matches = (e: AuditEvent) =>
      (filter.type === undefined || e.type === filter.type) &&
      (filter.linkId === undefined || e.data['link_id'] === filter.linkId) &&
      (filter.serviceId === undefined || e.data['service_id'] === filter.serviceId) &&
      (filter.tenantId === undefined || e.data['tenant_id'] === filter.tenantId);

    const found: (AuditEvent & { shard: string })[] = [];
    let scanned = 0;
    for (let i = start; i < tenants.length; i++) {
      const tenant = tenants[i]!;
      const key = tenant === null ? this.#keys.audit : this.#keys.tenantAudit(tenant);
      let from = afterId;
      afterId = null;
      for (;;) {
        const batch = await this.#call(() =>
          options.order === 'asc'
            ? this.#client.xrange(key, from === null ? '-' : `(${from}`, '+', 'COUNT', 500)
            : this.#client.xrevrange(key, from === null ? '+' : `(${from}`, '-', 'COUNT', 500),
        );
        for (const [id, fields] of batch) {
          scanned++;
          from = id;
          const e = JSON.parse(fields[fields.indexOf('e') + 1]!) as Omit<AuditEvent, 'seq'>;
          const event = {
            shard: shardName(tenant),
            seq: tenant === null ? id : tenantSeq(id, tenant),
            atMs: e.atMs,
            type: e.type,
            requestId: e.requestId ?? null,
            data: e.data,
          };
          if (!matches(event)) continue;
          if (found.length === options.limit)
            return { events: found, next: queryCursor(shardName(tenant), found.at(-1)!) };
          found.push(event);
        }
        // A page that scanned much without filling stops at a cursor (a filter over a large log).
        if (scanned >= 20_000 && from !== null)
          return { events: found, next: encodeQueryCursor(shardName(tenant), from) };
        if (batch.length < 500) break;
      }
    }
    return { events: found, next: null };
  }

  // ---- queue ----

  async enqueue(job: Omit<QueueJob, 'leaseToken'>): Promise<void> {
    await this.#call(() =>
      this.#scripts.linkvaultEnqueue(
        ...this.#keys.queue(),
        job.id,
        job.kind,
        JSON.stringify(job.payload),
        String(job.attempts),
        String(job.runAtMs),
      ),
    );
    await this.#awaitReplicas(this.#keys.queue());
  }

  async claimJobs(nowMs: number, limit: number, leaseMs: number): Promise<QueueJob[]> {
    const flat = await this.#call(() =>
      this.#scripts.linkvaultClaimJobs(
        ...this.#keys.queue(),
        String(nowMs),
        String(limit),
        String(nowMs + leaseMs),
        randomToken(),
      ),
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
    return (
      (await this.#call(() =>
        this.#scripts.linkvaultCompleteJob(...this.#keys.queue(), id, leaseToken),
      )) === 1
    );
  }

  async rescheduleJob(
    id: string,
    leaseToken: string,
    runAtMs: number,
    attempts: number,
    payload?: Readonly<Record<string, unknown>>,
  ): Promise<boolean> {
    const payloadJson = payload === undefined ? '' : JSON.stringify(payload);
    const rescheduled =
      (await this.#call(() =>
        this.#scripts.linkvaultRescheduleJob(
          ...this.#keys.queue(),
          id,
          leaseToken,
          String(runAtMs),
          String(attempts),
          payloadJson,
        ),
      )) === 1;
    if (rescheduled) await this.#awaitReplicas(this.#keys.queue());
    return rescheduled;
  }

  async countJobs(): Promise<number> {
    return this.#call(() => this.#client.zcard(this.#keys.queue()[0]!));
  }

  async *scanJobs(): AsyncIterable<ScannedJob> {
    const seen = new Set<string>();
    let cursor = '0';
    do {
      const flat = await this.#call(() =>
        this.#scripts.linkvaultScanJobs(...this.#keys.queue(), cursor, '200'),
      );
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

  async replaceJobPayload(
    id: string,
    expected: Readonly<Record<string, unknown>>,
    payload: Readonly<Record<string, unknown>>,
  ): Promise<boolean> {
    const expectedJson = JSON.stringify(expected);
    const payloadJson = JSON.stringify(payload);
    return (
      (await this.#call(() =>
        this.#scripts.linkvaultReplaceJobPayload(
          ...this.#keys.queue(),
          id,
          expectedJson,
          payloadJson,
        ),
      )) === 1
    );
  }

  // ---- job status ----

  async putJobStatus(row: JobStatusRecord): Promise<void> {
    await this.#putDocument('js', row.id, row.status);
  }

  async getJobStatus(id: string): Promise<JobStatusRecord | null> {
    const status = await this.#getDocument('js', id);
    return status === null ? null : { id, status };
  }

  // ---- webhooks (redis-webhooks.ts) ----

  putWebhookEndpoint(endpoint: WebhookEndpointRecord): Promise<void> {
    return this.#webhooks.putWebhookEndpoint(endpoint);
  }

  getWebhookEndpoint(id: string): Promise<WebhookEndpointRecord | null> {
    return this.#webhooks.getWebhookEndpoint(id);
  }

  listWebhookEndpoints(): Promise<WebhookEndpointRecord[]> {
    return this.#webhooks.listWebhookEndpoints();
  }

  deleteWebhookEndpoint(id: string): Promise<boolean> {
    return this.#webhooks.deleteWebhookEndpoint(id);
  }

  putWebhookDelivery(delivery: WebhookDeliveryRecord): Promise<void> {
    return this.#webhooks.putWebhookDelivery(delivery);
  }

  listWebhookDeliveries(endpointId: string, limit: number): Promise<WebhookDeliveryRecord[]> {
    return this.#webhooks.listWebhookDeliveries(endpointId, limit);
  }

  // ---- maintenance ----

  async *scanLinkIds(): AsyncIterable<string> {
    for (const tenant of await this.#allTenants()) yield* this.#scanTenantLinkIds(tenant);
  }

  /** Every link id of one tenant, each once (ZSCAN returns every member present for the whole scan, possibly more than once). */
  async *#scanTenantLinkIds(tenantId: string): AsyncIterable<string> {
    const index = this.#keys.allLinks(tenantId);
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
