import type { Logger } from 'pino';
import { isLinkvaultError } from '../../errors.js';
import type { KeyProvider, SealIdentity } from '../../keys/key-provider.js';
import type { SealedRecord } from '../../keys/sealed-record.js';
import type { Vault } from '../../keys/vault.js';
import type { ScannedJob, Store } from '../../store/store.js';
import { PROVIDER_REVOCATION_JOB_KIND } from '../revoke/revocation.js';
import { tokenSetIdentity } from './token-vault.js';

export interface RewrapDeps {
  readonly store: Pick<
    Store,
    'scanLinkIds' | 'getLink' | 'saveLink' | 'scanJobs' | 'replaceJobPayload'
  >;
  readonly vault: Vault;
  readonly keys: KeyProvider;
  readonly log?: Logger;
}

export interface RewrapResult {
  /** Links seen. */
  readonly scanned: number;
  /** Links whose token set now has its data key wrapped under the current key. */
  readonly rewrapped: number;
  /** Links with no token set, or already under the current key. */
  readonly skipped: number;
  /** Compare-and-set writes lost to a concurrent writer (each was re-read and retried). */
  readonly conflicts: number;
  /** Links whose record does not open under its identity (sealed_record_invalid) or that kept conflicting; left as they are. */
  readonly failed: number;
  /** Queued jobs seen (in the first pass over the queue). */
  readonly jobsScanned: number;
  /** Queued jobs whose sealed records now all have their data key wrapped under the current key. */
  readonly jobsRewrapped: number;
  /**
   * Queued jobs left as they are without an error: no sealed record under an old key, a payload kind
   * whose seal identity rewrap cannot tell, or a job held under a lease (its claimer would write the
   * old payload back). Those still under an old key are counted in `jobsOnOldKey`.
   */
  readonly jobsSkipped: number;
  /** Compare-and-set payload writes lost to a worker that changed or claimed the job in between (each retried in a later pass). */
  readonly jobConflicts: number;
  /** Jobs whose sealed record does not open under the identity of its payload (sealed_record_invalid); left as they are. */
  readonly jobsFailed: number;
  /**
   * After the run: queued jobs that still hold a sealed record under a key other than the current one
   * (counted by a final scan). Until this is 0 the old key must be kept, or those jobs cannot be opened.
   */
  readonly jobsOnOldKey: number;
}

const MAX_ATTEMPTS_PER_LINK = 5;
/** Passes over the queue; a later pass retries only the jobs a worker changed under an earlier one. */
const MAX_JOB_PASSES = 3;

/**
 * Moves every link's data key under the current key (after a master-key or KMS-key rotation).
 * Only `kid` and `edk` change; iv, ct and tag are byte-identical, so no token is ever decrypted
 * here. Each write is a compare-and-set on the link version; on conflict the link is re-read
 * (a concurrent refresh may already have re-sealed it under the current key) and retried.
 * A key service that fails stops the run (key_service_unavailable): running it again is safe.
 */
export async function rewrapAll(deps: RewrapDeps): Promise<RewrapResult> {
  const { store, vault, keys, log } = deps;
  // Answers, and (KMS) resolves an alias to the key ARN that currentKeyId() compares against.
  await keys.ping();
  const current = keys.currentKeyId();
  let scanned = 0;
  let rewrapped = 0;
  let skipped = 0;
  let conflicts = 0;
  let failed = 0;

  for await (const id of store.scanLinkIds()) {
    scanned++;
    let outcome: 'rewrapped' | 'skipped' | 'failed' | null = null;
    for (let attempt = 0; attempt < MAX_ATTEMPTS_PER_LINK && outcome === null; attempt++) {
      const link = await store.getLink(id);
      if (!link || !link.tokens || link.tokens.kid === current) {
        outcome = 'skipped';
        break;
      }
      let tokens;
      try {
        tokens = await vault.rewrap(tokenSetIdentity(link), link.tokens);
      } catch (err) {
        if (!isLinkvaultError(err, 'sealed_record_invalid')) throw err;
        log?.warn(
          { link_id: id, err },
          "rewrap: the link's sealed record does not open under its identity; left as it is",
        );
        outcome = 'failed';
        break;
      }
      const saved = await store.saveLink({ ...link, tokens }, link.version);
      if (saved) outcome = 'rewrapped';
      else conflicts++;
    }
    if (outcome === null) {
      log?.warn(
        { link_id: id },
        'rewrap: the link kept changing underneath; left for the next run',
      );
      outcome = 'failed';
    }
    if (outcome === 'rewrapped') rewrapped++;
    else if (outcome === 'skipped') skipped++;
    else failed++;
  }
  const jobs = await rewrapQueuedJobs(store, vault, current, log);
  const result = { scanned, rewrapped, skipped, conflicts, failed, ...jobs };
  log?.info({ ...result, kid: current }, 'rewrap finished');
  return result;
}

type JobCounts = Pick<
  RewrapResult,
  'jobsScanned' | 'jobsRewrapped' | 'jobsSkipped' | 'jobConflicts' | 'jobsFailed' | 'jobsOnOldKey'
>;

