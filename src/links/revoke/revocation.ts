import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { isLinkvaultError, LinkvaultError } from '../../errors.js';
import type { Vault } from '../../keys/vault.js';
import type { Metrics } from '../../metrics.js';
import type { Store } from '../../store/store.js';
import type { LinkFilter, LinkRecord } from '../link.js';
import type { SealedRecord } from '../../keys/sealed-record.js';
import type { Audit } from '../audit/audit.js';
import type { Catalogue } from '../../providers/catalogue.js';
import { toRfc3339 } from '../link.js';

/**
 * Revocation: a user, a service or an admin ends a link. Steps, in this order:
 *
 *   recordIntent → enqueueProviderJob → writeRecord → tombstone (CAS) → forget data key
 *
 * 1. The tombstone is one compare-and-set write: status `revoked`, tokens null. From that write
 *    on the token route answers 410 and any refresh in flight loses its own CAS write against it.
 * 2. The tokens the provider step needs are moved, still sealed, into a durable queue job written
 *    *before* the tombstone (the job is the durable intent: if this process dies between the two
 *    writes, the worker finishes the tombstone). The job's handler (provider-revocation-job.ts) revokes
 *    at the provider with retries and then deletes the job, which is the last copy of the sealed tokens.
 * 3. The revocation record (the API's RevocationRecord, plus `reason`) holds no token material.
 *
 * Providers whose catalogue style is `none` get no job: their record says `unsupported` at once
 * and the tokens are shredded by the tombstone itself.
 */

export type RevokedBy = 'user' | 'service' | 'admin' | 'provider';
export type ProviderRevocationStatus = 'confirmed' | 'unsupported' | 'pending' | 'failed';

/** The API's RevocationRecord (snake_case, as stored and returned), with `reason` added. No token material. */
export interface RevocationRecord {
  readonly link_id: string;
  readonly tenant_id: string;
  readonly user_id: string;
  readonly provider_id: string;
  readonly revoked_at: string;
  readonly revoked_by: RevokedBy;
  /** Why: `user_request`, `service_request`, a bulk job's reason, `dormant`, ... */
  readonly reason: string;
  readonly provider_revocation: {
    readonly status: ProviderRevocationStatus;
    readonly attempts: number;
  };
  readonly guidance: {
    readonly provider_name: string;
    readonly settings_url: string | null;
    readonly instructions: string | null;
    readonly privacy_policy_url: string | null;
  };
}

/** Who asks, and why. Never token material. */
export interface RevocationActor {
  readonly revokedBy: RevokedBy;
  /** The calling service (for `service`/`admin`), or the service that minted the user's session. */
  readonly serviceId: string | null;
  readonly reason: string;
  readonly requestId: string | null;
  /** Set when a bulk job asks. */
  readonly bulkJobId?: string | null;
}

export interface RevokeResult {
  readonly record: RevocationRecord;
  /** True when the link was already revoked (the existing record is returned: idempotent). */
  readonly alreadyRevoked: boolean;
}

/** Filter of a bulk revocation. A user's erasure is tenant + user. */
export interface BulkRevocationFilter {
  readonly tenantId: string | null;
  readonly userId: string | null;
  readonly providerId: string | null;
}

/** GET /v1/revocations/{job_id} (as documented, plus provider_unsupported so that the counts add up). */
export interface BulkRevocationStatus {
  readonly job_id: string;
  readonly status: 'running' | 'done';
  readonly total: number;
  readonly revoked: number;
  readonly provider_confirmed: number;
  readonly provider_failed: number;
  readonly provider_unsupported: number;
}

/** Queue job kinds owned by revocation (the worker handles exactly these). */
export const PROVIDER_REVOCATION_JOB_KIND = 'revocation.provider';
export const BULK_REVOCATION_JOB_KIND = 'revocation.bulk';

