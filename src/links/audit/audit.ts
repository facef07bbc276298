import { createHash, createHmac, createSecretKey, randomBytes, type KeyObject } from 'node:crypto';
import { isLinkvaultError, LinkvaultError } from '../../errors.js';
import type { SealIdentity } from '../../keys/key-provider.js';
import type { Vault } from '../../keys/vault.js';
import { Secret } from '../../secret.js';
import { acquireLockWithin } from '../../store/lock-wait.js';
import type { AuditEvent, Store } from '../../store/store.js';
import type { SealedRecord } from '../../keys/sealed-record.js';

/**
 * The audit trail: an append-only log of who obtained what, when and under which grant.
 *
 * Tokens never appear raw. A Secret anywhere in the fields is replaced by a truncated, labelled
 * HMAC-SHA256 under the deployment's audit key (`hmac-sha256/128:<key id>:<mac>`), so an
 * operator holding a token can find its releases while the log itself gives nothing away; a
 * plain hash would not do (tokens with little entropy could be confirmed by brute force).
 *
 * Fail closed: when the store cannot append, `record` rejects audit_unavailable and the caller
 * must not release anything (the token route releases only after the record is stored).
 */

export interface Audit {
  /** Appends one event; rejects audit_unavailable when it cannot be stored (or the key cannot be had). Returns the sequence id. */
  record(
    type: string,
    fields: Readonly<Record<string, unknown>>,
    requestId?: string | null,
  ): Promise<string>;
  /**
   * The event `record` would append, without appending it (secrets already labelled), for a caller
   * that stores it through an atomic store step (the token release's commitRelease). Rejects
   * audit_unavailable when the key cannot be had. Once the key is loaded the event is returned
   * as is, not in a promise: the release awaits it either way, and pays no promise per release.
   */
  prepare(
    type: string,
    fields: Readonly<Record<string, unknown>>,
    requestId?: string | null,
  ): AuditEvent | Promise<AuditEvent>;
  /** The label under which `secret` appears in the audit log (for an operator's lookup). */
  fingerprint(secret: Secret): Promise<string>;
}

export interface AuditDeps {
  readonly store: Pick<Store, 'appendAudit'>;
  /**
   * 32 random bytes, never a constant: the key itself, or a loader (auditKeyLoader) so that a key
   * service that is down at start makes releases fail closed instead of the process not starting.
   */
  readonly hmacKey: KeyObject | Buffer | (() => Promise<KeyObject>);
  readonly now: () => number;
}

const MAC_BYTES = 16; // 128 bits: collision-free for an audit index, half the MAC kept back

interface KeyMaterial {
  readonly key: KeyObject;
  /** Names the key without revealing it, so labels made under a rotated audit key stay distinguishable. */
  readonly keyId: string;
}

function materialOf(input: KeyObject | Buffer): KeyMaterial {
  const key = Buffer.isBuffer(input) ? createSecretKey(input) : input;
  if (key.type !== 'secret' || (key.symmetricKeySize ?? 0) < 32)
    throw new Error('audit HMAC key must be a secret key of at least 32 bytes');
  return { key, keyId: createHash('sha256').update(key.export()).digest('base64url').slice(0, 8) };
}

export function createAudit(deps: AuditDeps): Audit {
  const source = deps.hmacKey;
  let ready: KeyMaterial | null = typeof source === 'function' ? null : materialOf(source);

  async function material(): Promise<KeyMaterial> {
    if (ready) return ready;
    try {
      ready = materialOf(await (source as () => Promise<KeyObject>)());
      return ready;
    } catch (cause) {
      throw new LinkvaultError('audit_unavailable', { cause, retryAfterSeconds: 1 });
    }
  }

  /**
   * The label of a Secret object already labelled (a token released many times is one Secret in the
   * release path's cache of opened token sets), for the key it was labelled with.
   */
  const labels = new WeakMap<Secret, { readonly key: KeyObject; readonly label: string }>();

  function label(m: KeyMaterial, secret: Secret): string {
    const known = labels.get(secret);
    if (known !== undefined && known.key === m.key) return known.label;
    const fresh = computeLabel(m, secret);
    labels.set(secret, { key: m.key, label: fresh });
    return fresh;
  }

  function computeLabel(m: KeyMaterial, secret: Secret): string {
    const mac = createHmac('sha256', m.key)
      .update(secret.reveal(), 'utf8')
      .digest()
      .subarray(0, MAC_BYTES);
    return `hmac-sha256/128:${m.keyId}:${mac.toString('base64url')}`;
  }

  function scrub(m: KeyMaterial, value: unknown, depth: number): unknown {
    if (value instanceof Secret) return label(m, value);
    if (depth > 4 || value === null || typeof value !== 'object') return value;
    if (Array.isArray(value)) return value.map((v) => scrub(m, v, depth + 1));
    const out: Record<string, unknown> = {};
    // for-in over own keys, not Object.entries: no [key, value] array per field (every release scrubs its event).
    for (const k in value) {
      if (Object.hasOwn(value, k))
        out[k] = scrub(m, (value as Record<string, unknown>)[k], depth + 1);
    }
    return out;
  }

  function eventOf(
    m: KeyMaterial,
    type: string,
    fields: Readonly<Record<string, unknown>>,
    requestId: string | null,
  ): AuditEvent {
    return {
      atMs: deps.now(),
      type,
      requestId,
      data: scrub(m, fields, 0) as Record<string, unknown>,
    };
  }

  function prepare(
    type: string,
    fields: Readonly<Record<string, unknown>>,
    requestId: string | null = null,
  ): AuditEvent | Promise<AuditEvent> {
    if (ready) return eventOf(ready, type, fields, requestId);
    return material().then((m) => eventOf(m, type, fields, requestId));
  }

  async function record(
    type: string,
    fields: Readonly<Record<string, unknown>>,
    requestId: string | null = null,
  ): Promise<string> {
    const event = await prepare(type, fields, requestId);
    try {
      return await deps.store.appendAudit(event);
    } catch (cause) {
      throw new LinkvaultError('audit_unavailable', { cause, retryAfterSeconds: 1 });
    }
  }

  return { record, prepare, fingerprint: async (secret) => label(await material(), secret) };
}

