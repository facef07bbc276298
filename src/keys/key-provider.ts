/**
 * The KeyProvider port: wraps and unwraps per-link data keys under a master key (local file) or
 * a KMS key. Implementations: local-key-provider.ts, aws-kms-key-provider.ts.
 *
 * Every method binds the data key to `context` (the sealed record's identity): the local provider
 * uses it as AES-GCM AAD, the KMS provider as the EncryptionContext. A wrapped key presented with
 * another context never unwraps.
 *
 * Failure behaviour: a key service that cannot be reached, throttles, times out or answers
 * garbage rejects with LinkvaultError('key_service_unavailable'); a wrapped key that does not
 * open under its context (tampered, wrong identity, unknown key id) rejects with
 * LinkvaultError('sealed_record_invalid'). Never a fallback to another key.
 */

/** The identity a sealed record is bound to: `{tenant, link, provider, field}`. */
export interface SealIdentity {
  readonly tenant: string;
  readonly link: string;
  readonly provider: string;
  readonly field: string;
}

export interface GeneratedDataKey {
  /** Id of the key that wrapped it. */
  readonly kid: string;
  /** 32 bytes of key material; callers must not log or persist it. */
  readonly plaintext: Buffer;
  /** The wrapped key, safe to store. */
  readonly wrapped: Buffer;
}

export interface KeyProvider {
  readonly kind: 'local' | 'aws-kms';
  /** Id of the key that wraps new data keys. */
  currentKeyId(): string;
  /** A fresh 256-bit data key wrapped under the current key and bound to `context`. */
  generateDataKey(context: SealIdentity): Promise<GeneratedDataKey>;
  /** Unwraps a data key wrapped under `kid` for `context`. */
  unwrapDataKey(kid: string, wrapped: Buffer, context: SealIdentity): Promise<Buffer>;
  /** Re-wraps under the current key without changing the data key; returns the new kid and wrapped key. */
  rewrapDataKey(
    kid: string,
    wrapped: Buffer,
    context: SealIdentity,
  ): Promise<{ kid: string; wrapped: Buffer }>;
  /** Resolves when the key service answers (readiness); rejects key_service_unavailable otherwise. */
  ping(): Promise<void>;
}