/** Audit event types written by revocation (and the provider-started one token release writes). */
export const REVOCATION_AUDIT = {
  requested: 'link.revocation_requested',
  tombstoned: 'link.tombstoned',
  /** data: {outcome: confirmed|unsupported|failed|retry|already_invalid|skipped, attempts, token_type_hint?, error_code?} */
  providerOutcome: 'link.provider_revocation',
  /** data: {where: 'link' | 'revocation_job'} — the sealed record (with its wrapped data key) is gone from there. */
  shredded: 'link.shredded',
  /** Tokens a refresh obtained after the tombstone, revoked at the provider (never stored on the link). */
  orphanTokens: 'link.orphan_tokens_revoked',
  /** Revocation the provider started: a refresh answered invalid_grant; the link is needs_reauth (token release writes it). */
  providerInvalidatedGrant: 'link.needs_reauth',
  bulkStarted: 'revocation.bulk_started',
  bulkDone: 'revocation.bulk_done',
} as const;

/** Payload of a PROVIDER_REVOCATION_JOB_KIND job. Holds the sealed token set until the job ends. */
export interface ProviderRevocationPayload {
  readonly link_id: string;
  readonly tenant_id: string;
  readonly user_id: string;
  readonly provider_id: string;
  /** Version of the link the sealed record was read from; the tombstone is this + 1. */
  readonly link_version: number;
  /** `link`: the job of a revocation (updates the record). `orphan`: tokens from a refresh that lost to the tombstone. */
  readonly role: 'link' | 'orphan';
  readonly sealed: SealedRecord;
  readonly endpoint_variables: Readonly<Record<string, string>>;
  readonly revoked_by: RevokedBy;
  readonly service_id: string | null;
  readonly reason: string;
  readonly request_id: string | null;
  readonly bulk_job_id: string | null;
  readonly requested_at_ms: number;
  /** Filled by the worker: token types still to revoke (first = primary), and whether the primary is done. */
  readonly steps?: readonly ('refresh_token' | 'access_token')[];
  readonly primary_done?: boolean;
  /** Filled by the worker: token types the provider confirmed revoked so far. */
  readonly revoked_tokens?: readonly ('refresh_token' | 'access_token')[];
}

export interface BulkRevocationPayload {
  readonly job_id: string;
  readonly filter: {
    readonly tenant_id: string | null;
    readonly user_id: string | null;
    readonly provider_id: string | null;
  };
  readonly reason: string;
  readonly service_id: string | null;
  readonly request_id: string | null;
  readonly total: number;
  readonly revoked: number;
  readonly provider_confirmed: number;
  readonly provider_failed: number;
  readonly provider_unsupported: number;
  /** Links this job tombstoned whose provider step has not ended yet. */
  readonly pending: readonly string[];
  /** Links that could not be tombstoned in this job (store conflicts); skipped so the job ends. */
  readonly skipped: readonly string[];
  /** True once no more matching links remain to tombstone. */
  readonly exhausted: boolean;
  readonly created_at_ms: number;
}

export type RevocationStore = Pick<
  Store,
  | 'getLink'
  | 'listLinks'
  | 'saveLink'
  | 'putRevocation'
  | 'getRevocation'
  | 'enqueue'
  | 'putJobStatus'
  | 'getJobStatus'
>;

export interface RevocationDeps {
  readonly store: RevocationStore;
  readonly vault: Pick<Vault, 'forget'>;
  readonly catalogue: Pick<Catalogue, 'get' | 'privacy'>;
  readonly audit: Pick<Audit, 'record'>;
  readonly log: Logger;
  /** Counts revocations that end without a provider step (`unsupported`, nothing held); the worker counts the rest. */
  readonly metrics?: Pick<Metrics, 'revocations'>;
  readonly now?: () => number;
}

