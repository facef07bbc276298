import {
  DecryptCommand,
  DescribeKeyCommand,
  GenerateDataKeyCommand,
  KMSClient,
  ReEncryptCommand,
  type KMSClientConfig,
} from '@aws-sdk/client-kms';
import { isLinkvaultError, LinkvaultError } from '../errors.js';
import type { Metrics } from '../metrics.js';
import { identityContext } from './canonical-identity.js';
import type { GeneratedDataKey, KeyProvider, SealIdentity } from './key-provider.js';
import { keyServiceOutcome, type KeyServiceOutcome } from './key-service-outcome.js';

/**
 * KeyProvider over AWS KMS: GenerateDataKey (AES_256) for new data keys, Decrypt to unwrap,
 * ReEncrypt to move a data key under the current KMS key without the plaintext ever leaving
 * KMS. The record identity is the EncryptionContext of every call, so KMS itself refuses a
 * wrapped key presented under another identity (and CloudTrail logs which record was opened).
 *
 * kid is the key ARN KMS returns. When the configured key id is an alias, the ARN is learnt
 * from the first DescribeKey (ping) or GenerateDataKey; re-pointing the alias at a new key is a
 * rotation: new data keys get the new ARN and rewrapAll moves old records over.
 *
 * Every call is bounded by one budget (`callBudgetMs`, default 2 s) that covers all of its SDK
 * attempts, so a hung KMS costs a request at most the budget, not attempts × timeout. When KMS is
 * known down (a call got no answer within the budget, or answered 5xx after its retries), a
 * breaker fails every call at once with key_service_unavailable and a Retry-After for
 * `breakerOpenMs`; then one call goes through as a probe, and its success closes the breaker.
 * Answers that say KMS is up but refuses (throttling, access denied, a disabled key) do not trip
 * it: they are not "down", and their own Retry-After already says how long to wait.
 *
 * ping() (readiness) shares one DescribeKey among concurrent callers and keeps its outcome for
 * `pingCacheMs`, so probes of the unauthenticated /readyz cannot spend the account's KMS quota.
 *
 * Errors are translated by the SDK's error `name` (the `__type` of the JSON 1.1 answer), never by
 * message text.
 */

export interface AwsKmsKeyProviderOptions {
  /** Key id, key ARN, alias name or alias ARN of the key that wraps new data keys. */
  readonly keyId: string;
  /** null: the SDK's own region resolution. */
  readonly region: string | null;
  /** null: the regional KMS endpoint. */
  readonly endpoint: string | null;
  /** SDK attempts per call, first one included, all within callBudgetMs. Default 3. */
  readonly maxAttempts?: number;
  /** Total time one call may take, every attempt and back-off included. Default 2000. */
  readonly callBudgetMs?: number;
  /** Per-attempt request timeout. Default callBudgetMs (a hung first attempt uses the whole budget). */
  readonly requestTimeoutMs?: number;
  /** TCP/TLS connect timeout. Default min(1000, requestTimeoutMs). */
  readonly connectionTimeoutMs?: number;
  /** How long the breaker fails calls at once after KMS was found down. Default 5000; 0 disables the breaker. */
  readonly breakerOpenMs?: number;
  /** How long a ping outcome (ok or failed) answers readiness without a new DescribeKey. Default 5000; 0: every ping calls. */
  readonly pingCacheMs?: number;
  /** Clock for the breaker and the ping cache (tests). Default Date.now. */
  readonly now?: () => number;
  /** Static credentials (tests); the SDK's default provider chain when omitted. */
  readonly credentials?: KMSClientConfig['credentials'];
  readonly metrics: Metrics;
}

type Operation = 'generate' | 'unwrap' | 'rewrap' | 'ping';

/** Answers that mean "this wrapped key is not a valid key for this identity". */
const INVALID_RECORD = new Set(['InvalidCiphertextException', 'IncorrectKeyException']);
/**
 * On Decrypt the key id comes from the record itself, so a key KMS does not know or that cannot
 * decrypt means the record names a key that is not ours. (Not on ReEncrypt or GenerateDataKey,
 * where the same answer may be about our configured key: a configuration problem, fail closed.)
 */
