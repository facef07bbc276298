/**
 * Checks that a Redis (every master of a cluster) keeps what linkvault was told is stored.
 *
 * linkvault acknowledges a refresh only after the rotated refresh token is stored, and queues
 * revocations durably; on Redis that holds only with:
 * - `appendonly yes`: without the AOF, a restart loses every write since the last RDB snapshot.
 * - `appendfsync always`: every write is fsynced before Redis replies, so nothing acknowledged is
 *   lost even on power loss or a kernel crash (at a latency cost per write).
 *   `appendfsync everysec` (Redis's default): a Redis process crash loses nothing (the data is in the
 *   OS page cache), but a power loss or OS crash can lose up to about one second of acknowledged writes.
 *   Both are accepted; `no` (the OS flushes when it likes, typically every 30 s) is a problem.
 * - `maxmemory-policy noeviction`: any other policy lets Redis silently delete links, grants,
 *   queued jobs or audit records under memory pressure; noeviction fails the write instead.
 * Managed services often disable CONFIG: a setting that cannot be read is reported as unknown, not
 * as a problem (the operator must then confirm it with the provider).
 */
import { Cluster, ReplyError } from 'ioredis';
import type { Redis } from 'ioredis';
import { translateRedisError } from './client.js';

export interface RedisPersistenceReport {
  /** True when no setting that could be read is wrong. */
  readonly ok: boolean;
  /** One line per wrong setting, naming the node on a cluster. */
  readonly problems: string[];
  /** Settings that could not be read (CONFIG disabled or renamed), as `[node ]setting`. */
  readonly unknown: string[];
}

const SETTINGS = ['appendonly', 'appendfsync', 'maxmemory-policy'] as const;
type Setting = (typeof SETTINGS)[number];

function problemWith(setting: Setting, value: string): string | null {
  switch (setting) {
    case 'appendonly':
      return value === 'yes'
        ? null
        : `appendonly is "${value}": writes linkvault acknowledged (rotated refresh tokens, queued revocations, audit records) are lost when Redis restarts; set appendonly yes`;
    case 'appendfsync':
      return value === 'always' || value === 'everysec'
        ? null
        : `appendfsync is "${value}": acknowledged writes can be lost on a crash; set always (nothing lost, even on power loss) or everysec (at most about 1 s lost on power loss or OS crash)`;
    case 'maxmemory-policy':
      return value === 'noeviction'
        ? null
        : `maxmemory-policy is "${value}": Redis may evict linkvault's links, grants, queued jobs or audit records under memory pressure; set maxmemory-policy noeviction`;
  }
}

/** The value from a CONFIG GET reply (flat [name, value] array, or an object under RESP3 mapping). */
function configValue(reply: unknown, setting: string): string | null {
  if (Array.isArray(reply)) {
    for (let i = 0; i + 1 < reply.length; i += 2)
      if (String(reply[i]) === setting) return String(reply[i + 1]);
    return null;
  }
  if (reply && typeof reply === 'object' && setting in reply)
    return String((reply as Record<string, unknown>)[setting]);
  return null;
}

/**
 * Reads appendonly, appendfsync and maxmemory-policy from the server (each master of a cluster).
 * Rejects store_unavailable when a node cannot be reached; never fails on a disabled CONFIG.
 */
export async function checkRedisPersistence(
  client: Redis | Cluster,
): Promise<RedisPersistenceReport> {
  const targets: { label: string; node: Redis }[] =
    client instanceof Cluster
      ? client
          .nodes('master')
          .map((node) => ({ label: `${node.options.host}:${node.options.port} `, node }))
      : [{ label: '', node: client }];
  const problems: string[] = [];
  const unknown: string[] = [];
  await Promise.all(
    targets.flatMap(({ label, node }) =>
      SETTINGS.map(async (setting) => {
        let reply: unknown;
        try {
          reply = await node.call('CONFIG', 'GET', setting);
        } catch (err) {
          // The server answered but refused CONFIG (disabled, renamed, ACL): unknown, not a failure.
          if (err instanceof ReplyError) {
            unknown.push(`${label}${setting}`);
            return;
          }
          throw translateRedisError(err);
        }
        const value = configValue(reply, setting);
        if (value === null) {
          unknown.push(`${label}${setting}`);
          return;
        }
        const problem = problemWith(setting, value);
        if (problem) problems.push(`${label}${problem}`);
      }),
    ),
  );
  problems.sort();
  unknown.sort();
  return { ok: problems.length === 0, problems, unknown };
}
