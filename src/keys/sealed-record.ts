/** A sealed record as produced by keys/vault.ts: `{v, alg, kid, edk, iv, ct, tag}`, binary fields base64url. */
export interface SealedRecord {
  readonly v: 1;
  readonly alg: 'A256GCM';
  /** Id of the master key (local) or KMS key that wrapped `edk`. */
  readonly kid: string;
  /** The wrapped (encrypted) data key. */
  readonly edk: string;
  readonly iv: string;
  readonly ct: string;
  readonly tag: string;
}
