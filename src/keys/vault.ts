import { isLinkvaultError, LinkvaultError } from '../errors.js';
import type { Metrics } from '../metrics.js';
import {
  AEAD_IV_BYTES,
  AEAD_KEY_BYTES,
  AEAD_TAG_BYTES,
  AeadError,
  openAead,
  sealAead,
} from './aead.js';
import type { SealedRecord } from './sealed-record.js';
import { canonicalIdentity } from './canonical-identity.js';
import type { KeyProvider, SealIdentity } from './key-provider.js';

/**
 * Envelope sealing. Each link's secrets are encrypted with AES-256-GCM under a per-link data
 * key; the data key is stored wrapped (edk) by the KeyProvider. The record describes itself,
 * `{v:1, alg:'A256GCM', kid, edk, iv, ct, tag}` (binary fields base64url), and is bound to its
 * identity {tenant, link, provider, field} twice: as the GCM AAD of the ciphertext and as the
 * wrapping context of the data key, so a record copied under another identity never opens.
 *
 * Unwrapped data keys are cached (LRU by entries, bounded age) so that steady-state open/seal
 * makes no key-service call; an entry serves only the identity it was unwrapped for. Evicted
 * keys are zeroed. Concurrent misses for the same key share one key-service call.
 */
export interface Vault {
  /** Seals under identity. `reuse` = the link's previous record for the same identity: its data key is reused (a data key per link), so a re-seal after refresh costs no key-service call when cached. Without reuse a fresh data key is generated. */
  seal(
    identity: SealIdentity,
    plaintext: Buffer,
    reuse?: SealedRecord | null,
  ): Promise<SealedRecord>;
  /** Opens; any tampered field or a record presented under another identity → LinkvaultError('sealed_record_invalid'). */
  open(identity: SealIdentity, record: SealedRecord): Promise<Buffer>;
  /** Re-wraps the record's data key under the current key; iv/ct/tag untouched. */
  rewrap(identity: SealIdentity, record: SealedRecord): Promise<SealedRecord>;
  /** Drops the record's unwrapped data key from the cache (shredding, revoke). */
  forget(record: SealedRecord): void;
}

export interface VaultDeps {
  readonly keys: KeyProvider;
  readonly metrics: Metrics;
  /** Cached unwrapped data keys at most; 0 disables the cache. */
  readonly maxEntries: number;
  /** A cached key is dropped this long after it was unwrapped; 0 disables the cache. */
  readonly maxAgeMs: number;
  readonly now?: () => number;
}

const DATA_KEY_BYTES = AEAD_KEY_BYTES;
// One data key per link keeps GCM invocations per key far below the 2^32 random-IV bound.
const IV_BYTES = AEAD_IV_BYTES;
const TAG_BYTES = AEAD_TAG_BYTES;
const MAX_KID_CHARS = 2048;
const MAX_EDK_BYTES = 8192;
const MAX_CT_BYTES = 1 << 20;
const RECORD_MEMBERS = ['alg', 'ct', 'edk', 'iv', 'kid', 'tag', 'v'];

interface CacheEntry {
  readonly key: Buffer;
  /** Canonical identity the key was unwrapped for; the entry serves no other. */
  readonly identity: string;
  readonly createdAtMs: number;
}

interface ParsedRecord {
  readonly kid: string;
  readonly edk: Buffer;
  readonly iv: Buffer;
  readonly ct: Buffer;
  readonly tag: Buffer;
}

