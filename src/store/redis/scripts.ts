/**
 * The Lua scripts of the Redis adapter. Each touches only the keys it declares in KEYS, all sharing
 * one hash tag, so it runs on one slot (a requirement for Redis Cluster) and atomically.
 */
import type { RedisClient } from './client.js';

/**
 * KEYS[1] link hash, KEYS[2] the tenant's expiry index, KEYS[3..2+nrm] indexes to leave, the rest
 * indexes to join.
 * ARGV: expectedVersion ('' = create), json, newVersion, score, id, nrm, lastUsedAtMs ('' = none),
 * expiry index score ('' = not in the expiry index), release state (`s`: the status, with `:empty`
 * appended when the link holds no tokens; COMMIT_RELEASE reads it without decoding the JSON).
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
  redis.call('HSET', KEYS[1], 'j', ARGV[2], 'v', ARGV[3], 's', ARGV[9], 'u', u)
else
  redis.call('HSET', KEYS[1], 'j', ARGV[2], 'v', ARGV[3], 's', ARGV[9])
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

/** KEYS the tenant's grant records, the service listing, the release bucket; ARGV id, json. */
const PUT_GRANT = `
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
return 1
`;

/**
 * KEYS as PUT_GRANT; ARGV id, the JSON the caller read (which named the keys). 1 deleted, 0
 * absent, -1 changed meanwhile.
 */
const DELETE_GRANT = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 0 end
if cur ~= ARGV[2] then return -1 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
`;

/**
 * The release's read, one round trip: KEYS[1] the link hash, KEYS[2..] the release buckets of the
 * service (by link, by tenant); ARGV[1] the version of the link the caller already holds parsed
 * ('' = none). Returns nil without a link, else {version, lastUsedAtMs or '', json ('' when the
 * caller's version is current: a version names exactly one record), grant JSON...}.
 */
const RELEASE_READ = `
local l = redis.call('HMGET', KEYS[1], 'v', 'u')
if not l[1] then return false end
local j = ''
if l[1] ~= ARGV[1] then j = redis.call('HGET', KEYS[1], 'j') end
local out = {l[1], l[2] or '', j}
for i = 2, #KEYS do
  local vals = redis.call('HVALS', KEYS[i])
  for k = 1, #vals do out[#out + 1] = vals[k] end
end
return out
`;

/**
 * The releases' linearisation point, for one or more releases of one tenant at once (the store
 * gathers those of one event-loop turn: one script call instead of one each). Each release i
 * (from 0) has three keys, KEYS[3i+1] its link hash, KEYS[3i+2] the tenant's grant records,
 * KEYS[3i+3] the tenant's audit shard, and four arguments after ARGV[1] (the shard's bound, '' =
 * none), from ARGV[4i+2]: grant id, event JSON, the link version the caller decided on and the
 * SHA-1 (hex) of the grant JSON it read ('' and '' = not checked). Each release is judged on its
 * own, in order, exactly as if it were alone: its event is appended only if its link is active
 * with tokens and its grant still exists (and, when given, the link is at that version and the
 * grant stored as read: else 'changed'). Returns three values per release: {1, stream id, ''} or
 * {0, reason, status}. A link written before the release state \`s\` existed is judged from its JSON.
 */
const COMMIT_RELEASES = `
local function commit(k1, k2, k3, grantId, event, maxEvents, version, digest)
  local sv = redis.call('HMGET', k1, 's', 'v')
  local s = sv[1]
  if not s then
    local j = redis.call('HGET', k1, 'j')
    if not j then return 0, 'link_not_found', '' end
    local link = cjson.decode(j)
    s = link.status
    if link.tokens == nil or link.tokens == cjson.null then s = s .. ':empty' end
  end
  if s ~= 'active' then
    local status = string.match(s, '^[^:]*')
    if status == 'active' then return 0, 'no_tokens', status end
    return 0, 'not_active', status
  end
  if version ~= '' then
    if sv[2] ~= version then return 0, 'changed', '' end
    local g = redis.call('HGET', k2, grantId)
    if not g then return 0, 'grant_gone', '' end
    if redis.sha1hex(g) ~= digest then return 0, 'changed', '' end
  elseif redis.call('HEXISTS', k2, grantId) == 0 then return 0, 'grant_gone', '' end
  if maxEvents ~= '' and redis.call('XLEN', k3) >= tonumber(maxEvents) then return 0, 'audit_full', '' end
  return 1, redis.call('XADD', k3, '*', 'e', event), ''
