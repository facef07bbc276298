/**
 * The Store port: everything linkvault keeps. Two adapters implement it (sqlite-store.ts,
 * redis-store.ts) and one contract suite (test/store/store-contract.ts) runs against each.
 *
 * Failure behaviour, for every method: when the backing store cannot be reached or does not
 * answer within about a second, the method rejects with LinkvaultError('store_unavailable')
 * (503, Retry-After). No method ever hangs. Invalid input rejects invalid_request, the same for
 * every adapter (checked-store.ts checks it before an adapter sees it). Values are stored as given:
 * the store never sees plaintext token material, only SealedRecord objects that keys/vault.ts produced.
 */
import type { LinkFilter, LinkRecord } from '../links/link.js';
import type { SessionRecord } from '../links/connect/sessions.js';
import type { GrantRecord } from '../links/release/grants.js';
import type { SealedRecord } from '../keys/sealed-record.js';

/** Server-side state of one authorization request, keyed by a hash of `state`. Opaque JSON to the store. */
export type FlowStateRecord = Readonly<Record<string, unknown>>;

export interface RevocationRecordRow {
  readonly linkId: string;
  /** The full revocation record as the API returns it (snake_case JSON), no token material. */
  readonly record: Readonly<Record<string, unknown>>;
}

export interface AuditEvent {
  /** Assigned by the store on append; strictly increasing. */
  readonly seq?: string;
  readonly atMs: number;
  readonly type: string;
  readonly requestId?: string | null;
  readonly data: Readonly<Record<string, unknown>>;
}

export interface QueueJob {
  readonly id: string;
  readonly kind: string;
  readonly payload: Readonly<Record<string, unknown>>;
  readonly attempts: number;
  readonly runAtMs: number;
  /** Set on a claimed job; proves ownership to complete or reschedule it. */
  readonly leaseToken?: string;
}

/**
 * A queued job as a maintenance scan sees it. Never carries the lease token: a scan must not be
 * able to complete or reschedule a job it did not claim.
 */
export interface ScannedJob {
  readonly id: string;
  readonly kind: string;
  readonly payload: Readonly<Record<string, unknown>>;
  readonly attempts: number;
  readonly runAtMs: number;
  /** True while a claimer holds a lease on the job (including a lease that ran out but was not yet re-claimed). */
  readonly leased: boolean;
}

export interface JobStatusRecord {
  readonly id: string;
  readonly status: Readonly<Record<string, unknown>>;
}

/** Lifecycle shared by every adapter. */
export interface StoreLifecycle {
  readonly kind: 'sqlite' | 'redis';
  /** Resolves when the store answers a trivial command; rejects store_unavailable otherwise. */
  ping(): Promise<void>;
  /** Closes connections; idempotent. */
  close(): Promise<void>;
}

/** Linked accounts, versioned by compare-and-set, with their listing and expiry indexes. */
export interface LinkStore {
  /** The link, or null when absent. */
  getLink(id: string): Promise<LinkRecord | null>;
  /** Links matching every given field, newest first, at most `limit` (default 1000). */
  listLinks(filter: LinkFilter, limit?: number): Promise<LinkRecord[]>;
  /**
   * Compare-and-set write. `expectedVersion` null means "create; fail if it exists".
   * Stores the link with version `(expectedVersion ?? 0) + 1` and returns the stored record, or
   * null when the current version differs (or the link exists, on create). Indexes stay consistent atomically.
   */
  saveLink(link: LinkRecord, expectedVersion: number | null): Promise<LinkRecord | null>;
  /** Sets lastUsedAtMs without a version bump (best effort, monotonic: never moves backwards). */
  touchLink(id: string, lastUsedAtMs: number): Promise<void>;
  /**
   * The expiry index (the background refresher's candidates; served from an index, never a scan of
   * every link): active links whose accessTokenExpiresAtMs is non-null and < `cutoffMs` — and active
   * links marked refresh-uncertain, which are due at once — soonest first (ties by id), at most
   * `limit` (1-10000). The index is kept by saveLink atomically with the link (expiry-index-score.ts).
   */
  listLinksExpiringBefore(cutoffMs: number, limit: number): Promise<LinkRecord[]>;
  /** Every link id, for rewrap and scans; an async iterator so large stores stream. */
  scanLinkIds(): AsyncIterable<string>;
}

