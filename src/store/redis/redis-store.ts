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
import { randomBytes } from 'node:crypto';
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

/** The store's own guard fires shortly after ioredis's command timeout. */
const GUARD_MS = REDIS_COMMAND_TIMEOUT_MS + 200;

export interface RedisStoreOptions {
  readonly client: RedisClient;
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
  readonly #keys: RedisKeys;
  readonly #log: Logger | undefined;
  readonly #onUnavailable: (() => void) | undefined;
  readonly #tenantOfLink = new Map<string, string>();
  readonly #tenantCacheSize: number;
  readonly #replicaWait: ReplicaWait | undefined;
  readonly #webhooks: WebhookStore;
  #closed = false;
  /** Set once this process knows every link is in the expiry index (#ensureExpiryIndex). */
  #expiryIndexBuilt = false;
  #lastErrorLogMs = 0;

  constructor(options: RedisStoreOptions) {
    if (!/^[A-Za-z0-9_.-]{1,32}$/.test(options.keyPrefix))
      throw new Error('keyPrefix must be 1-32 characters of letters, digits, _ . -');
    this.#client = options.client;
    this.#keys = new RedisKeys(options.keyPrefix);
    this.#log = options.log;
    this.#onUnavailable = options.onUnavailable;
    this.#tenantCacheSize = options.tenantCacheSize ?? 100_000;
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

  /** After a write that must not be lost: wait for the replicas (never rejects; see replica-wait.ts). */
  async #awaitReplicas(): Promise<void> {
    if (this.#replicaWait) await this.#replicaWait.afterWrite();
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
    if (this.#closed) return;
    this.#closed = true;
    const client = this.#client;
    if (client.status === 'ready') {
      await Promise.race([
        client.quit().catch(() => undefined),
        new Promise((resolve) => setTimeout(resolve, GUARD_MS).unref()),
      ]);
    }
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
      ),
    );
    if (result === null) return null;
    this.#remember(id, tenantId);
    await this.#awaitReplicas();
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

  async putGrant(grant: GrantRecord): Promise<void> {
    const json = JSON.stringify(grant);
    const { all, svc } = this.#keys.grants(grant.serviceId);
    // Optimistic: read the current grant to learn which service index it leaves; the script
    // applies only if the grant is still what we read.
    for (let attempt = 0; attempt < 10; attempt++) {
      const seen = await this.#call(() => this.#client.hget(all, grant.id));
      const oldSvc =
        seen === null ? svc : this.#keys.grants((JSON.parse(seen) as GrantRecord).serviceId).svc;
      const done = await this.#call(() =>
        this.#scripts.linkvaultPutGrant(all, svc, oldSvc, grant.id, json, seen ?? ''),
      );
      if (done === 1) return;
    }
    throw new LinkvaultError('conflict', { detail: 'the grant kept changing concurrently' });
  }

  async getGrant(id: string): Promise<GrantRecord | null> {
    const json = await this.#call(() => this.#client.hget(this.#keys.grants('').all, id));
    return json === null ? null : (JSON.parse(json) as GrantRecord);
  }

  async listGrants(serviceId?: string): Promise<GrantRecord[]> {
    const key =
      serviceId === undefined ? this.#keys.grants('').all : this.#keys.grants(serviceId).svc;
    const values = await this.#call(() => this.#client.hvals(key));
    return values
      .map((v) => JSON.parse(v) as GrantRecord)
      .sort((a, b) =>
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
    const { all } = this.#keys.grants('');
    for (let attempt = 0; attempt < 10; attempt++) {
      const seen = await this.#call(() => this.#client.hget(all, id));
      if (seen === null) return false;
      const { svc } = this.#keys.grants((JSON.parse(seen) as GrantRecord).serviceId);
      const result = await this.#call(() => this.#scripts.linkvaultDeleteGrant(all, svc, id, seen));
      if (result !== -1) return result === 1;
    }
    throw new LinkvaultError('conflict', { detail: 'the grant kept changing concurrently' });
  }

  // ---- revocation records ----

  async putRevocation(row: RevocationRecordRow): Promise<void> {
    await this.#putDocument('rv', row.linkId, row.record);
    await this.#awaitReplicas();
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

  async appendAudit(event: AuditEvent): Promise<string> {
    const json = JSON.stringify({
      atMs: event.atMs,
      type: event.type,
      requestId: event.requestId ?? null,
      data: event.data,
    });
    const id = await this.#call(() => this.#client.xadd(this.#keys.audit, '*', 'e', json));
    if (id === null) throw new LinkvaultError('internal_error', { detail: 'XADD returned no id' });
    await this.#awaitReplicas();
    return id;
  }

  async readAudit(afterSeq?: string, limit?: number): Promise<AuditEvent[]> {
    const max = limit ?? 1000;
    if (
      afterSeq !== undefined &&
      (typeof afterSeq !== 'string' || !/^\d{1,20}-\d{1,20}$/.test(afterSeq))
    )
      refuseAuditCursor();
    // `(id` is an exclusive range start (Redis 6.2+): strictly after afterSeq.
    const start = afterSeq === undefined ? '-' : `(${afterSeq}`;
    const entries = await this.#call(() =>
      this.#client.xrange(this.#keys.audit, start, '+', 'COUNT', max),
    );
    return entries.map(([seq, fields]) => {
      const json = fields[fields.indexOf('e') + 1]!;
      const e = JSON.parse(json) as Omit<AuditEvent, 'seq'>;
      return { seq, atMs: e.atMs, type: e.type, requestId: e.requestId ?? null, data: e.data };
    });
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
    await this.#awaitReplicas();
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
    if (rescheduled) await this.#awaitReplicas();
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
