/**
 * Waits, after a write that must not be lost, until the master's replicas have it (WAIT, or WAITAOF
 * on Redis 7.2+, which also waits for the replicas' AOF fsync).
 *
 * Why: Redis replicates asynchronously. A write the master acknowledged but had not yet sent to a
 * replica is gone when that replica is promoted (failover), though linkvault already told its caller
 * the refresh succeeded. Waiting narrows that window to writes in flight when the master died.
 *
 * When the replicas do not confirm within the timeout (or the WAIT itself fails), the write stands:
 * it is on the master and will reach the replicas when they catch up. The miss is counted
 * (`onMiss`) and logged at warn; the caller is answered as if the write succeeded.
 *
 * In a Redis Cluster, WAIT goes to the master(s) of the slots the write touched, over the connection
 * the write went through (ioredis keeps one per node): WAIT counts only that connection's writes, and
 * only that master's replicas. A replica cut off from another master says nothing about this write,
 * so it neither holds it up nor counts it as a miss.
 *
 * Replicas are discovered from `INFO replication` (`connected_slaves`) on each master, at start and
 * again at most every `refreshMs` (in the background, never on the write's path). A master without
 * replicas is never sent WAIT, so a standalone Redis without replicas costs nothing extra. A master
 * whose replicas all went away since start is not sent WAIT either (it could only time out), but
 * each must-not-lose write to it counts as a miss until a replica is back.
 * WAITAOF support is detected with `COMMAND INFO WAITAOF`, not assumed from a version.
 */
import { Cluster } from 'ioredis';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { describeRedisError, type RedisClient } from './client.js';

export interface ReplicaWaitOptions {
  readonly client: RedisClient;
  /**
   * Replicas that must confirm each must-not-lose write: null means 1 wherever the master has
   * replicas (and none where it has none); 0 turns the wait off.
   */
  readonly replicas: number | null;
  /** How long one WAIT may block; must stay below the client's command timeout. */
  readonly timeoutMs: number;
  /** How often the replica count is read again; default 5 s. */
  readonly refreshMs?: number;
  readonly log?: Logger | undefined;
  /** Called once for every write whose replicas did not confirm it in time (metrics). */
  readonly onMiss?: () => void;
}

/** What WAIT needs to know about one master. */
interface MasterState {
  /** connected_slaves from INFO replication at the last refresh. */
  connectedReplicas: number;
  /** Whether this master has had a replica since start (a standalone Redis never has). */
  hadReplicas: boolean;
}

/** `connected_slaves` from an `INFO replication` reply, 0 when absent. */
export function readConnectedReplicas(info: string): number {
  const match = /^connected_slaves:(\d+)/m.exec(info);
  return match ? Number(match[1]) : 0;
}