/** One-time authorization-request state. */
export interface FlowStateStore {
  /** Stores state under `key` for `ttlSeconds`. */
  putFlowState(key: string, value: FlowStateRecord, ttlSeconds: number): Promise<void>;
  /** Atomically reads and deletes: at most one caller ever gets the value; null when absent or expired. */
  takeFlowState(key: string): Promise<FlowStateRecord | null>;
}

/** Connect sessions, each living until its expiresAtMs. */
export interface SessionStore {
  /** Stores a session until `expiresAtMs`. */
  putSession(session: SessionRecord): Promise<void>;
  /** The session, or null when absent or expired. */
  getSession(id: string): Promise<SessionRecord | null>;
  /** Deletes the session; a no-op when absent. */
  deleteSession(id: string): Promise<void>;
}

/** Token-release grants of services. */
export interface GrantStore {
  /** Creates or replaces the grant (moving it between service listings when its service changed). */
  putGrant(grant: GrantRecord): Promise<void>;
  /** The grant, or null when absent. */
  getGrant(id: string): Promise<GrantRecord | null>;
  /** Grants of one service (all grants when serviceId is omitted), oldest first. */
  listGrants(serviceId?: string): Promise<GrantRecord[]>;
  /** True when a grant was deleted. */
  deleteGrant(id: string): Promise<boolean>;
}

/** What a revocation did, per link, kept after the link's tokens are shredded. */
export interface RevocationRecordStore {
  /** Creates or replaces the record of `row.linkId`. */
  putRevocation(row: RevocationRecordRow): Promise<void>;
  /** The record, or null when the link was never revoked through linkvault. */
  getRevocation(linkId: string): Promise<RevocationRecordRow | null>;
}

/** Status documents of background jobs (bulk revocations), read by the API while the job runs. */
export interface DocumentStore {
  /** Creates or replaces the status of job `row.id`. */
  putJobStatus(row: JobStatusRecord): Promise<void>;
  /** The status, or null when no such job was recorded. */
  getJobStatus(id: string): Promise<JobStatusRecord | null>;
}

/** Named leases with an expiry, owned by a random token. */
export interface LockStore {
  /** Takes the lock for `ttlMs` when free (or expired); returns an owner token, or null when held by another. */
  acquireLock(name: string, ttlMs: number): Promise<string | null>;
  /** Extends the lock only when `owner` still holds it. */
  extendLock(name: string, owner: string, ttlMs: number): Promise<boolean>;
  /** Releases only when `owner` still holds it; true when released. */
  releaseLock(name: string, owner: string): Promise<boolean>;
}

/**
 * The append-only audit log, kept in shards (docs/architecture.md, "The store"): SQLite has one
 * shard (`main`); Redis has one shard per tenant (`t:<tenant>`, in the tenant's hash slot, beside
 * its links) plus `global` for events that name no tenant. An event whose `data.tenant_id` is a
 * string goes to that tenant's shard. Within a shard, seq is strictly increasing and exact for
 * paging; readAudit merges every shard (for tests and small stores: an exporter pages each shard).
 */
export interface AuditLogStore {
  /** Appends and returns the assigned sequence id. Rejects (store_unavailable) rather than dropping the event. */
  appendAudit(event: AuditEvent): Promise<string>;
  /** Events with seq strictly after `afterSeq` (from the start when omitted), oldest first, at most `limit`. */
  readAudit(afterSeq?: string, limit?: number): Promise<AuditEvent[]>;
  /** Every audit shard that may hold events (a shard is registered before its first event is stored). */
  listAuditShards(): Promise<string[]>;
  /**
   * The shards that may hold events appended since the previous call (by any process), taken: the
   * next call answers only later ones. Null when some were lost and every shard should be visited.
   * A store without it (SQLite: one shard) is visited whole on every pass. Hints come after their
   * events are stored and may be late (Redis: up to 250 ms from another process), so a reader that
   * relies on them also visits every shard now and then (the audit exporter: every minute).
   */
  takeChangedAuditShards?(): Promise<string[] | null>;
  /** Events of one shard with seq strictly after `afterSeq`, oldest first, at most `limit` (seqs as readAudit returns them). */
  readAuditShard(shard: string, afterSeq?: string, limit?: number): Promise<AuditEvent[]>;
  /**
   * Deletes from `shard` its oldest events with seq at or before `throughSeq` (null: any seq) so that
   * at most `keep` of those remain; a later event is never touched. Returns how many were deleted.
   */
  trimAuditShard(shard: string, throughSeq: string | null, keep: number): Promise<number>;
  /**
   * The retained events that match `filter`, a page at a time. A tenant (or a link, whose tenant
   * the store knows) narrows the read to that tenant's shard; otherwise every shard is read, one
   * after the other. Within a shard events come in seq order (`order`); `after` is the `next` of the
   * previous page (opaque).
   */
  queryAudit(filter: AuditFilter, options: AuditQueryOptions): Promise<AuditPage>;
}

