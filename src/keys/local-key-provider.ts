import { createHash, createSecretKey, randomBytes, type KeyObject } from 'node:crypto';
import { link, mkdir, open, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ConfigError } from '../config.js';
import { LinkvaultError } from '../errors.js';
import type { Metrics } from '../metrics.js';
import {
  AEAD_IV_BYTES,
  AEAD_KEY_BYTES,
  AEAD_TAG_BYTES,
  AeadError,
  openAead,
  sealAead,
} from './aead.js';
import { canonicalIdentity } from './canonical-identity.js';
import { keyServiceOutcome, type KeyServiceOutcome } from './key-service-outcome.js';
import type { GeneratedDataKey, KeyProvider, SealIdentity } from './key-provider.js';

/**
 * KeyProvider over a 32-byte master key in a local file (one node, development, or a secret
 * mounted by the platform). Data keys are wrapped with AES-256-GCM under the master key, the
 * record identity as AAD: wrapped = iv(12) || ct(32) || tag(16).
 *
 * The key file must be exactly 32 raw bytes and readable by its owner only. Outside production
 * a missing file is generated once, atomically and exclusively (see generateKeyFile). Previous
 * master keys are loaded to unwrap data keys wrapped before a rotation; new keys are always
 * wrapped under the current one.
 */

const MASTER_KEY_BYTES = AEAD_KEY_BYTES;
const DATA_KEY_BYTES = AEAD_KEY_BYTES;
const IV_BYTES = AEAD_IV_BYTES;
const TAG_BYTES = AEAD_TAG_BYTES;
const WRAPPED_BYTES = IV_BYTES + DATA_KEY_BYTES + TAG_BYTES;

export interface LocalKeyProviderOptions {
  /** The current master key file. */
  readonly keyFile: string;
  /** Older master key files, used only to unwrap. */
  readonly previousKeyFiles?: readonly string[];
  /** Whether a missing key file may be generated (never in production). */
  readonly mayGenerate: boolean;
  readonly metrics: Metrics;
}

interface MasterKey {
  readonly kid: string;
  readonly key: KeyObject;
}

export class LocalKeyProvider implements KeyProvider {
  readonly kind = 'local' as const;
  readonly #current: MasterKey;
  readonly #byKid: ReadonlyMap<string, MasterKey>;
  readonly #metrics: Metrics;
  /** True when this start created the key file (development only); the caller warns loudly. */
  readonly generated: boolean;

  private constructor(
    current: MasterKey,
    previous: readonly MasterKey[],
    generated: boolean,
    metrics: Metrics,
  ) {
    this.#current = current;
    const byKid = new Map<string, MasterKey>();
    for (const k of previous) byKid.set(k.kid, k);
    byKid.set(current.kid, current);
    this.#byKid = byKid;
    this.generated = generated;
    this.#metrics = metrics;
  }

  /**
   * Loads (or, when allowed and missing, generates) the master key and the previous keys.
   * Throws ConfigError naming the variable when a file is missing, of the wrong size or
   * readable by group/others.
   */
  static async load(options: LocalKeyProviderOptions): Promise<LocalKeyProvider> {
    let generated = false;
    let raw = await readKeyFile(options.keyFile, 'LINKVAULT_LOCAL_KEY_FILE');
    if (raw === null) {
      if (!options.mayGenerate) {
        throw new ConfigError(
          'LINKVAULT_LOCAL_KEY_FILE',
          `${options.keyFile} does not exist and generating a master key is not allowed here (production)`,
        );
      }
      generated = await generateKeyFile(options.keyFile);
      raw = await readKeyFile(options.keyFile, 'LINKVAULT_LOCAL_KEY_FILE');
      if (raw === null)
        throw new ConfigError(
          'LINKVAULT_LOCAL_KEY_FILE',
          `${options.keyFile} vanished right after it was created`,
        );
    }
    const current = toMasterKey(raw);
    const previous: MasterKey[] = [];
    for (const file of options.previousKeyFiles ?? []) {
      const prev = await readKeyFile(file, 'LINKVAULT_LOCAL_PREVIOUS_KEY_FILES');
      if (prev === null)
        throw new ConfigError('LINKVAULT_LOCAL_PREVIOUS_KEY_FILES', `${file} does not exist`);
      previous.push(toMasterKey(prev));
    }
    return new LocalKeyProvider(current, previous, generated, options.metrics);
  }

  currentKeyId(): string {
    return this.#current.kid;
  }