export function createVault(deps: VaultDeps): Vault {
  const { keys, metrics } = deps;
  const now = deps.now ?? Date.now;
  const cacheEnabled = deps.maxEntries > 0 && deps.maxAgeMs > 0;
  /** Map order is recency order: a hit moves its entry to the end, eviction takes from the front. */
  const cache = new Map<string, CacheEntry>();
  const inflight = new Map<string, Promise<Buffer>>();
  const sweepEveryMs = Math.max(1000, Math.floor(deps.maxAgeMs / 4));
  let lastSweepMs = now();

  function drop(cacheKey: string): void {
    const entry = cache.get(cacheKey);
    if (!entry) return;
    cache.delete(cacheKey);
    entry.key.fill(0);
  }

  /** Drops every expired entry; runs at most every sweepEveryMs so an idle key does not linger long past its age. */
  function sweep(): void {
    const t = now();
    if (t - lastSweepMs < sweepEveryMs) return;
    lastSweepMs = t;
    for (const [k, entry] of cache) if (t - entry.createdAtMs >= deps.maxAgeMs) drop(k);
  }

  function lookup(cacheKey: string, identity: string): Buffer | undefined {
    const entry = cache.get(cacheKey);
    if (!entry) return undefined;
    if (now() - entry.createdAtMs >= deps.maxAgeMs) {
      drop(cacheKey);
      return undefined;
    }
    // Presented under another identity: a miss, and the rightful entry stays.
    if (entry.identity !== identity) return undefined;
    cache.delete(cacheKey);
    cache.set(cacheKey, entry);
    return entry.key;
  }

  /** Takes ownership of `key`: caches it, or zeroes it when the cache is off. */
  function keep(
    cacheKey: string,
    identity: string,
    key: Buffer,
    createdAtMs: number = now(),
  ): void {
    if (!cacheEnabled) {
      key.fill(0);
      return;
    }
    const existing = cache.get(cacheKey);
    if (existing && existing.key !== key) drop(cacheKey);
    cache.delete(cacheKey);
    cache.set(cacheKey, { key, identity, createdAtMs });
    while (cache.size > deps.maxEntries) {
      const oldest = cache.keys().next().value as string;
      drop(oldest);
    }
  }

  /**
   * Runs `use` with the unwrapped data key. `use` must be synchronous: the key buffer is only
   * guaranteed intact until the next await (another operation may evict and zero it).
   */
  async function withDataKey<T>(
    identity: SealIdentity,
    aad: string,
    record: SealedRecord,
    parsed: ParsedRecord,
    use: (key: Buffer) => T,
  ): Promise<T> {
    sweep();
    const cacheKey = cacheKeyOf(record.kid, record.edk);
    const flightKey = `${cacheKey}\u0000${aad}`;
    const pending = inflight.get(flightKey);
    if (pending) {
      // Share the outcome of the call already under way (its failure too: the same wrapped key
      // under the same identity fails the same way), then read the key it cached.
      await pending;
    }
    const hit = lookup(cacheKey, aad);
    if (hit) {
      metrics.dataKeyCache.inc({ result: 'hit' });
      return use(hit);
    }
    metrics.dataKeyCache.inc({ result: 'miss' });
    const call = callKeys(() => keys.unwrapDataKey(parsed.kid, parsed.edk, identity));
    inflight.set(flightKey, call);
    let key: Buffer;
    try {
      key = await call;
    } finally {
      if (inflight.get(flightKey) === call) inflight.delete(flightKey);
    }
    if (key.length !== DATA_KEY_BYTES) {
      key.fill(0);
      throw new LinkvaultError('sealed_record_invalid', {
        detail: 'the unwrapped data key has the wrong length',
      });
    }
    try {
      return use(key);
    } finally {
      keep(cacheKey, aad, key);
    }
  }

  return {
    async seal(identity, plaintext, reuse) {
      const aad = canonicalIdentity(identity);
      // A data key per link: reuse the previous record's key while it is wrapped under the
      // current key. After a rotation the first re-seal takes a fresh key under the new one.
      if (reuse && reuse.kid === keys.currentKeyId()) {
        const parsed = parseRecord(reuse);
        return withDataKey(identity, aad, reuse, parsed, (key) =>
          encrypt(key, reuse.kid, reuse.edk, plaintext, aad),
        );
      }
      sweep();
      const generated = await callKeys(() => keys.generateDataKey(identity));
      if (
        generated.plaintext.length !== DATA_KEY_BYTES ||
        typeof generated.kid !== 'string' ||
        generated.kid === '' ||
        generated.wrapped.length === 0
      ) {
        generated.plaintext.fill(0);
        throw new LinkvaultError('key_service_unavailable', {
          detail: 'the key provider returned an unusable data key',
          retryAfterSeconds: 1,
        });
      }
      const edk = generated.wrapped.toString('base64url');
      try {
        return encrypt(generated.plaintext, generated.kid, edk, plaintext, aad);
      } finally {
        keep(cacheKeyOf(generated.kid, edk), aad, generated.plaintext);
      }
    },

    async open(identity, record) {
      const aad = canonicalIdentity(identity);
      const parsed = parseRecord(record);
      return withDataKey(identity, aad, record, parsed, (key) => decrypt(key, parsed, aad));
    },

    async rewrap(identity, record) {
      const aad = canonicalIdentity(identity);
      const parsed = parseRecord(record);
      const out = await callKeys(() => keys.rewrapDataKey(parsed.kid, parsed.edk, identity));
      if (typeof out.kid !== 'string' || out.kid === '' || out.wrapped.length === 0) {
        throw new LinkvaultError('key_service_unavailable', {
          detail: 'the key provider returned an unusable wrapped key',
          retryAfterSeconds: 1,
        });
      }
      const rewrapped: SealedRecord = {
        v: 1,
        alg: 'A256GCM',
        kid: out.kid,
        edk: out.wrapped.toString('base64url'),
        iv: record.iv,
        ct: record.ct,
        tag: record.tag,
      };
      // The data key did not change: move a cached entry to its new name instead of unwrapping again.
      const oldKey = cacheKeyOf(record.kid, record.edk);
      const entry = cache.get(oldKey);
      if (entry && entry.identity === aad) {
        cache.delete(oldKey);
        keep(cacheKeyOf(rewrapped.kid, rewrapped.edk), aad, entry.key, entry.createdAtMs);
      }
      return rewrapped;
    },

    forget(record) {
      if (record && typeof record.kid === 'string' && typeof record.edk === 'string')
        drop(cacheKeyOf(record.kid, record.edk));
    },
  };
}