/**
 * Pending provider-revocation jobs carry their own sealed copy of a link's token set (the link
 * itself is already a tombstone): without this, destroying the old key after a rotation would make
 * those jobs unopenable and leave the tokens alive at the provider (RFC 7009 revocation never sent).
 * Each job's payload is rewritten with replaceJobPayload, a compare-and-set on the payload that also
 * refuses a leased job, so a worker's reschedule is never overwritten and a claimer cannot write the
 * old payload back over ours after we counted the job as done.
 */
async function rewrapQueuedJobs(
  store: RewrapDeps['store'],
  vault: Vault,
  current: string,
  log: Logger | undefined,
): Promise<JobCounts> {
  let jobsScanned = 0;
  let jobsRewrapped = 0;
  let jobsSkipped = 0;
  let jobConflicts = 0;
  let jobsFailed = 0;
  // Jobs to look at again in the next pass (a worker changed them while we re-wrapped).
  let retry: Set<string> | null = null;
  const failedIds = new Set<string>();

  for (let pass = 0; pass < MAX_JOB_PASSES && (retry === null || retry.size > 0); pass++) {
    const conflicted = new Set<string>();
    for await (const job of store.scanJobs()) {
      if (retry !== null && !retry.has(job.id)) continue;
      if (retry === null) jobsScanned++;
      const stale = oldSealedRecords(job.payload, current);
      if (stale.length === 0) {
        if (retry === null) jobsSkipped++;
        continue;
      }
      const identity = sealIdentityOf(job);
      if (identity === null || job.leased) {
        if (retry === null) jobsSkipped++;
        if (identity === null)
          log?.warn(
            { job_id: job.id, kind: job.kind },
            'rewrap: queued job of a kind whose seal identity is unknown; left as it is',
          );
        continue;
      }
      let payload: Record<string, unknown>;
      try {
        payload = (await rewrapIn(job.payload, identity, current, vault)) as Record<
          string,
          unknown
        >;
      } catch (err) {
        if (!isLinkvaultError(err, 'sealed_record_invalid')) throw err;
        log?.warn(
          { job_id: job.id, err },
          "rewrap: a queued job's sealed record does not open under its identity; left as it is",
        );
        failedIds.add(job.id);
        continue;
      }
      if (await store.replaceJobPayload(job.id, job.payload, payload)) {
        jobsRewrapped++;
      } else {
        jobConflicts++;
        conflicted.add(job.id);
      }
    }
    retry = conflicted;
  }
  jobsFailed = failedIds.size;
  if (retry !== null && retry.size > 0)
    log?.warn(
      { jobs: retry.size },
      'rewrap: queued jobs kept changing underneath; left for the next run',
    );

  // Counted afresh, not derived from the passes: a job enqueued during the run under an old key
  // (a revocation of a link not yet re-wrapped) must keep the old key alive as well.
  let jobsOnOldKey = 0;
  for await (const job of store.scanJobs())
    if (oldSealedRecords(job.payload, current).length > 0) jobsOnOldKey++;
  return { jobsScanned, jobsRewrapped, jobsSkipped, jobConflicts, jobsFailed, jobsOnOldKey };
}

/**
 * The identity the job's sealed records were sealed under, or null for a kind rewrap cannot tell.
 * A provider-revocation payload holds the link's token set, sealed for the link (revocation.ts
 * jobPayload / revokeOrphanedTokens), so its identity is the link's token-set identity.
 */
function sealIdentityOf(job: ScannedJob): SealIdentity | null {
  if (job.kind !== PROVIDER_REVOCATION_JOB_KIND) return null;
  const p = job.payload;
  if (
    typeof p.link_id !== 'string' ||
    typeof p.tenant_id !== 'string' ||
    typeof p.provider_id !== 'string'
  )
    return null;
  return tokenSetIdentity({ id: p.link_id, tenantId: p.tenant_id, providerId: p.provider_id });
}

function isSealedRecordShape(v: unknown): v is SealedRecord {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const r = v as Record<string, unknown>;
  return (
    r.v === 1 &&
    r.alg === 'A256GCM' &&
    typeof r.kid === 'string' &&
    typeof r.edk === 'string' &&
    typeof r.iv === 'string' &&
    typeof r.ct === 'string' &&
    typeof r.tag === 'string'
  );
}

/** Every SealedRecord-shaped object anywhere in `value` whose kid is not `current`. */
function oldSealedRecords(value: unknown, current: string): SealedRecord[] {
  if (isSealedRecordShape(value)) return value.kid === current ? [] : [value];
  if (Array.isArray(value)) return value.flatMap((v) => oldSealedRecords(v, current));
  if (typeof value === 'object' && value !== null)
    return Object.values(value).flatMap((v) => oldSealedRecords(v, current));
  return [];
}

/** A copy of `value` with every SealedRecord under an old key re-wrapped for `identity` (only kid and edk change). */
async function rewrapIn(
  value: unknown,
  identity: SealIdentity,
  current: string,
  vault: Vault,
): Promise<unknown> {
  if (isSealedRecordShape(value))
    return value.kid === current ? value : await vault.rewrap(identity, value);
  if (Array.isArray(value)) {
    const out: unknown[] = [];
    for (const v of value) out.push(await rewrapIn(v, identity, current, vault));
    return out;
  }
  if (typeof value === 'object' && value !== null) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value))
      out[k] = await rewrapIn(v, identity, current, vault);
    return out;
  }
  return value;
}
