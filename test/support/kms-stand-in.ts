import { createCipheriv, createDecipheriv, randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A KMS stand-in for tests: a real HTTP server on loopback speaking the AWS JSON 1.1 protocol
 * (`X-Amz-Target: TrentService.<Operation>`, `application/x-amz-json-1.1`, errors as
 * `{"__type", "message"}` with KMS's HTTP statuses), so the real @aws-sdk/client-kms talks to it
 * unchanged. It keeps its own key material per key, resolves key ids, ARNs, aliases and alias
 * ARNs, and makes ciphertext blobs that embed the key id (Decrypt needs no KeyId, as in KMS).
 * The EncryptionContext is the AES-GCM AAD of the blob, so Decrypt/ReEncrypt with another
 * context fail with InvalidCiphertextException, as KMS does.
 *
 * Faults are injected per operation (or '*'): throttling, 5xx, a non-JSON HTML body, access
 * denied, and a timeout that never answers until the stand-in closes.
 */

export type KmsOperation = 'GenerateDataKey' | 'Decrypt' | 'Encrypt' | 'ReEncrypt' | 'DescribeKey';
export type KmsFault =
  'throttling' | 'internal' | 'dependency_timeout' | 'non_json' | 'access_denied' | 'timeout';
export type KmsKeyState = 'Enabled' | 'Disabled' | 'PendingDeletion';

export interface KmsStandIn {
  /** http://127.0.0.1:<port> */
  readonly endpoint: string;
  readonly region: string;
  readonly accountId: string;
  /** Creates a symmetric key (optionally with `alias/<name>`) and returns its ARN. */
  createKey(alias?: string): string;
  /** Changes a key's state: Disabled → DisabledException, PendingDeletion → KMSInvalidStateException. */
  setKeyState(keyId: string, state: KmsKeyState): void;
  /** Injects `fault` into every later call of `op` ('*' = all); `times` limits it to the next N calls. null clears. */
  setFault(op: KmsOperation | '*', fault: KmsFault | null, times?: number): void;
  /** Requests received for `op` (all operations when omitted), faulted ones included. */
  calls(op?: KmsOperation): number;
  /** Stops the server; requests held by a timeout fault are dropped. */
  close(): Promise<void>;
}

interface StandInKey {
  readonly id: string;
  readonly arn: string;
  readonly material: Buffer;
  readonly createdAtSeconds: number;
  state: KmsKeyState;
}

class KmsFailure extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
  ) {
    super(message);
  }
}

const OPERATIONS: readonly KmsOperation[] = [
  'GenerateDataKey',
  'Decrypt',
  'Encrypt',
  'ReEncrypt',
  'DescribeKey',
];
const BLOB_VERSION = 0x4c; // 'L'
const KEY_ID_LENGTH = 36; // a UUID
const IV_BYTES = 12;
const TAG_BYTES = 16;

const FAULT_ANSWERS: Record<
  Exclude<KmsFault, 'timeout' | 'non_json'>,
  { status: number; type: string; message: string }
> = {
  throttling: { status: 400, type: 'ThrottlingException', message: 'Rate exceeded' },
  internal: { status: 500, type: 'KMSInternalException', message: 'An internal error occurred' },
  dependency_timeout: {
    status: 503,
    type: 'DependencyTimeoutException',
    message: 'The system timed out while trying to fulfill the request',
  },
  access_denied: {
    status: 400,
    type: 'AccessDeniedException',
    message: 'User is not authorized to perform this operation',
  },
};