const INVALID_RECORD_KEY_ON_UNWRAP = new Set(['NotFoundException', 'InvalidKeyUsageException']);
/** Answers that will not go away on a quick retry: permissions or key state. */
const SLOW_RECOVERY = new Set([
  'AccessDeniedException',
  'DisabledException',
  'KMSInvalidStateException',
  'NotFoundException',
  'InvalidKeyUsageException',
  'KeyUnavailableException',
  'UnrecognizedClientException',
  'InvalidSignatureException',
  'IncompleteSignature',
  'ExpiredTokenException',
  'CredentialsProviderError',
]);

/** Key ARN (`arn:<partition>:kms:<region>:<account>:key/<id>`), the only kid this provider writes. */
const KEY_ARN = /^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key\/[A-Za-z0-9-]+$/;

export class AwsKmsKeyProvider implements KeyProvider {
  readonly kind = 'aws-kms' as const;
  readonly #client: KMSClient;
  readonly #keyId: string;
  readonly #metrics: Metrics;
  readonly #callBudgetMs: number;
  readonly #breakerOpenMs: number;
  readonly #pingCacheMs: number;
  readonly #now: () => number;
  #resolvedArn: string | null;
  /** 0: closed. Otherwise calls fail at once until this time, then one probe goes through. */
  #breakerOpenUntilMs = 0;
  #probeInFlight = false;
  #ping: { readonly settled: Promise<void>; atMs: number | null } | null = null;

