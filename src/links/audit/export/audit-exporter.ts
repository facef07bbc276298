import type { KeyObject } from 'node:crypto';
import type { Logger } from 'pino';
import type { AuditEvent, Store } from '../../../store/store.js';
import { openAuditChain, type AuditChainWriter } from './audit-chain.js';

/**
 * Moves audit events from the store to the export directory (audit-chain.ts), then trims them from
 * the store. One exporter is active at a time across replicas (a store lock, renewed while it
 * works; another replica takes over when it stops renewing). The export directory must be the same
 * storage for every replica that may run the exporter (a shared volume), or be set on one replica
 * only: the chain's head in that directory is what says how far each shard was exported.
 *
 * Order per shard, never across: each shard is read after its high-water mark, appended and
 * fsynced, and only then trimmed in the store, so a crash anywhere loses nothing and the chain's
 * recovery (cut an uncommitted tail, resume after the head's marks) duplicates nothing.
 *
 * Which shards a pass visits: a store holds a shard per tenant, and a pass that read and trimmed
 * every one would cost O(tenants) however few of them are active. Where the store tells which shards
 * were appended to since it was last asked (takeChangedAuditShards: Redis), a pass visits those; every
 * shard is visited at once on the first pass after the lock is taken and after a failed pass (the
 * hints it took are gone), and besides, a slice of the last listing rides along with each pass so
 * that every shard is visited once per `sweepIntervalMs` (hints are lost with a replica that died
 * before sending them, and each shard's share shrinks as tenants are added), spread over the passes
 * instead of a burst of a trim per tenant.
 */

/** What the exporter needs of the store: its shards, reads after a seq, and trimming exported events. */
export interface AuditExportSource {
  listAuditShards(): Promise<string[]>;
  /** The shards appended to since the last call (null: visit every shard); without it, every pass visits every shard. */
  takeChangedAuditShards?(): Promise<string[] | null>;
  readAuditShard(shard: string, afterSeq?: string, limit?: number): Promise<AuditEvent[]>;
  /**
   * Deletes from `shard` the oldest events with seq at or before `throughSeq` (null: any), so that
   * at most `keepExported` of those remain; later events are never touched. Returns how many went.
   */
  trimAuditShard(shard: string, throughSeq: string | null, keepExported: number): Promise<number>;
}

export interface AuditExporterDeps {
  readonly store: AuditExportSource & Pick<Store, 'acquireLock' | 'extendLock' | 'releaseLock'>;
  /**
   * The export directory; null runs the retention only: each shard is trimmed to its share of
   * `maxStoreEvents` and older events are gone (nothing is exported).
   */
  readonly dir: string | null;
  /** The audit HMAC key (signs checkpoints and the head). */
  readonly key: () => Promise<KeyObject>;
  /** Exported events the store keeps, over all shards (LINKVAULT_AUDIT_STORE_MAX_EVENTS). */
  readonly maxStoreEvents: number;
  readonly log: Logger;
  readonly now: () => number;
  /** Pause between passes when there was nothing to do (default 1 s). */
  readonly intervalMs?: number;
  /**
   * Events read per store call (default 256). A page is decoded and turned into lines in one turn of
   * the event loop, which the replica's releases wait behind: 1,000 held it ~7 ms (bench/audit-export.ts).
   */
  readonly batchSize?: number;
  /**
   * Where the store gives changed shards: how long the rolling visit of every shard of a listing
   * takes, so the longest time between two visits of a shard (default 60 s).
   */
  readonly sweepIntervalMs?: number;
  /** Called after every pass with what it did (metrics). */
  readonly onPass?: (pass: ExportPass) => void;
  /** Called when a pass fails (metrics; the failure is logged). */
  readonly onFailure?: () => void;
}

export interface ExportPass {
  readonly exported: number;
  readonly trimmed: number;
  /** Shards the pass visited (read or trimmed). */
  readonly shards: number;
  /** False when another replica holds the exporter lock. */
  readonly active: boolean;
}

export interface AuditExporter {
  start(): void;
  /** Stops after the pass in flight and releases the lock. */
  stop(): Promise<void>;
  /** One pass: export every shard up to now, then trim. */
  runOnce(): Promise<ExportPass>;
}

const LOCK = 'linkvault:audit-exporter';
/** Pause between passes while events keep arriving (batches fsyncs; far inside the shard bound). */
const BUSY_PAUSE_MS = 250;
const LOCK_TTL_MS = 30_000;
const DEFAULT_SWEEP_INTERVAL_MS = 60_000;
/**
 * Shards trimmed at once. A pass trims each shard it visits (a store call each, in the shard's own
 * slot on a cluster), and a visit of every shard trims a shard per tenant: one after the other, 1,000
 * tenants made 1,000 round trips, each waiting behind a loaded replica's event-loop turn. Sixteen at
 * once go out together (the client pipelines a turn's commands), and one slow shard holds up fifteen
 * others at most. The export reads the first page of sixteen shards at once for the same reason
 * (at 30,000 tenants with an event each, one read after the other took a round trip and a socket
 * write per shard). Reading them together once made passes faster only to run more of them each
 * second: a pass of 1,000 events or more was followed at once. A pass is now followed after a pause
 * whatever it exported.
 */