// ---- the audit key ----

/** Where the sealed audit key lives (a job-status row: the Store's durable small-document slot). */
export const AUDIT_KEY_ROW_ID = 'linkvault:audit-hmac-key';
const AUDIT_KEY_LOCK = 'linkvault:audit-hmac-key:create';
const AUDIT_KEY_IDENTITY: SealIdentity = {
  tenant: '_linkvault',
  link: '_audit',
  provider: '_linkvault',
  field: 'audit_hmac_key',
};
const AUDIT_KEY_BYTES = 32;

export interface AuditKeyDeps {
  readonly store: Pick<Store, 'getJobStatus' | 'putJobStatus' | 'acquireLock' | 'releaseLock'>;
  readonly vault: Pick<Vault, 'seal' | 'open'>;
  /** Id of the key that wraps new data keys (KeyProvider.currentKeyId): a stale key is re-sealed under it. */
  readonly currentKeyId: () => string;
  readonly now: () => number;
  /** How long to wait for another replica that is creating the key (default 10 s). */
  readonly waitMs?: number;
}

/**
 * loadAuditKey as a loader for createAudit: the first successful load is kept; a failed one (key
 * service or store down) is retried on the next call; concurrent callers share one attempt.
 */
export function auditKeyLoader(deps: AuditKeyDeps): () => Promise<KeyObject> {
  let loaded: KeyObject | null = null;
  let pending: Promise<KeyObject> | null = null;
  return () => {
    if (loaded) return Promise.resolve(loaded);
    pending ??= loadAuditKey(deps).then(
      (key) => {
        loaded = key;
        pending = null;
        return key;
      },
      (err: unknown) => {
        pending = null;
        throw err;
      },
    );
    return pending;
  };
}

/**
 * The deployment's audit HMAC key: 32 random bytes sealed by the vault (so it is exactly as
 * secret as the tokens, and follows master-key rotation) and stored through the store, so every
 * replica uses the same key. The first start creates it under a store lock; replicas that do not
 * get the lock wait and read what the winner stored. After writing, the creator reads the row
 * back and uses what is stored, so two creators (a lock that expired mid-write) still converge.
 */
export async function loadAuditKey(deps: AuditKeyDeps): Promise<KeyObject> {
  const lock = await acquireLockWithin(deps.store, AUDIT_KEY_LOCK, 30_000, {
    waitMs: deps.waitMs ?? 10_000,
    pollMs: (attempt) => Math.min(50 * 2 ** attempt, 500),
    now: deps.now,
    settled: async () => (await readAuditKey(deps)) ?? undefined,
  });
  if ('settled' in lock) return lock.settled;
  if ('timedOut' in lock)
    throw new LinkvaultError('store_unavailable', {
      detail: 'timed out waiting for another replica to create the audit key',
    });
  try {
    const again = await readAuditKey(deps);
    if (again) return again;
    const raw = randomBytes(AUDIT_KEY_BYTES);
    try {
      const sealed = await deps.vault.seal(AUDIT_KEY_IDENTITY, raw);
      await deps.store.putJobStatus({
        id: AUDIT_KEY_ROW_ID,
        status: { sealed, created_at_ms: deps.now() },
      });
    } finally {
      raw.fill(0);
    }
    const stored = await readAuditKey(deps);
    if (stored) return stored;
    throw new LinkvaultError('store_unavailable', {
      detail: 'the audit key did not read back after it was written',
    });
  } finally {
    await deps.store.releaseLock(AUDIT_KEY_LOCK, lock.owner).catch(() => undefined);
  }
}

async function readAuditKey(deps: AuditKeyDeps): Promise<KeyObject | null> {
  const row = await deps.store.getJobStatus(AUDIT_KEY_ROW_ID);
  if (!row) return null;
  const sealed = (row.status as { sealed?: SealedRecord }).sealed;
  if (!sealed || typeof sealed !== 'object')
    throw new LinkvaultError('sealed_record_invalid', {
      detail: 'the stored audit key row is malformed',
    });
  let raw: Buffer;
  try {
    raw = await deps.vault.open(AUDIT_KEY_IDENTITY, sealed);
  } catch (err) {
    if (isLinkvaultError(err)) throw err;
    throw new LinkvaultError('sealed_record_invalid', { cause: err });
  }
  try {
    if (raw.length !== AUDIT_KEY_BYTES)
      throw new LinkvaultError('sealed_record_invalid', {
        detail: 'the stored audit key has the wrong length',
      });
    // Follow master-key rotation: re-seal (same key bytes) under the current key so that the old
    // master key can be retired. Any replica may do it; the bytes are equal, so a race is harmless.
    if (sealed.kid !== deps.currentKeyId()) {
      const resealed = await deps.vault.seal(AUDIT_KEY_IDENTITY, raw);
      await deps.store.putJobStatus({
        id: AUDIT_KEY_ROW_ID,
        status: { ...row.status, sealed: resealed },
      });
    }
    return createSecretKey(Buffer.from(raw));
  } finally {
    raw.fill(0);
  }
}