/** CRC16/XMODEM (polynomial 0x1021), the checksum Redis Cluster hashes keys with. */
function crc16(bytes: Uint8Array): number {
  let crc = 0;
  for (const byte of bytes) {
    crc ^= byte << 8;
    for (let bit = 0; bit < 8; bit++)
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

/**
 * The cluster slot of `key`, as CLUSTER KEYSLOT computes it: CRC16 of the hash tag (the bytes between
 * the first `{` and the next `}`, when not empty) or else of the whole key, modulo 16384.
 */
export function redisKeySlot(key: string): number {
  const bytes = Buffer.from(key, 'utf8');
  const open = bytes.indexOf(0x7b);
  if (open !== -1) {
    const close = bytes.indexOf(0x7d, open + 1);
    if (close > open + 1) return crc16(bytes.subarray(open + 1, close)) % 16384;
  }
  return crc16(bytes) % 16384;
}

export class ReplicaWait {
  readonly #client: RedisClient;
  readonly #replicas: number | null;
  readonly #timeoutMs: number;
  readonly #refreshMs: number;
  readonly #log: Logger | undefined;
  readonly #onMiss: (() => void) | undefined;
  readonly #masters = new WeakMap<Redis, MasterState>();
  #waitAof = false;
  #refreshedAtMs = 0;
  #refreshing: Promise<void> | null = null;
  /** Whether any master has had a replica since start: until then no write has anything to wait for. */
  #anyReplicas = false;
  #lastWarnMs = 0;

  constructor(options: ReplicaWaitOptions) {
    this.#client = options.client;
    this.#replicas = options.replicas;
    this.#timeoutMs = options.timeoutMs;
    this.#refreshMs = options.refreshMs ?? 5000;
    this.#log = options.log;
    this.#onMiss = options.onMiss;
  }

  /** Whether WAITAOF was found at the last detection (Redis 7.2+). */
  get usesWaitAof(): boolean {
    return this.#waitAof;
  }

  /** Reads each master's replica count and WAITAOF support now. Rejects on a Redis failure. */
  async detect(): Promise<void> {
    if (this.#replicas === 0) return;
    const masters = this.#mastersNow();
    const first = masters[0];
    if (first) {
      // COMMAND INFO answers [null] for a command the server does not know.
      const reply = (await first.call('COMMAND', 'INFO', 'WAITAOF')) as unknown[];
      this.#waitAof = Array.isArray(reply) && reply[0] !== null && reply[0] !== undefined;
    }
    await Promise.all(
      masters.map(async (node) => {
        const info = String(await node.call('INFO', 'replication'));
        const connectedReplicas = readConnectedReplicas(info);
        const hadReplicas =
          (this.#masters.get(node)?.hadReplicas ?? false) || connectedReplicas > 0;
        this.#masters.set(node, { connectedReplicas, hadReplicas });
        if (hadReplicas) this.#anyReplicas = true;
      }),
    );
    this.#refreshedAtMs = Date.now();
  }

  /**
   * Whether afterWrite could wait for (or count a miss of) anything: false while no master has had
   * a replica since start, as with a standalone Redis. Checked before afterWrite on the hot path,
   * so that such a deployment pays no promise per write. Keeps the replica counts re-read.
   */
  get mayWait(): boolean {
    if (this.#replicas === 0) return false;
    this.#refreshInBackground();
    return this.#anyReplicas;
  }

  /**
   * Waits until the replicas of the masters holding `keys` (every key the write touched; in a
   * standalone Redis the one master) have every write this process sent them so far. Never rejects:
   * a miss or a failure is counted and logged, and the write stands.
   */
  async afterWrite(keys: readonly string[]): Promise<void> {
    if (this.#replicas === 0) return;
    this.#refreshInBackground();
    const targets: { node: Redis; numReplicas: number }[] = [];
    let replicasGone = false;
    for (const node of this.#mastersOf(keys)) {
      const state = this.#masters.get(node);
      if (!state) continue;
      if (state.connectedReplicas > 0) targets.push({ node, numReplicas: this.#replicas ?? 1 });
      // The replicas this master had are gone (the link died): WAIT could only time out, so do not
      // send it, but count the write as unconfirmed: this is the window a failover loses.
      else if (state.hadReplicas) replicasGone = true;
    }
    if (targets.length === 0) {
      if (replicasGone) this.#miss({ connectedReplicas: 0 });
      return;
    }
    const results = await Promise.all(targets.map((t) => this.#waitOn(t.node, t.numReplicas)));
    const missed = results.find((r) => r !== null);
    if (missed !== undefined) this.#miss(missed);
    else if (replicasGone) this.#miss({ connectedReplicas: 0 });
  }

  /** Null when `numReplicas` confirmed in time, else what fell short. */
  async #waitOn(node: Redis, numReplicas: number): Promise<Record<string, unknown> | null> {
    try {
      if (this.#waitAof) {
        // numlocal 0: the master's own fsync is appendfsync's business (redis-persistence.ts).
        const reply = (await node.call('WAITAOF', 0, numReplicas, this.#timeoutMs)) as number[];
        const acked = Number(reply[1] ?? 0);
        return acked >= numReplicas ? null : { command: 'WAITAOF', acked, wanted: numReplicas };
      }
      const acked = Number(await node.call('WAIT', numReplicas, this.#timeoutMs));
      return acked >= numReplicas ? null : { command: 'WAIT', acked, wanted: numReplicas };
    } catch (err) {
      return { command: this.#waitAof ? 'WAITAOF' : 'WAIT', err: describeRedisError(err) };
    }
  }

  #miss(fields: Record<string, unknown>): void {
    this.#onMiss?.();
    const now = Date.now();
    if (now - this.#lastWarnMs < 5000) return;
    this.#lastWarnMs = now;
    this.#log?.warn(
      { store: 'redis', timeout_ms: this.#timeoutMs, ...fields },
      'Redis replicas did not confirm an acknowledged write in time; it stands on the master and is lost if the master fails before they catch up',
    );
  }

  #mastersNow(): Redis[] {
    const client = this.#client;
    return client instanceof Cluster ? client.nodes('master') : [client];
  }

  /**
   * The connections to the masters serving `keys`' slots, as the client routes them now (the same
   * connections its commands went through). Every master when a slot is not mapped to a known node
   * (slots being refreshed) or no key is named: a WAIT on a master the write did not touch only costs
   * a round trip when that master's replicas are connected.
   */
  #mastersOf(keys: readonly string[]): Redis[] {
    const client = this.#client;
    if (!(client instanceof Cluster)) return [client];
    if (keys.length === 0) return client.nodes('master');
    // ioredis names a node `host:port` (its getNodeKey) in `slots`; all nodes, since a node promoted
    // since ioredis last read the roles takes the slot's writes before it is listed as a master.
    const byNodeKey = new Map(
      client.nodes('all').map((n) => [`${n.options.host}:${n.options.port}`, n]),
    );
    const found = new Set<Redis>();
    for (const key of keys) {
      const nodeKey = client.slots[redisKeySlot(key)]?.[0];
      const node = nodeKey === undefined ? undefined : byNodeKey.get(nodeKey);
      if (!node) return client.nodes('master');
      found.add(node);
    }
    return [...found];
  }

  #refreshInBackground(): void {
    if (this.#refreshing || Date.now() - this.#refreshedAtMs < this.#refreshMs) return;
    this.#refreshing = this.detect()
      .catch((err: unknown) => {
        // Keep the last known counts; the next write tries again after refreshMs.
        this.#refreshedAtMs = Date.now();
        this.#log?.warn(
          { store: 'redis', err: describeRedisError(err) },
          'Redis replica count could not be refreshed',
        );
      })
      .finally(() => {
        this.#refreshing = null;
      });
  }
}