const TRIMS_AT_ONCE = 16;
const READS_AT_ONCE = TRIMS_AT_ONCE;
/** Events asked of each shard in a group read (its later pages: batchSize). */
const FIRST_PAGE = 32;

/** Sum of `trim` over `items`, TRIMS_AT_ONCE at a time. */
async function trimAll<T>(
  items: readonly T[],
  trim: (item: T) => Promise<number>,
): Promise<number> {
  let trimmed = 0;
  for (let i = 0; i < items.length; i += TRIMS_AT_ONCE)
    for (const n of await Promise.all(items.slice(i, i + TRIMS_AT_ONCE).map(trim))) trimmed += n;
  return trimmed;
}

/** The public AuditEvent shape (docs/api.md), with the event's place in the store as `shard` and `seq`. */
export function auditEventJson(shard: string, event: AuditEvent): Record<string, unknown> {
  const data = event.data;
  const out: Record<string, unknown> = {
    seq: event.seq ?? null,
    shard,
    at: new Date(event.atMs).toISOString(),
    type: event.type,
    request_id: event.requestId ?? null,
  };
  for (const name of ['service_id', 'link_id', 'tenant_id', 'user_id', 'provider_id', 'grant_id'])
    if (typeof data[name] === 'string') out[name] = data[name];
  out.data = data;
  return out;
}