function cacheKeyOf(kid: string, edk: string): string {
  return `${kid}\u0000${edk}`;
}

/** Key-provider calls: anything that is not already a LinkvaultError means the service failed; fail closed. */
async function callKeys<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (isLinkvaultError(err)) throw err;
    throw new LinkvaultError('key_service_unavailable', {
      detail: 'the key provider failed',
      cause: err,
      retryAfterSeconds: 1,
    });
  }
}

function encrypt(
  key: Buffer,
  kid: string,
  edk: string,
  plaintext: Buffer,
  aad: string,
): SealedRecord {
  const { iv, ct, tag } = sealAead(key, plaintext, aad);
  return {
    v: 1,
    alg: 'A256GCM',
    kid,
    edk,
    iv: iv.toString('base64url'),
    ct: ct.toString('base64url'),
    tag: tag.toString('base64url'),
  };
}

function decrypt(key: Buffer, record: ParsedRecord, aad: string): Buffer {
  try {
    return openAead(key, record, aad);
  } catch (cause) {
    if (cause instanceof AeadError)
      throw invalid('the record does not authenticate under this identity', cause);
    throw cause;
  }
}

function invalid(detail: string, cause?: unknown): LinkvaultError {
  return new LinkvaultError('sealed_record_invalid', { detail, cause });
}

/** Strict base64url: only the alphabet, no padding, and canonical (re-encodes to the same text). */
function strictBase64url(
  value: unknown,
  member: string,
  minBytes: number,
  maxBytes: number,
): Buffer {
  if (typeof value !== 'string' || !/^[A-Za-z0-9_-]*$/.test(value))
    throw invalid(`record member ${member} is not base64url`);
  const bytes = Buffer.from(value, 'base64url');
  if (bytes.toString('base64url') !== value)
    throw invalid(`record member ${member} is not canonical base64url`);
  if (bytes.length < minBytes || bytes.length > maxBytes)
    throw invalid(`record member ${member} has the wrong length`);
  return bytes;
}

/** Validates the whole shape before any key is touched: exact members, known v and alg, exact lengths. */
function parseRecord(record: unknown): ParsedRecord {
  if (typeof record !== 'object' || record === null || Array.isArray(record))
    throw invalid('record is not an object');
  const r = record as Record<string, unknown>;
  const members = Object.keys(r).sort();
  if (members.length !== RECORD_MEMBERS.length || members.some((m, i) => m !== RECORD_MEMBERS[i]))
    throw invalid('record has unexpected members');
  if (r.v !== 1) throw invalid('unknown record version');
  if (r.alg !== 'A256GCM') throw invalid('unknown record algorithm');
  if (
    typeof r.kid !== 'string' ||
    r.kid === '' ||
    r.kid.length > MAX_KID_CHARS ||
    !/^[\x21-\x7e]+$/.test(r.kid)
  )
    throw invalid('record kid is malformed');
  return {
    kid: r.kid,
    edk: strictBase64url(r.edk, 'edk', 1, MAX_EDK_BYTES),
    iv: strictBase64url(r.iv, 'iv', IV_BYTES, IV_BYTES),
    ct: strictBase64url(r.ct, 'ct', 0, MAX_CT_BYTES),
    tag: strictBase64url(r.tag, 'tag', TAG_BYTES, TAG_BYTES),
  };
}