export async function startKmsStandIn(
  options: { region?: string; accountId?: string } = {},
): Promise<KmsStandIn> {
  const region = options.region ?? 'us-east-1';
  const accountId = options.accountId ?? '111122223333';
  const keys = new Map<string, StandInKey>();
  const aliases = new Map<string, string>();
  const callCounts = new Map<KmsOperation, number>();
  const faults = new Map<KmsOperation | '*', { fault: KmsFault; remaining: number }>();
  const held = new Set<ServerResponse>();

  function resolveKey(keyId: unknown): StandInKey {
    if (typeof keyId !== 'string' || keyId === '')
      throw new KmsFailure(400, 'ValidationException', 'KeyId is required');
    let id = keyId;
    const arn = /^arn:aws:kms:([^:]+):(\d{12}):(key\/.+|alias\/.+)$/.exec(keyId);
    if (arn) {
      if (arn[1] !== region || arn[2] !== accountId)
        throw new KmsFailure(400, 'NotFoundException', `Key '${keyId}' does not exist`);
      id = arn[3]!.startsWith('key/') ? arn[3]!.slice(4) : arn[3]!;
    }
    if (id.startsWith('alias/')) {
      const target = aliases.get(id);
      if (!target) throw new KmsFailure(400, 'NotFoundException', `Alias ${id} is not found.`);
      id = target;
    }
    const key = keys.get(id);
    if (!key) throw new KmsFailure(400, 'NotFoundException', `Key '${keyId}' does not exist`);
    return key;
  }

  function requireUsable(key: StandInKey): void {
    if (key.state === 'Disabled')
      throw new KmsFailure(400, 'DisabledException', `${key.arn} is disabled.`);
    if (key.state === 'PendingDeletion')
      throw new KmsFailure(400, 'KMSInvalidStateException', `${key.arn} is pending deletion.`);
  }

  function contextAad(context: unknown, member: string): Buffer {
    if (context === undefined || context === null) return Buffer.from('{}');
    if (typeof context !== 'object' || Array.isArray(context))
      throw new KmsFailure(400, 'ValidationException', `${member} must be a map`);
    const entries = Object.entries(context as Record<string, unknown>);
    for (const [, v] of entries)
      if (typeof v !== 'string')
        throw new KmsFailure(400, 'ValidationException', `${member} values must be strings`);
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return Buffer.from(JSON.stringify(entries));
  }

  function blob(member: string, value: unknown, maxBytes: number): Buffer {
    if (typeof value !== 'string' || value === '')
      throw new KmsFailure(400, 'ValidationException', `${member} is required`);
    const bytes = Buffer.from(value, 'base64');
    if (bytes.length === 0 || bytes.length > maxBytes)
      throw new KmsFailure(400, 'ValidationException', `${member} has an invalid length`);
    return bytes;
  }

  function encrypt(key: StandInKey, plaintext: Buffer, aad: Buffer): Buffer {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', key.material, iv);
    cipher.setAAD(aad);
    const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    return Buffer.concat([
      Buffer.from([BLOB_VERSION]),
      Buffer.from(key.id, 'ascii'),
      iv,
      ct,
      cipher.getAuthTag(),
    ]);
  }

  /** Opens a blob; the key comes from the blob itself, `expectedKeyId` (when given) must name the same key. */
  function decrypt(
    ciphertext: Buffer,
    aad: Buffer,
    expectedKeyId: unknown,
  ): { key: StandInKey; plaintext: Buffer } {
    const header = 1 + KEY_ID_LENGTH;
    if (ciphertext.length < header + IV_BYTES + TAG_BYTES || ciphertext[0] !== BLOB_VERSION) {
      throw new KmsFailure(400, 'InvalidCiphertextException', '');
    }
    const key = keys.get(ciphertext.subarray(1, header).toString('ascii'));
    if (!key) throw new KmsFailure(400, 'InvalidCiphertextException', '');
    if (expectedKeyId !== undefined && expectedKeyId !== null) {
      const expected = resolveKey(expectedKeyId);
      if (expected.id !== key.id)
        throw new KmsFailure(
          400,
          'IncorrectKeyException',
          'The key ID in the request does not identify a KMS key that can perform this operation.',
        );
    }
    requireUsable(key);
    const iv = ciphertext.subarray(header, header + IV_BYTES);
    const tag = ciphertext.subarray(ciphertext.length - TAG_BYTES);
    const decipher = createDecipheriv('aes-256-gcm', key.material, iv);
    decipher.setAAD(aad);
    decipher.setAuthTag(tag);
    try {
      return {
        key,
        plaintext: Buffer.concat([
          decipher.update(ciphertext.subarray(header + IV_BYTES, ciphertext.length - TAG_BYTES)),
          decipher.final(),
        ]),
      };
    } catch {
      // KMS answers a wrong encryption context exactly like a corrupted blob.
      throw new KmsFailure(400, 'InvalidCiphertextException', '');
    }
  }

  const handlers: Record<KmsOperation, (body: Record<string, unknown>) => Record<string, unknown>> =
    {
      GenerateDataKey(body) {
        const key = resolveKey(body.KeyId);
        let bytes: number;
        if (body.KeySpec !== undefined) {
          if (body.KeySpec === 'AES_256') bytes = 32;
          else if (body.KeySpec === 'AES_128') bytes = 16;
          else
            throw new KmsFailure(400, 'ValidationException', 'KeySpec must be AES_256 or AES_128');
        } else if (
          typeof body.NumberOfBytes === 'number' &&
          body.NumberOfBytes >= 1 &&
          body.NumberOfBytes <= 1024
        ) {
          bytes = body.NumberOfBytes;
        } else {
          throw new KmsFailure(
            400,
            'ValidationException',
            'Please specify either number of bytes or key spec.',
          );
        }
        requireUsable(key);
        const plaintext = randomBytes(bytes);
        const ciphertext = encrypt(
          key,
          plaintext,
          contextAad(body.EncryptionContext, 'EncryptionContext'),
        );
        return {
          CiphertextBlob: ciphertext.toString('base64'),
          Plaintext: plaintext.toString('base64'),
          KeyId: key.arn,
        };
      },
      Encrypt(body) {
        const key = resolveKey(body.KeyId);
        const plaintext = blob('Plaintext', body.Plaintext, 4096);
        requireUsable(key);
        const ciphertext = encrypt(
          key,
          plaintext,
          contextAad(body.EncryptionContext, 'EncryptionContext'),
        );
        return {
          CiphertextBlob: ciphertext.toString('base64'),
          KeyId: key.arn,
          EncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
        };
      },
      Decrypt(body) {
        const ciphertext = blob('CiphertextBlob', body.CiphertextBlob, 6144);
        const { key, plaintext } = decrypt(
          ciphertext,
          contextAad(body.EncryptionContext, 'EncryptionContext'),
          body.KeyId,
        );
        return {
          KeyId: key.arn,
          Plaintext: plaintext.toString('base64'),
          EncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
        };
      },
      ReEncrypt(body) {
        const ciphertext = blob('CiphertextBlob', body.CiphertextBlob, 6144);
        const destination = resolveKey(body.DestinationKeyId);
        const source = decrypt(
          ciphertext,
          contextAad(body.SourceEncryptionContext, 'SourceEncryptionContext'),
          body.SourceKeyId,
        );
        requireUsable(destination);
        const out = encrypt(
          destination,
          source.plaintext,
          contextAad(body.DestinationEncryptionContext, 'DestinationEncryptionContext'),
        );
        source.plaintext.fill(0);
        return {
          CiphertextBlob: out.toString('base64'),
          SourceKeyId: source.key.arn,
          KeyId: destination.arn,
          SourceEncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
          DestinationEncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
        };
      },
      DescribeKey(body) {
        const key = resolveKey(body.KeyId);
        return {
          KeyMetadata: {
            AWSAccountId: accountId,
            KeyId: key.id,
            Arn: key.arn,
            CreationDate: key.createdAtSeconds,
            Enabled: key.state === 'Enabled',
            Description: '',
            KeyUsage: 'ENCRYPT_DECRYPT',
            KeyState: key.state,
            Origin: 'AWS_KMS',
            KeyManager: 'CUSTOMER',
            KeySpec: 'SYMMETRIC_DEFAULT',
            CustomerMasterKeySpec: 'SYMMETRIC_DEFAULT',
            EncryptionAlgorithms: ['SYMMETRIC_DEFAULT'],
            MultiRegion: false,
          },
        };
      },
    };

  function send(res: ServerResponse, status: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(status, {
      'content-type': 'application/x-amz-json-1.1',
      'content-length': Buffer.byteLength(text),
      'x-amzn-requestid': randomUUID(),
    });
    res.end(text);
  }

  function takeFault(op: KmsOperation): KmsFault | null {
    for (const name of [op, '*'] as const) {
      const entry = faults.get(name);
      if (!entry) continue;
      if (entry.remaining <= 1) faults.delete(name);
      else entry.remaining--;
      return entry.fault;
    }
    return null;
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const target = String(req.headers['x-amz-target'] ?? '');
    const op = target.startsWith('TrentService.')
      ? (target.slice('TrentService.'.length) as KmsOperation)
      : null;
    if (req.method !== 'POST' || req.url !== '/' || !op || !OPERATIONS.includes(op)) {
      send(res, 400, { __type: 'UnknownOperationException', message: '' });
      return;
    }
    callCounts.set(op, (callCounts.get(op) ?? 0) + 1);

    const fault = takeFault(op);
    if (fault === 'timeout') {
      held.add(res); // never answered; dropped by close()
      res.on('close', () => held.delete(res));
      return;
    }
    if (fault === 'non_json') {
      const html =
        '<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>';
      res.writeHead(500, {
        'content-type': 'text/html',
        'content-length': Buffer.byteLength(html),
      });
      res.end(html);
      return;
    }
    if (fault) {
      const answer = FAULT_ANSWERS[fault];
      send(res, answer.status, { __type: answer.type, message: answer.message });
      return;
    }

    // The SDK always signs; a request without SigV4 for kms is a client bug worth catching here.
    const authorization = String(req.headers.authorization ?? '');
    if (
      !authorization.startsWith('AWS4-HMAC-SHA256 ') ||
      !authorization.includes(`/${region}/kms/aws4_request`)
    ) {
      send(res, 400, {
        __type: 'UnrecognizedClientException',
        message: 'The security token included in the request is invalid.',
      });
      return;
    }
    if (!String(req.headers['content-type'] ?? '').startsWith('application/x-amz-json-1.1')) {
      send(res, 400, { __type: 'SerializationException', message: 'Unexpected content type' });
      return;
    }
    let body: Record<string, unknown>;
    try {
      const parsed: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
        throw new Error('not an object');
      body = parsed as Record<string, unknown>;
    } catch {
      send(res, 400, { __type: 'SerializationException', message: 'Malformed request body' });
      return;
    }
    try {
      send(res, 200, handlers[op](body));
    } catch (err) {
      if (err instanceof KmsFailure)
        send(res, err.status, { __type: err.type, message: err.message });
      else send(res, 500, { __type: 'KMSInternalException', message: 'stand-in failure' });
    }
  }

  const server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent)
        send(res, 500, { __type: 'KMSInternalException', message: 'stand-in failure' });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    endpoint: `http://127.0.0.1:${port}`,
    region,
    accountId,
    createKey(alias) {
      const id = randomUUID();
      const arn = `arn:aws:kms:${region}:${accountId}:key/${id}`;
      keys.set(id, {
        id,
        arn,
        material: randomBytes(32),
        createdAtSeconds: Math.floor(Date.now() / 1000),
        state: 'Enabled',
      });
      if (alias !== undefined)
        aliases.set(alias.startsWith('alias/') ? alias : `alias/${alias}`, id);
      return arn;
    },
    setKeyState(keyId, state) {
      resolveKey(keyId).state = state;
    },
    setFault(op, fault, times) {
      if (fault === null) faults.delete(op);
      else faults.set(op, { fault, remaining: times ?? Number.POSITIVE_INFINITY });
    },
    calls(op) {
      if (op) return callCounts.get(op) ?? 0;
      let sum = 0;
      for (const n of callCounts.values()) sum += n;
      return sum;
    },
    async close() {
      for (const res of held) res.destroy();
      held.clear();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