end
local out = {}
for i = 0, #KEYS / 3 - 1 do
  local a = 4 * i + 2
  local ok, value, status = commit(KEYS[3*i+1], KEYS[3*i+2], KEYS[3*i+3], ARGV[a], ARGV[a+1], ARGV[1], ARGV[a+2], ARGV[a+3])
  out[#out + 1] = ok
  out[#out + 1] = value
  out[#out + 1] = status
end
return out
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
/**
 * Appends an audit event (ARGV[1], JSON) to the shard KEYS[1] unless it holds ARGV[2] events
 * already ('' = no bound): one round trip, and the check and the append are one step.
 * Returns the stream id, or false when the shard is full.
 */
const APPEND_AUDIT = `
if ARGV[2] ~= '' and redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[2]) then return false end
return redis.call('XADD', KEYS[1], '*', 'e', ARGV[1])
`;

/**
 * Trims an audit shard (KEYS[1], a stream) to the newest ARGV[2] of its entries at or before ARGV[1]
 * ('+': all), leaving every entry after ARGV[1]. The entries after ARGV[1] are the newest of the
 * stream, so dropping the oldest of the rest is an exact XTRIM MAXLEN to (those after + ARGV[2]):
 * only the not yet exported tail is read (to count it), never the retained events nor the dropped
 * ones. Reading the dropped ones to find where to cut (XRANGE … COUNT) stalled Redis for 12 ms a pass
 * under the benchmark (a second of releases) and 55 ms when the retention's share of a shard fell
 * (more tenants). Returns how many entries were dropped.
 */
const TRIM_AUDIT = `
local len = redis.call('XLEN', KEYS[1])
local after = 0
if ARGV[1] ~= '+' then after = #redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+') end
local keep = after + tonumber(ARGV[2])
if len <= keep then return 0 end
return redis.call('XTRIM', KEYS[1], 'MAXLEN', keep)
`;

const REPLACE_JOB_PAYLOAD = `
if redis.call('HEXISTS', KEYS[6], ARGV[1]) == 1 then return 0 end
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
return 1
`;

type ScriptArg = string | number;

/** The scripts as client commands (defineScripts). */
export interface ScriptCommands {
  linkvaultSaveLink(numKeys: number, ...args: ScriptArg[]): Promise<[number, string] | null>;
  linkvaultTouchLink(key: string, lastUsedAtMs: string): Promise<number>;
  linkvaultFileExpiry(
    linkKey: string,
    expiryKey: string,
    version: string,
    score: string,
    id: string,
  ): Promise<number>;
  linkvaultReleaseLock(key: string, owner: string): Promise<number>;
  linkvaultExtendLock(key: string, owner: string, ttlMs: string): Promise<number>;
  linkvaultPutGrant(
    records: string,
    service: string,
    bucket: string,
    id: string,
    json: string,
  ): Promise<number>;
  linkvaultDeleteGrant(
    records: string,
    service: string,
    bucket: string,
    id: string,
    seen: string,
  ): Promise<number>;
  linkvaultReleaseRead(numKeys: number, ...args: ScriptArg[]): Promise<string[] | null>;
  linkvaultCommitReleases(numKeys: number, ...args: ScriptArg[]): Promise<(number | string)[]>;
  linkvaultEnqueue(...args: ScriptArg[]): Promise<number>;
  linkvaultClaimJobs(...args: ScriptArg[]): Promise<(string | null)[]>;
  linkvaultCompleteJob(...args: ScriptArg[]): Promise<number>;
  linkvaultRescheduleJob(...args: ScriptArg[]): Promise<number>;
  linkvaultScanJobs(...args: ScriptArg[]): Promise<string[]>;
  linkvaultReplaceJobPayload(...args: ScriptArg[]): Promise<number>;
  linkvaultTrimAudit(stream: string, through: string, keep: number): Promise<number>;
  linkvaultAppendAudit(stream: string, event: string, maxEvents: string): Promise<string | null>;
}

/** Registers every script on `client` and returns it typed with their commands. */
export function defineScripts(client: RedisClient): ScriptCommands {
  // defineCommand sends EVALSHA and falls back to EVAL on NOSCRIPT (a restarted or new node).
  client.defineCommand('linkvaultSaveLink', { lua: SAVE_LINK });
  client.defineCommand('linkvaultTouchLink', { lua: TOUCH_LINK, numberOfKeys: 1 });
  client.defineCommand('linkvaultFileExpiry', { lua: FILE_EXPIRY, numberOfKeys: 2 });
  client.defineCommand('linkvaultReleaseLock', { lua: RELEASE_LOCK, numberOfKeys: 1 });
  client.defineCommand('linkvaultExtendLock', { lua: EXTEND_LOCK, numberOfKeys: 1 });
  client.defineCommand('linkvaultPutGrant', { lua: PUT_GRANT, numberOfKeys: 3 });
  client.defineCommand('linkvaultDeleteGrant', { lua: DELETE_GRANT, numberOfKeys: 3 });
  client.defineCommand('linkvaultReleaseRead', { lua: RELEASE_READ });
  client.defineCommand('linkvaultCommitReleases', { lua: COMMIT_RELEASES });
  client.defineCommand('linkvaultEnqueue', { lua: ENQUEUE, numberOfKeys: 6 });
  client.defineCommand('linkvaultClaimJobs', { lua: CLAIM_JOBS, numberOfKeys: 6 });
  client.defineCommand('linkvaultCompleteJob', { lua: COMPLETE_JOB, numberOfKeys: 6 });
  client.defineCommand('linkvaultRescheduleJob', { lua: RESCHEDULE_JOB, numberOfKeys: 6 });
  client.defineCommand('linkvaultScanJobs', { lua: SCAN_JOBS, numberOfKeys: 6 });
  client.defineCommand('linkvaultReplaceJobPayload', { lua: REPLACE_JOB_PAYLOAD, numberOfKeys: 6 });
  client.defineCommand('linkvaultTrimAudit', { lua: TRIM_AUDIT, numberOfKeys: 1 });
  client.defineCommand('linkvaultAppendAudit', { lua: APPEND_AUDIT, numberOfKeys: 1 });
  return client as unknown as ScriptCommands;
}
