import { createCipheriv, createDecipheriv, randomBytes, type KeyObject } from 'node:crypto';

/**
 * The one AES-256-GCM used for every secret linkvault seals: the vault's records, the local
 * provider's wrapped data keys and the connect flow state. Each caller keeps its own byte layout
 * and decides what its AAD is; this file fixes the parameters so that they cannot drift apart.
 *
 * - `sealAead(key, plaintext, aad)` → `{iv, ct, tag}` under a fresh random 12-byte IV; throws
 *   AeadError('key_length') for a key that is not 32 bytes.
 * - `openAead(key, sealed, aad)` → the plaintext; throws AeadError naming what failed:
 *   'key_length', 'iv_length', 'tag_length', or 'not_authentic' (wrong key, wrong AAD or any
 *   altered byte). Never returns unauthenticated bytes.
 */

export const AEAD_KEY_BYTES = 32;
/** NIST SP 800-38D §8.2: 96-bit random IVs; every caller keeps invocations per key far below 2^32. */
export const AEAD_IV_BYTES = 12;
export const AEAD_TAG_BYTES = 16;

export interface AeadSealed {
  readonly iv: Buffer;
  readonly ct: Buffer;
  readonly tag: Buffer;
}

export type AeadFailure = 'key_length' | 'iv_length' | 'tag_length' | 'not_authentic';

/** What went wrong opening or sealing; callers translate it to their own error by `failure`. */
export class AeadError extends Error {
  readonly failure: AeadFailure;
  constructor(failure: AeadFailure, options?: { cause?: unknown }) {
    super(`aes-256-gcm: ${failure.replace('_', ' ')}`, options);
    this.name = 'AeadError';
    this.failure = failure;
  }
}

export type AeadKey = Buffer | KeyObject;

export function sealAead(key: AeadKey, plaintext: Buffer, aad: Buffer | string): AeadSealed {
  checkKey(key);
  const iv = randomBytes(AEAD_IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: AEAD_TAG_BYTES });
  cipher.setAAD(toBytes(aad));
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return { iv, ct, tag: cipher.getAuthTag() };
}

export function openAead(key: AeadKey, sealed: AeadSealed, aad: Buffer | string): Buffer {
  checkKey(key);
  if (sealed.iv.length !== AEAD_IV_BYTES) throw new AeadError('iv_length');
  // A short tag would make forgery cheaper (SP 800-38D appendix C); only the full 16 bytes are accepted.
  if (sealed.tag.length !== AEAD_TAG_BYTES) throw new AeadError('tag_length');
  const decipher = createDecipheriv('aes-256-gcm', key, sealed.iv, {
    authTagLength: AEAD_TAG_BYTES,
  });
  decipher.setAAD(toBytes(aad));
  decipher.setAuthTag(sealed.tag);
  // update() hands out plaintext before the tag is checked: it is zeroed whatever final() says.
  const head = decipher.update(sealed.ct);
  try {
    const tail = decipher.final();
    const out = Buffer.concat([head, tail]);
    tail.fill(0);
    return out;
  } catch (cause) {
    throw new AeadError('not_authentic', { cause });
  } finally {
    head.fill(0);
  }
}

function checkKey(key: AeadKey): void {
  const bytes = Buffer.isBuffer(key) ? key.length : key.symmetricKeySize;
  if (bytes !== AEAD_KEY_BYTES) throw new AeadError('key_length');
}

function toBytes(aad: Buffer | string): Buffer {
  return typeof aad === 'string' ? Buffer.from(aad, 'utf8') : aad;
}