/** What an audit query selects; every field given must match. */
export interface AuditFilter {
  readonly tenantId?: string;
  readonly linkId?: string;
  readonly serviceId?: string;
  readonly type?: string;
}

export interface AuditQueryOptions {
  readonly after?: string;
  readonly limit: number;
  readonly order: 'asc' | 'desc';
}

/** One page of an audit query: events with the shard that keeps them, and the cursor of the next page. */
export interface AuditPage {
  readonly events: readonly (AuditEvent & { readonly shard: string })[];
  readonly next: string | null;
}

/** What a token release reads, in one step: the link and the grants that could match it. */
export interface ReleaseRead {
  readonly link: LinkRecord;
  /**
   * The grants of the service that could match the link, from indexes (never a scan of the
   * service's grants): grants naming the link, and grants naming no link that name the link's
   * tenant (for its provider or for any). Unfiltered for expiry, scopes and the fields a grant
   * sets: the domain's matching (grants.ts) decides. A superset of the matching grants; order unspecified.
   */
  readonly grants: readonly GrantRecord[];
}

/**
 * What commitRelease did: stored the record, or nothing because the link is gone, not active (its
 * status), holds no tokens, the grant is gone, or (only when the caller said what it expected) the
 * link or the grant is no longer the one the caller decided on (`changed`: read again and decide again).
 */
export type ReleaseCommit =
  | { readonly released: true; readonly seq: string }
  | {
      readonly released: false;
      readonly reason: 'link_not_found' | 'no_tokens' | 'grant_gone' | 'changed';
    }
  | { readonly released: false; readonly reason: 'not_active'; readonly status: string };

/** What the release decided on: commitRelease stores its record only if both are still exactly these. */
export interface ReleaseExpectation {
  /** The version of the link whose tokens are released. */
  readonly linkVersion: number;
  /** The grant as readForRelease returned it (its stored form is compared, not just its id). */
  readonly grant: GrantRecord;
}

/** The token release's two store steps (docs/architecture.md, "The store"). */
export interface ReleaseStore {
  /** The link `linkId` and the grants of `serviceId` that could match it; null when there is no such link. */
  readForRelease(serviceId: string, linkId: string): Promise<ReleaseRead | null>;
  /**
   * The release's linearisation point, one atomic store operation: appends `event` to the link's
   * tenant audit shard only if, at that instant, link `linkId` exists, is active, holds tokens, and
   * grant `grantId` still exists. A revocation, a needs_reauth write or a grant deletion that
   * completed before this call makes it refuse; one that starts after it finds the record stored.
   * With `expect`, it also refuses (`changed`) unless the link is still at that version and the
   * grant is stored exactly as the caller read it (replaced, narrowed, re-pointed: changed), so a
   * release may decide on a read it holds from before and let this step confirm it.
   */
  commitRelease(
    linkId: string,
    grantId: string,
    event: AuditEvent,
    expect?: ReleaseExpectation,
  ): Promise<ReleaseCommit>;
}