  async generateDataKey(context: SealIdentity): Promise<GeneratedDataKey> {
    return this.#measure('generate', () => {
      const aad = canonicalIdentity(context);
      const plaintext = randomBytes(DATA_KEY_BYTES);
      return {
        kid: this.#current.kid,
        plaintext,
        wrapped: wrap(this.#current.key, plaintext, aad),
      };
    });
  }

  async unwrapDataKey(kid: string, wrapped: Buffer, context: SealIdentity): Promise<Buffer> {
    return this.#measure('unwrap', () => this.#unwrap(kid, wrapped, canonicalIdentity(context)));
  }

  async rewrapDataKey(
    kid: string,
    wrapped: Buffer,
    context: SealIdentity,
  ): Promise<{ kid: string; wrapped: Buffer }> {
    return this.#measure('rewrap', () => {
      const aad = canonicalIdentity(context);
      const plaintext = this.#unwrap(kid, wrapped, aad);
      try {
        return { kid: this.#current.kid, wrapped: wrap(this.#current.key, plaintext, aad) };
      } finally {
        plaintext.fill(0);
      }
    });
  }

  /** The key is in memory: always answers. Counted like every other operation. */
  async ping(): Promise<void> {
    return this.#measure('ping', () => undefined);
  }

  #unwrap(kid: string, wrapped: Buffer, aad: string): Buffer {
    const master = this.#byKid.get(kid);
    if (!master)
      throw new LinkvaultError('sealed_record_invalid', {
        detail: 'the record names a master key that is not loaded',
      });
    if (wrapped.length !== WRAPPED_BYTES)
      throw new LinkvaultError('sealed_record_invalid', {
        detail: 'wrapped data key has the wrong length',
      });
    const sealed = {
      iv: wrapped.subarray(0, IV_BYTES),
      ct: wrapped.subarray(IV_BYTES, IV_BYTES + DATA_KEY_BYTES),
      tag: wrapped.subarray(IV_BYTES + DATA_KEY_BYTES),
    };
    try {
      return openAead(master.key, sealed, aad);
    } catch (cause) {
      if (cause instanceof AeadError)
        throw new LinkvaultError('sealed_record_invalid', {
          detail: 'wrapped data key does not open under this identity',
          cause,
        });
      throw cause;
    }
  }

  #measure<T>(operation: string, fn: () => T): T {
    let outcome: KeyServiceOutcome = 'ok';
    try {
      return fn();
    } catch (err) {
      outcome = keyServiceOutcome(err);
      throw err;
    } finally {
      this.#metrics.keyServiceCalls.inc({ provider: 'local', operation, outcome });
    }
  }
}

function wrap(master: KeyObject, plaintext: Buffer, aad: string): Buffer {
  const { iv, ct, tag } = sealAead(master, plaintext, aad);
  return Buffer.concat([iv, ct, tag]);
}

/** kid = 'local:' + 16 hex chars of SHA-256(key): stable, and a one-way digest reveals nothing of a random 256-bit key. */
function toMasterKey(raw: Buffer): MasterKey {
  const kid = 'local:' + createHash('sha256').update(raw).digest('hex').slice(0, 16);
  const key = createSecretKey(raw);
  raw.fill(0);
  return { kid, key };
}

/**
 * Reads a master key file, or returns null when it does not exist. Size and mode are checked
 * on the open descriptor (fstat), so the checked file is the one read.
 */
async function readKeyFile(path: string, variable: string): Promise<Buffer | null> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new ConfigError(
      variable,
      `cannot open ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`,
    );
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new ConfigError(variable, `${path} is not a regular file`);
    if ((st.mode & 0o077) !== 0) {
      throw new ConfigError(
        variable,
        `${path} is accessible by group or others (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}); a master key must be readable by its owner only: chmod 600 it`,
      );
    }
    if (st.size !== MASTER_KEY_BYTES) {
      throw new ConfigError(
        variable,
        `${path} must hold exactly ${MASTER_KEY_BYTES} raw bytes, found ${st.size} (create one with: head -c 32 /dev/urandom > file && chmod 600 file)`,
      );
    }
    const raw = Buffer.alloc(MASTER_KEY_BYTES);
    const { bytesRead } = await fh.read(raw, 0, MASTER_KEY_BYTES, 0);
    if (bytesRead !== MASTER_KEY_BYTES) {
      raw.fill(0);
      throw new ConfigError(
        variable,
        `${path} must hold exactly ${MASTER_KEY_BYTES} raw bytes, read ${bytesRead}`,
      );
    }
    return raw;
  } finally {
    await fh.close();
  }
}

/**
 * Creates the key file with mode 0600 (its directory 0700 when created). The key is written to
 * an O_EXCL temporary file, synced, then hard-linked into place: link(2) is atomic and fails
 * with EEXIST when the target exists, so readers never see a partial file and two processes
 * starting together never end up with two keys (rename(2) would silently replace the winner's
 * key). Returns true when this call created the file, false when another process did first.
 */
async function generateKeyFile(path: string): Promise<boolean> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = join(dir, `.${basename(path)}.${randomBytes(8).toString('hex')}.tmp`);
  const key = randomBytes(MASTER_KEY_BYTES);
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.chmod(0o600); // independent of the umask
    await fh.writeFile(key);
    await fh.sync();
  } finally {
    key.fill(0);
    await fh.close();
  }
  try {
    await link(tmp, path);
    await syncDirectory(dir);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw new ConfigError(
      'LINKVAULT_LOCAL_KEY_FILE',
      `cannot create ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'}); create it yourself: head -c 32 /dev/urandom > ${path} && chmod 600 ${path}`,
    );
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

/** Makes the new directory entry durable; best effort (not every filesystem lets a directory be fsynced). */
async function syncDirectory(dir: string): Promise<void> {
  try {
    const dh = await open(dir, 'r');
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
  } catch {
    // Where a directory cannot be synced, the key file's own fsync is all the filesystem offers.
  }
}