export function createAuditExporter(deps: AuditExporterDeps): AuditExporter {
  const { store, log, now } = deps;
  const intervalMs = deps.intervalMs ?? 1000;
  const batchSize = deps.batchSize ?? 256;
  const sweepIntervalMs = deps.sweepIntervalMs ?? DEFAULT_SWEEP_INTERVAL_MS;
  /** Whether the next pass must visit every shard at once. */
  let sweepNow = true;
  /**
   * The rolling visit: the shards of the last listing, visited a slice per pass so that the whole
   * list is done `sweepIntervalMs` after it was taken, then listed again. A listing is one burst of
   * calls; a visit of every shard at once would be a trim (and a read) per tenant in one pass.
   */
  let round: readonly string[] = [];
  let roundNext = 0;
  let roundStartedMs = 0;
  /** The shards of the last listing and every changed one since: their count sets each shard's share. */
  let known = new Set<string>();
  let owner: string | null = null;
  let lockExpiresAtMs = 0;
  let chain: AuditChainWriter | null = null;
  let timer: NodeJS.Timeout | null = null;
  let running: Promise<ExportPass> | null = null;
  let stopped = true;

  async function holdLock(): Promise<boolean> {
    if (owner !== null && now() >= lockExpiresAtMs - LOCK_TTL_MS / 2) {
      if (await store.extendLock(LOCK, owner, LOCK_TTL_MS)) lockExpiresAtMs = now() + LOCK_TTL_MS;
      else {
        // Lost: another replica may have written since; reopen the chain when the lock comes back.
        owner = null;
        chain = null;
      }
    }
    if (owner === null) {
      owner = await store.acquireLock(LOCK, LOCK_TTL_MS);
      if (owner === null) return false;
      lockExpiresAtMs = now() + LOCK_TTL_MS;
      // Another exporter may have taken hints and stopped before using them.
      sweepNow = true;
    }
    // (Re)opened after a takeover or a failed pass: the head on disk is the truth.
    if (deps.dir !== null)
      chain ??= await openAuditChain({ dir: deps.dir, key: await deps.key(), now });
    return true;
  }

  /**
   * Whether this exporter still holds the lock it started the pass with. A lock lost (its time ran
   * out) and taken again reopens the chain from disk, where another exporter may have written
   * meanwhile: the pass's writer is then stale, and what it staged must not be committed.
   */
  async function stillHolding(writer: AuditChainWriter): Promise<boolean> {
    return (await holdLock()) && chain === writer;
  }

  /** The shards this pass visits, and whether they are all of them. */
  async function shardsOfPass(): Promise<{ shards: string[]; sweep: boolean }> {
    const take = store.takeChangedAuditShards;
    // Taken first, on a sweep too: a hint is sent only after its event is stored, so every event
    // a hint taken here stands for is read below, and a hint that comes later is the next pass's.
    const changed = take === undefined ? null : await take.call(store);
    if (changed === null || sweepNow) {
      const shards = await store.listAuditShards();
      known = new Set(shards);
      sweepNow = false;
      // The rolling visit goes over this listing again through the next sweepIntervalMs.
      round = shards;
      roundNext = 0;
      roundStartedMs = now();
      return { shards, sweep: true };
    }
    if (roundNext >= round.length) {
      round = await store.listAuditShards();
      roundNext = 0;
      roundStartedMs = now();
      known = new Set(round);
    }
    const due = Math.min(
      round.length,
      Math.ceil((round.length * (now() - roundStartedMs)) / sweepIntervalMs),
    );
    const visit = new Set(changed);
    for (const shard of changed) known.add(shard);
    for (; roundNext < due; roundNext++) visit.add(round[roundNext]!);
    return { shards: [...visit], sweep: false };
  }

  async function pass(): Promise<ExportPass> {
    if (!(await holdLock())) return { exported: 0, trimmed: 0, shards: 0, active: false };
    const { shards, sweep } = await shardsOfPass();
    const keep = Math.floor(deps.maxStoreEvents / Math.max(1, known.size));
    if (deps.dir === null) {
      // Retention only: the newest `keep` of each shard stay, the rest are dropped unexported.
      const trimmed = await trimAll(shards, (shard) => store.trimAuditShard(shard, null, keep));
      return { exported: 0, trimmed, shards: shards.length, active: true };
    }
    const writer = chain!;
    // Only this pass appends: the marks it starts from are where each shard's reading starts.
    const from = writer.highWater();
    let exported = 0;
    // Each page is staged as it comes (its lines made, off the JS heap) and the pass commits once
    // at its end: a commit is a file write and two fsyncs (the lines, the head) whatever it carries,
    // and a pass that visits many shards with a few events each would otherwise pay them per shard.
    for (let i = 0; i < shards.length; i += READS_AT_ONCE) {
      // A pass over every shard of many tenants takes seconds: the lock is renewed on the way (a
      // store call only once half its time is gone), so that no other exporter takes over mid-pass.
      if (i > 0 && !(await stillHolding(writer)))
        return { exported: 0, trimmed: 0, shards: shards.length, active: false };
      const group = shards.slice(i, i + READS_AT_ONCE);
      // Small first pages: the answers of the group arrive together and are decoded in one turn
      // of the loop (sixteen pages of 256 held it ~20 ms); most shards of many tenants hold a few.
      const firstPage = Math.min(batchSize, FIRST_PAGE);
      const firstPages = await Promise.all(
        group.map((shard) => store.readAuditShard(shard, from.get(shard), firstPage)),
      );
      // Staged shard by shard, each in order; a shard's further pages are read one by one.
      for (const [k, shard] of group.entries()) {
        let events = firstPages[k]!;
        let asked = firstPage;
        firstPages[k] = [];
        while (events.length > 0) {
          exported += await writer.stage(
            events.map((e) => ({ shard, seq: e.seq!, event: auditEventJson(shard, e) })),
          );
          if (events.length < asked) break;
          asked = batchSize;
          // What this pass staged is not committed: whoever holds the lock next exports it (so it
          // is not counted here; a file rotated meanwhile committed some, which the count misses).
          if (!(await stillHolding(writer)))
            return { exported: 0, trimmed: 0, shards: shards.length, active: false };
          events = await store.readAuditShard(shard, events.at(-1)!.seq!, batchSize);
        }
      }
    }
    await writer.commit();
    // Only what the chain holds durably is trimmed, shard by shard, keeping an equal share each: on
    // a sweep every shard the chain has marks for, else the shards this pass visited.
    const marks = writer.highWater();
    const trims: [string, string][] = sweep
      ? [...marks]
      : shards.flatMap((shard) => {
          const seq = marks.get(shard);
          return seq === undefined ? [] : [[shard, seq] as [string, string]];
        });
    const trimmed = await trimAll(trims, ([shard, seq]) => store.trimAuditShard(shard, seq, keep));
    return { exported, trimmed, shards: shards.length, active: true };
  }

  function runOnce(): Promise<ExportPass> {
    running ??= pass()
      .catch((err: unknown) => {
        // The hints the pass took are gone with it: the next pass visits every shard.
        sweepNow = true;
        throw err;
      })
      .finally(() => {
        running = null;
      });
    return running;
  }

  function schedule(delayMs: number): void {
    if (stopped) return;
    timer = setTimeout(() => {
      runOnce().then(
        (result) => {
          deps.onPass?.(result);
          // A pass reads each shard it visits to the end, a backlog too. Some events: again
          // shortly, so that each pass (a file and head fsync, a trim per shard) carries a quarter
          // second of releases, not one release each (passes back to back, as a pass of 1,000 or
          // more used to be followed, spent more per event). None: the idle interval.
          schedule(result.exported > 0 ? BUSY_PAUSE_MS : intervalMs);
        },
        (err: unknown) => {
          deps.onFailure?.();
          log.error({ err }, 'audit export pass failed; retrying');
          chain = null;
          schedule(intervalMs * 5);
        },
      );
    }, delayMs);
    timer.unref();
  }

  return {
    runOnce,
    start() {
      if (!stopped) return;
      stopped = false;
      schedule(0);
    },
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await running?.catch(() => undefined);
      if (owner !== null) await store.releaseLock(LOCK, owner).catch(() => false);
      owner = null;
      chain = null;
    },
  };
}