/** The durable work queue: jobs claimed under a lease, completed or rescheduled by the lease holder. */
export interface JobQueueStore {
  /** Adds a job (idempotent by id: an existing job with this id is left as it is). */
  enqueue(job: Omit<QueueJob, 'leaseToken'>): Promise<void>;
  /**
   * Claims up to `limit` jobs due at `nowMs`, leasing each for `leaseMs`: a claimed job is invisible
   * to other claimers until the lease ends, then due again (a crashed worker's job comes back).
   */
  claimJobs(nowMs: number, limit: number, leaseMs: number): Promise<QueueJob[]>;
  /** Removes a claimed job; false when the lease was lost. */
  completeJob(id: string, leaseToken: string): Promise<boolean>;
  /** Puts a claimed job back for `runAtMs` with its attempt count and payload updated; false when the lease was lost. */
  rescheduleJob(
    id: string,
    leaseToken: string,
    runAtMs: number,
    attempts: number,
    payload?: Readonly<Record<string, unknown>>,
  ): Promise<boolean>;
  /** Number of jobs queued (due or not). */
  countJobs(): Promise<number>;
  /**
   * Every queued job (due or not, leased or not), for maintenance (rewrap); an async iterator so a
   * long queue streams. A job present for the whole scan is yielded exactly once; one enqueued or
   * finished during the scan may or may not be.
   */
  scanJobs(): AsyncIterable<ScannedJob>;
  /**
   * Maintenance write without a lease: atomically replaces the job's payload with `payload` only when
   * the job exists, no lease is held on it (`leased` false: a claimer holds the payload in memory and
   * would write it back), and its stored payload is still exactly `expected` (as a scan returned it).
   * Attempts, run time and due order are left as they are. True when replaced; false otherwise, so a
   * worker's reschedule or completion is never overwritten (compare-and-set, like saveLink).
   */
  replaceJobPayload(
    id: string,
    expected: Readonly<Record<string, unknown>>,
    payload: Readonly<Record<string, unknown>>,
  ): Promise<boolean>;
}

/** A receiver of lifecycle webhooks. The signing secret is sealed like a token set. */
export interface WebhookEndpointRecord {
  readonly id: string;
  readonly url: string;
  /** Event types delivered; null for every type. */
  readonly events: readonly string[] | null;
  /** Only events of links in this tenant; null for every tenant. */
  readonly tenantId: string | null;
  readonly secret: SealedRecord;
  readonly createdAtMs: number;
  /** Set when the receiver answered 410 Gone: nothing more is delivered. */
  readonly disabledAtMs: number | null;
  readonly disabledReason: string | null;
}

/** Where one event's delivery to one endpoint stands. */
export interface WebhookDeliveryRecord {
  readonly endpointId: string;
  readonly eventId: string;
  readonly type: string;
  readonly status: 'delivered' | 'retrying' | 'failed';
  readonly attempts: number;
  readonly lastStatusCode: number | null;
  readonly nextAttemptAtMs: number | null;
  readonly updatedAtMs: number;
}

/** Webhook endpoints and their recent deliveries. */
export interface WebhookStore {
  /** Creates or replaces the endpoint. */
  putWebhookEndpoint(endpoint: WebhookEndpointRecord): Promise<void>;
  /** The endpoint, or null when absent. */
  getWebhookEndpoint(id: string): Promise<WebhookEndpointRecord | null>;
  /** Every endpoint, oldest first. */
  listWebhookEndpoints(): Promise<WebhookEndpointRecord[]>;
  /** Deletes the endpoint and its delivery records; true when it existed. */
  deleteWebhookEndpoint(id: string): Promise<boolean>;
  /** Creates or replaces the record of (endpointId, eventId); only the newest 100 per endpoint are kept. */
  putWebhookDelivery(delivery: WebhookDeliveryRecord): Promise<void>;
  /** The endpoint's delivery records, most recently updated first, at most `limit`. */
  listWebhookDeliveries(endpointId: string, limit: number): Promise<WebhookDeliveryRecord[]>;
}

/** Deliveries kept per webhook endpoint. */
export const WEBHOOK_DELIVERIES_KEPT = 100;

/** Everything linkvault keeps; factories ask for the capabilities they use (`Pick<Store, ...>` or one of the parts). */
export interface Store
  extends
    StoreLifecycle,
    LinkStore,
    FlowStateStore,
    SessionStore,
    GrantStore,
    RevocationRecordStore,
    DocumentStore,
    LockStore,
    AuditLogStore,
    ReleaseStore,
    JobQueueStore,
    WebhookStore {}