export interface Revocation {
  /**
   * Revokes one link (tombstone, durable provider job, record). `owner` restricts it to one
   * user's links: another user's link is `link_not_found`, exactly like a missing one.
   * Idempotent: an already revoked link returns its existing record.
   * Rejects link_not_found, conflict (the link kept changing; the queued job finishes it),
   * store_unavailable.
   */
  revokeLink(
    linkId: string,
    actor: RevocationActor,
    owner?: { readonly tenantId: string; readonly userId: string },
  ): Promise<RevokeResult>;
  /** The record of a revoked link; revocation_not_found when the link is not (yet) revoked. `owner` as in revokeLink. */
  getRecord(
    linkId: string,
    owner?: { readonly tenantId: string; readonly userId: string },
  ): Promise<RevocationRecord>;
  /**
   * Queues the revocation at the provider of tokens that must never be used: a refresh that
   * obtained new tokens but lost its write against the tombstone ("a refresh token it
   * obtained is revoked at the provider too"). `sealed` is those tokens sealed for `link`.
   */
  revokeOrphanedTokens(
    link: LinkRecord,
    sealed: SealedRecord,
    requestId: string | null,
  ): Promise<void>;
  /** Starts a bulk revocation job; resolves with its id and the number of links it matched. */
  startBulk(
    filter: BulkRevocationFilter,
    actor: RevocationActor,
  ): Promise<{ job_id: string; matched: number }>;
  /** Progress of a bulk job; job_not_found when unknown. */
  getBulkStatus(jobId: string): Promise<BulkRevocationStatus>;
  /** Registers a listener called after a job is queued (the worker's wake-up); returns an unsubscribe. */
  onJobQueued(listener: () => void): () => void;
}

/** CAS rounds before revokeLink gives up with `conflict` (the queued job then finishes the tombstone). */
const MAX_TOMBSTONE_ROUNDS = 10;
/** Bulk matching counts at most this many links per status; the job itself re-lists until none remain. */
export const BULK_MATCH_LIMIT = 10_000;
const MAX_REASON_CHARS = 200;

/** Job id of the revocation of `link` at `version`: two revocations racing on one version share one job. */
export function providerJobId(linkId: string, version: number): string {
  return `revoke:${linkId}:v${version}`;
}

/** A reason as stored: printable, trimmed, bounded (it is caller text; it goes to audit and the record). */
export function normaliseReason(reason: unknown, fallback: string): string {
  if (typeof reason !== 'string') return fallback;
  // eslint-disable-next-line no-control-regex
  const cleaned = reason.replace(/[\u0000-\u001f\u007f]/g, ' ').trim();
  return cleaned === '' ? fallback : cleaned.slice(0, MAX_REASON_CHARS);
}

/** Reads a stored record row back into the typed record (our own writes; shape-checked loosely). */
export function parseRecord(value: Readonly<Record<string, unknown>>): RevocationRecord {
  const pr = value.provider_revocation as RevocationRecord['provider_revocation'] | undefined;
  if (
    typeof value.link_id !== 'string' ||
    typeof pr !== 'object' ||
    pr === null ||
    typeof pr.status !== 'string'
  ) {
    throw new LinkvaultError('internal_error', {
      detail: 'stored revocation record has an unexpected shape',
    });
  }
  return value as unknown as RevocationRecord;
}

/** The public body of a bulk status row (internal members stripped). */
function toBulkStatus(row: Readonly<Record<string, unknown>>): BulkRevocationStatus {
  const num = (k: string): number => (typeof row[k] === 'number' ? (row[k] as number) : 0);
  return {
    job_id: String(row.job_id),
    status: row.status === 'done' ? 'done' : 'running',
    total: num('total'),
    revoked: num('revoked'),
    provider_confirmed: num('provider_confirmed'),
    provider_failed: num('provider_failed'),
    provider_unsupported: num('provider_unsupported'),
  };
}

/** The status row a bulk payload publishes. */
export function bulkStatusRow(
  p: BulkRevocationPayload,
  done: boolean,
  nowMs: number,
): Record<string, unknown> {
  return {
    job_id: p.job_id,
    status: done ? 'done' : 'running',
    total: Math.max(p.total, p.revoked),
    revoked: p.revoked,
    provider_confirmed: p.provider_confirmed,
    provider_failed: p.provider_failed,
    provider_unsupported: p.provider_unsupported,
    filter: p.filter,
    reason: p.reason,
    created_at: toRfc3339(p.created_at_ms),
    updated_at: toRfc3339(nowMs),
  };
}