  constructor(options: AwsKmsKeyProviderOptions) {
    const maxAttempts = options.maxAttempts ?? 3;
    const callBudgetMs = options.callBudgetMs ?? 2000;
    const requestTimeoutMs = options.requestTimeoutMs ?? callBudgetMs;
    const connectionTimeoutMs = options.connectionTimeoutMs ?? Math.min(1000, requestTimeoutMs);
    const breakerOpenMs = options.breakerOpenMs ?? 5000;
    const pingCacheMs = options.pingCacheMs ?? 5000;
    if (!Number.isInteger(maxAttempts) || maxAttempts < 1)
      throw new RangeError('maxAttempts must be a whole number >= 1');
    if (!(callBudgetMs > 0) || !(requestTimeoutMs > 0) || !(connectionTimeoutMs > 0))
      throw new RangeError('timeouts must be positive');
    if (!(breakerOpenMs >= 0) || !(pingCacheMs >= 0))
      throw new RangeError('breakerOpenMs and pingCacheMs must be >= 0');
    this.#keyId = options.keyId;
    this.#metrics = options.metrics;
    this.#resolvedArn = KEY_ARN.test(options.keyId) ? options.keyId : null;
    this.#callBudgetMs = callBudgetMs;
    this.#breakerOpenMs = breakerOpenMs;
    this.#pingCacheMs = pingCacheMs;
    this.#now = options.now ?? Date.now;
    this.#client = new KMSClient({
      ...(options.region ? { region: options.region } : {}),
      ...(options.endpoint ? { endpoint: options.endpoint } : {}),
      ...(options.credentials ? { credentials: options.credentials } : {}),
      maxAttempts,
      // The SDK builds its NodeHttpHandler from these options (no direct dependency on
      // @smithy/node-http-handler). requestTimeout alone only logs a warning in this handler
      // version; throwOnRequestTimeout makes it reject, socketTimeout covers a stalled body.
      requestHandler: {
        connectionTimeout: connectionTimeoutMs,
        requestTimeout: requestTimeoutMs,
        socketTimeout: requestTimeoutMs,
        throwOnRequestTimeout: true,
      },
    });
  }

  /** The ARN of the current key once known (after the first ping or GenerateDataKey), else the configured id. */
  currentKeyId(): string {
    return this.#resolvedArn ?? this.#keyId;
  }

  async generateDataKey(context: SealIdentity): Promise<GeneratedDataKey> {
    return this.#call('generate', async (abortSignal) => {
      const out = await this.#client.send(
        new GenerateDataKeyCommand({
          KeyId: this.#keyId,
          KeySpec: 'AES_256',
          EncryptionContext: identityContext(context),
        }),
        { abortSignal },
      );
      const plaintext = takeBytes(out.Plaintext);
      if (
        !plaintext ||
        plaintext.length !== 32 ||
        !out.CiphertextBlob?.length ||
        !out.KeyId ||
        !KEY_ARN.test(out.KeyId)
      ) {
        plaintext?.fill(0);
        throw garbage('GenerateDataKey');
      }
      this.#resolvedArn = out.KeyId;
      return { kid: out.KeyId, plaintext, wrapped: Buffer.from(out.CiphertextBlob) };
    });
  }

  async unwrapDataKey(kid: string, wrapped: Buffer, context: SealIdentity): Promise<Buffer> {
    return this.#call('unwrap', async (abortSignal) => {
      requireKeyArn(kid);
      // KeyId pins the key: KMS refuses (IncorrectKeyException) a blob that names another key.
      const out = await this.#client.send(
        new DecryptCommand({
          CiphertextBlob: wrapped,
          KeyId: kid,
          EncryptionContext: identityContext(context),
        }),
        { abortSignal },
      );
      const plaintext = takeBytes(out.Plaintext);
      if (!plaintext) throw garbage('Decrypt');
      if (plaintext.length !== 32) {
        plaintext.fill(0);
        throw new LinkvaultError('sealed_record_invalid', {
          detail: 'the wrapped data key is not a 256-bit key',
        });
      }
      return plaintext;
    });
  }

  async rewrapDataKey(
    kid: string,
    wrapped: Buffer,
    context: SealIdentity,
  ): Promise<{ kid: string; wrapped: Buffer }> {
    return this.#call('rewrap', async (abortSignal) => {
      requireKeyArn(kid);
      const encryptionContext = identityContext(context);
      const out = await this.#client.send(
        new ReEncryptCommand({
          CiphertextBlob: wrapped,
          SourceKeyId: kid,
          SourceEncryptionContext: encryptionContext,
          DestinationKeyId: this.#keyId,
          DestinationEncryptionContext: encryptionContext,
        }),
        { abortSignal },
      );
      if (!out.CiphertextBlob?.length || !out.KeyId || !KEY_ARN.test(out.KeyId))
        throw garbage('ReEncrypt');
      return { kid: out.KeyId, wrapped: Buffer.from(out.CiphertextBlob) };
    });
  }

  /**
   * DescribeKey on the current key: answers, and the key is enabled. Learns the key ARN.
   * Concurrent pings share one call; its outcome is kept for pingCacheMs.
   */
  ping(): Promise<void> {
    const cached = this.#ping;
    if (cached && (cached.atMs === null || this.#now() - cached.atMs < this.#pingCacheMs))
      return cached.settled;
    const entry: { settled: Promise<void>; atMs: number | null } = {
      settled: this.#describeKey(),
      atMs: null,
    };
    this.#ping = entry;
    const settle = () => {
      if (this.#pingCacheMs === 0 && this.#ping === entry) this.#ping = null;
      else entry.atMs = this.#now();
    };
    entry.settled.then(settle, settle);
    return entry.settled;
  }

  async #describeKey(): Promise<void> {
    return this.#call('ping', async (abortSignal) => {
      const out = await this.#client.send(new DescribeKeyCommand({ KeyId: this.#keyId }), {
        abortSignal,
      });
      const meta = out.KeyMetadata;
      if (!meta?.Arn || !KEY_ARN.test(meta.Arn)) throw garbage('DescribeKey');
      if (meta.Enabled !== true || meta.KeyState !== 'Enabled') {
        throw new LinkvaultError('key_service_unavailable', {
          detail: `the KMS key is not enabled (state ${String(meta.KeyState ?? 'unknown')})`,
          retryAfterSeconds: 30,
        });
      }
      this.#resolvedArn = meta.Arn;
    });
  }

  /** Closes the SDK's sockets. */
  destroy(): void {
    this.#client.destroy();
  }

  async #call<T>(operation: Operation, fn: (abortSignal: AbortSignal) => Promise<T>): Promise<T> {
    const admission = this.#admit();
    if (admission instanceof LinkvaultError) {
      this.#metrics.keyServiceCalls.inc({
        provider: 'aws-kms',
        operation,
        outcome: 'breaker_open',
      });
      throw admission;
    }
    let outcome: KeyServiceOutcome = 'ok';
    try {
      const result = await fn(AbortSignal.timeout(this.#callBudgetMs));
      this.#breakerOpenUntilMs = 0;
      return result;
    } catch (err) {
      const translated = translateKmsError(err, operation);
      outcome = keyServiceOutcome(translated);
      const status = httpStatusOf(err);
      if (this.#breakerOpenMs > 0 && !isLinkvaultError(err) && (status === null || status >= 500))
        this.#breakerOpenUntilMs = this.#now() + this.#breakerOpenMs;
      // KMS answered (and refused): it is up, whatever it said.
      else if (status !== null && status < 500) this.#breakerOpenUntilMs = 0;
      throw translated;
    } finally {
      if (admission === 'probe') this.#probeInFlight = false;
      this.#metrics.keyServiceCalls.inc({ provider: 'aws-kms', operation, outcome });
    }
  }

  /** 'call' (closed), 'probe' (the one call let through once the open period is over), or the error to fail with at once. */
  #admit(): 'call' | 'probe' | LinkvaultError {
    if (this.#breakerOpenUntilMs === 0) return 'call';
    const remainingMs = this.#breakerOpenUntilMs - this.#now();
    if (remainingMs <= 0 && !this.#probeInFlight) {
      this.#probeInFlight = true;
      return 'probe';
    }
    return new LinkvaultError('key_service_unavailable', {
      detail: 'KMS did not answer recently; not calling it until the breaker closes',
      retryAfterSeconds: Math.max(1, Math.ceil(remainingMs / 1000)),
    });
  }
}

/**
 * The HTTP status of KMS's answer, or null when there was none (timeout, abort, connection refused
 * or reset). KMS is down when there was no answer or a 5xx after the SDK's retries; up, though
 * refusing, on a 4xx. Read from the SDK's response metadata, never from message text.
 */
function httpStatusOf(err: unknown): number | null {
  if (typeof err !== 'object' || err === null) return null;
  const status = (err as { $metadata?: { httpStatusCode?: unknown } }).$metadata?.httpStatusCode;
  return typeof status === 'number' ? status : null;
}

/** Copies SDK-owned key bytes into a Buffer and zeroes the original. */
function takeBytes(bytes: Uint8Array | undefined): Buffer | null {
  if (!bytes) return null;
  const copy = Buffer.from(bytes);
  bytes.fill(0);
  return copy;
}

function requireKeyArn(kid: string): void {
  if (!KEY_ARN.test(kid))
    throw new LinkvaultError('sealed_record_invalid', {
      detail: 'the record was not wrapped by a KMS key',
    });
}

function garbage(operation: string): LinkvaultError {
  return new LinkvaultError('key_service_unavailable', {
    detail: `KMS ${operation} returned an unusable answer`,
    retryAfterSeconds: 1,
  });
}

/** The KMS error type: the SDK's `name`, else the raw `__type` (which may carry a `namespace#` prefix). */
function errorType(err: unknown): string {
  if (typeof err !== 'object' || err === null) return '';
  const e = err as { name?: unknown; __type?: unknown };
  const raw =
    typeof e.__type === 'string' && e.__type !== ''
      ? e.__type
      : typeof e.name === 'string'
        ? e.name
        : '';
  return raw.replace(/^.*#/, '').replace(/:.*$/, '');
}

/**
 * Maps anything KMS or the SDK throws to the port's two failures. By type only: InvalidCiphertext
 * and IncorrectKey (and, on unwrap, an unknown or unusable key) → sealed_record_invalid; the rest
 * (throttling, KMSInternal, DependencyTimeout, access denied, disabled or pending-deletion keys,
 * timeouts, aborted calls, network errors, a non-JSON body the SDK fails to parse as a plain
 * SyntaxError) → key_service_unavailable. The original error is kept as `cause` for the log.
 */
export function translateKmsError(err: unknown, operation: Operation): LinkvaultError {
  if (isLinkvaultError(err)) return err;
  const type = errorType(err);
  if (
    INVALID_RECORD.has(type) ||
    (operation === 'unwrap' && INVALID_RECORD_KEY_ON_UNWRAP.has(type))
  ) {
    return new LinkvaultError('sealed_record_invalid', {
      detail: 'the wrapped data key does not open under this identity',
      cause: err,
    });
  }
  return new LinkvaultError('key_service_unavailable', {
    detail: type ? `KMS answered ${type}` : 'KMS could not be reached',
    cause: err,
    retryAfterSeconds: SLOW_RECOVERY.has(type) ? 30 : 1,
  });
}