export function createRevocation(deps: RevocationDeps): Revocation {
  const { store, vault, catalogue, log } = deps;
  const now = deps.now ?? Date.now;
  const listeners = new Set<() => void>();

  function notifyQueued(): void {
    for (const listener of listeners) {
      try {
        listener();
      } catch (err) {
        log.error({ err }, 'revocation: job listener failed');
      }
    }
  }

  async function audit(
    type: string,
    requestId: string | null,
    data: Record<string, unknown>,
  ): Promise<void> {
    await deps.audit.record(type, data, requestId);
  }

  /** Audit after the tombstone: the revocation stands even if this fails, so it is logged, not thrown. */
  async function auditAfter(
    type: string,
    requestId: string | null,
    data: Record<string, unknown>,
  ): Promise<void> {
    try {
      await audit(type, requestId, data);
    } catch (err) {
      log.error(
        { err, audit_type: type, link_id: data.link_id },
        'revocation: audit append failed after the tombstone',
      );
    }
  }

  function guidanceFor(link: LinkRecord): RevocationRecord['guidance'] {
    const entry = catalogue.get(link.providerId);
    if (!entry)
      return {
        provider_name: link.providerId,
        settings_url: null,
        instructions: null,
        privacy_policy_url: null,
      };
    const privacy = catalogue.privacy(link.providerId, link.endpointVariables);
    return {
      provider_name: entry.name,
      settings_url: privacy.settings_url,
      instructions: privacy.instructions,
      privacy_policy_url: privacy.policy_url,
    };
  }

  /** What the provider step will be, decided from the catalogue at tombstone time. */
  function initialProviderStatus(link: LinkRecord): ProviderRevocationStatus {
    const style = catalogue.get(link.providerId)?.revocation.style;
    if (style === 'none') return 'unsupported';
    // No tokens held: nothing to revoke. The provider itself ended the grant (a refresh answered
    // invalid_grant and the tokens were dropped), so there is nothing left alive to confirm.
    if (link.tokens === null) return 'confirmed';
    return 'pending';
  }

  function buildRecord(
    link: LinkRecord,
    actor: RevocationActor,
    status: ProviderRevocationStatus,
    atMs: number,
  ): RevocationRecord {
    return {
      link_id: link.id,
      tenant_id: link.tenantId,
      user_id: link.userId,
      provider_id: link.providerId,
      revoked_at: toRfc3339(atMs),
      revoked_by: actor.revokedBy,
      reason: actor.reason,
      provider_revocation: { status, attempts: 0 },
      guidance: guidanceFor(link),
    };
  }

  function owns(link: LinkRecord, owner?: { tenantId: string; userId: string }): boolean {
    return (
      owner === undefined || (link.tenantId === owner.tenantId && link.userId === owner.userId)
    );
  }

  /** The record of an already revoked link; writes one when it is missing (never expected, but never a 500). */
  async function existingRecord(
    link: LinkRecord,
    actor: RevocationActor,
  ): Promise<RevocationRecord> {
    const row = await store.getRevocation(link.id);
    if (row) return parseRecord(row.record);
    // A revoked link with no record was not revoked by this module; say what we know honestly:
    // the provider step is not known to have happened.
    const record = { ...buildRecord(link, actor, 'failed', link.updatedAtMs), reason: 'unknown' };
    await store.putRevocation({ linkId: link.id, record: { ...record } });
    return record;
  }

  function linkRef(link: LinkRecord): Record<string, unknown> {
    return {
      link_id: link.id,
      tenant_id: link.tenantId,
      user_id: link.userId,
      provider_id: link.providerId,
    };
  }

  async function revokeLink(
    linkId: string,
    actor: RevocationActor,
    owner?: { tenantId: string; userId: string },
  ): Promise<RevokeResult> {
    let link = await store.getLink(linkId);
    if (!link || !owns(link, owner)) throw new LinkvaultError('link_not_found');
    if (link.status === 'revoked')
      return { record: await existingRecord(link, actor), alreadyRevoked: true };

    // Fail closed on the first step: no audit record of the request, no revocation (store down means nothing would stick anyway).
    await audit(REVOCATION_AUDIT.requested, actor.requestId, {
      ...linkRef(link),
      revoked_by: actor.revokedBy,
      service_id: actor.serviceId,
      reason: actor.reason,
      bulk_job_id: actor.bulkJobId ?? null,
    });

    for (let round = 0; round < MAX_TOMBSTONE_ROUNDS; round++) {
      if (round > 0) {
        link = await store.getLink(linkId);
        if (!link || !owns(link, owner)) throw new LinkvaultError('link_not_found');
        if (link.status === 'revoked')
          return { record: await existingRecord(link, actor), alreadyRevoked: true };
      }
      const atMs = now();
      const status = initialProviderStatus(link);
      const sealed = link.tokens;
      if (status === 'pending' && sealed) {
        // The durable intent, written before the tombstone: the sealed tokens move into the job.
        const payload = jobPayload(link, sealed, 'link', actor, atMs);
        await store.enqueue({
          id: providerJobId(link.id, link.version),
          kind: PROVIDER_REVOCATION_JOB_KIND,
          payload: { ...payload },
          attempts: 0,
          runAtMs: atMs,
        });
      }
      const record = buildRecord(link, actor, status, atMs);
      // Record before tombstone: a revoked link always has its record. Only this step and the
      // worker write records; the worker writes only after the tombstone exists.
      await store.putRevocation({ linkId: link.id, record: { ...record } });

      const tombstone: LinkRecord = {
        ...link,
        status: 'revoked',
        tokens: null,
        accessTokenExpiresAtMs: null,
        updatedAtMs: atMs,
      };
      const saved = await store.saveLink(tombstone, link.version);
      if (!saved) continue; // a refresh (or another revocation) wrote first: re-read and go again

      if (sealed) vault.forget(sealed);
      await auditAfter(REVOCATION_AUDIT.tombstoned, actor.requestId, {
        ...linkRef(link),
        version: saved.version,
        provider_revocation: status,
      });
      if (status === 'pending') {
        notifyQueued();
      } else {
        // No provider step: the tombstone was the last copy of the sealed tokens.
        deps.metrics?.revocations.inc({ provider: link.providerId, outcome: status });
        await auditAfter(REVOCATION_AUDIT.providerOutcome, actor.requestId, {
          ...linkRef(link),
          outcome: status,
          attempts: 0,
        });
        if (sealed)
          await auditAfter(REVOCATION_AUDIT.shredded, actor.requestId, {
            ...linkRef(link),
            where: 'link',
          });
      }
      log.info(
        {
          link_id: link.id,
          provider_id: link.providerId,
          revoked_by: actor.revokedBy,
          provider_revocation: status,
          request_id: actor.requestId,
        },
        'link revoked',
      );
      return { record, alreadyRevoked: false };
    }
    // The link kept changing under us. The job queued in the last round finishes the tombstone.
    throw new LinkvaultError('conflict', {
      detail: 'The link changed concurrently; the revocation will complete in the background',
      retryAfterSeconds: 1,
    });
  }

  async function getRecord(
    linkId: string,
    owner?: { tenantId: string; userId: string },
  ): Promise<RevocationRecord> {
    const link = await store.getLink(linkId);
    if (!link || !owns(link, owner)) throw new LinkvaultError('link_not_found');
    // A record written just before a tombstone that has not landed (yet) is not a revocation.
    if (link.status !== 'revoked') throw new LinkvaultError('revocation_not_found');
    const row = await store.getRevocation(linkId);
    if (!row) throw new LinkvaultError('revocation_not_found');
    return parseRecord(row.record);
  }

  async function revokeOrphanedTokens(
    link: LinkRecord,
    sealed: SealedRecord,
    requestId: string | null,
  ): Promise<void> {
    const atMs = now();
    const actor: RevocationActor = {
      revokedBy: 'service',
      serviceId: null,
      reason: 'refresh_lost_to_revocation',
      requestId,
    };
    const payload = jobPayload(link, sealed, 'orphan', actor, atMs);
    await store.enqueue({
      id: `revoke-orphan:${link.id}:${randomUUID()}`,
      kind: PROVIDER_REVOCATION_JOB_KIND,
      payload: { ...payload },
      attempts: 0,
      runAtMs: atMs,
    });
    notifyQueued();
  }

  async function countMatching(filter: LinkFilter): Promise<number> {
    // pending_confirmation too: an erasure must not leave a held link a late confirmation activates.
    const [active, reauth, pending] = await Promise.all([
      store.listLinks({ ...filter, status: 'active' }, BULK_MATCH_LIMIT),
      store.listLinks({ ...filter, status: 'needs_reauth' }, BULK_MATCH_LIMIT),
      store.listLinks({ ...filter, status: 'pending_confirmation' }, BULK_MATCH_LIMIT),
    ]);
    return active.length + reauth.length + pending.length;
  }

  async function startBulk(
    filter: BulkRevocationFilter,
    actor: RevocationActor,
  ): Promise<{ job_id: string; matched: number }> {
    if (!filter.tenantId && !filter.providerId)
      throw new LinkvaultError('invalid_request', {
        detail: 'tenant_id or provider_id is required',
      });
    if (filter.userId && !filter.tenantId)
      throw new LinkvaultError('invalid_request', {
        detail: 'user_id needs tenant_id',
        extra: { parameter: 'user_id' },
      });
    const jobId = `rvj_${randomUUID()}`;
    const matched = await countMatching(toLinkFilter(filter));
    const atMs = now();
    const payload: BulkRevocationPayload = {
      job_id: jobId,
      filter: {
        tenant_id: filter.tenantId,
        user_id: filter.userId,
        provider_id: filter.providerId,
      },
      reason: actor.reason,
      service_id: actor.serviceId,
      request_id: actor.requestId,
      total: matched,
      revoked: 0,
      provider_confirmed: 0,
      provider_failed: 0,
      provider_unsupported: 0,
      pending: [],
      skipped: [],
      exhausted: false,
      created_at_ms: atMs,
    };
    await audit(REVOCATION_AUDIT.bulkStarted, actor.requestId, {
      job_id: jobId,
      filter: payload.filter,
      reason: actor.reason,
      service_id: actor.serviceId,
      matched,
    });
    await store.putJobStatus({ id: jobId, status: bulkStatusRow(payload, false, atMs) });
    await store.enqueue({
      id: `bulk:${jobId}`,
      kind: BULK_REVOCATION_JOB_KIND,
      payload: { ...payload },
      attempts: 0,
      runAtMs: atMs,
    });
    notifyQueued();
    return { job_id: jobId, matched };
  }

  async function getBulkStatus(jobId: string): Promise<BulkRevocationStatus> {
    const row = await store.getJobStatus(jobId);
    if (!row || row.status.job_id !== jobId) throw new LinkvaultError('job_not_found');
    return toBulkStatus(row.status);
  }

  return {
    revokeLink,
    getRecord,
    revokeOrphanedTokens,
    startBulk,
    getBulkStatus,
    onJobQueued(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}

/** The payload of a provider-revocation job for `link`'s `sealed` tokens. */
function jobPayload(
  link: LinkRecord,
  sealed: SealedRecord,
  role: ProviderRevocationPayload['role'],
  actor: RevocationActor,
  atMs: number,
): ProviderRevocationPayload {
  return {
    link_id: link.id,
    tenant_id: link.tenantId,
    user_id: link.userId,
    provider_id: link.providerId,
    link_version: link.version,
    role,
    sealed,
    endpoint_variables: { ...link.endpointVariables },
    revoked_by: actor.revokedBy,
    service_id: actor.serviceId,
    reason: actor.reason,
    request_id: actor.requestId,
    bulk_job_id: actor.bulkJobId ?? null,
    requested_at_ms: atMs,
  };
}

/** A bulk filter as a store filter (status is added by the caller). */
export function toLinkFilter(filter: BulkRevocationFilter): LinkFilter {
  return {
    ...(filter.tenantId ? { tenantId: filter.tenantId } : {}),
    ...(filter.userId ? { userId: filter.userId } : {}),
    ...(filter.providerId ? { providerId: filter.providerId } : {}),
  };
}

/** True for errors worth another attempt later (the store or key service may come back). */
export function isTransient(err: unknown): boolean {
  return (
    isLinkvaultError(err) &&
    (err.code === 'store_unavailable' ||
      err.code === 'key_service_unavailable' ||
      err.code === 'provider_unavailable' ||
      err.code === 'conflict')
  );
}
