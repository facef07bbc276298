import {
  constants,
  createHmac,
  createPrivateKey,
  sign as signWithKey,
  type KeyObject,
} from 'node:crypto';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { UsageError } from './command.js';

/**
 * Signs the service JWT the HTTP commands send (docs/service-auth.md: header `alg`, `kid`,
 * `typ: JWT`; claims `iss` = service id, `aud` = LINKVAULT_AUDIENCE, `iat`, `exp` 60 s later).
 * Written with node:crypto: jsonwebtoken is the HTTP layer's and auth/'s dependency (the import
 * rules keep it there), and compact JWS is a few lines.
 */

const LIFETIME_SECONDS = 60;

export type SigningAlg =
  | 'HS256'
  | 'HS384'
  | 'HS512'
  | 'RS256'
  | 'RS384'
  | 'RS512'
  | 'PS256'
  | 'PS384'
  | 'PS512'
  | 'ES256'
  | 'ES384'
  | 'ES512';
const ALGS: readonly SigningAlg[] = [
  'HS256',
  'HS384',
  'HS512',
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
];

export interface ServiceSigner {
  readonly serviceId: string;
  readonly kid: string;
  readonly alg: SigningAlg;
  readonly audience: string;
  /** A fresh token (60 s); `nowMs` for tests. */
  token(nowMs?: number): string;
}

export interface SignerInput {
  readonly serviceId: string;
  readonly kid: string;
  readonly audience: string;
  /** The key material: an HMAC secret (its bytes, as the services file's `secret_env` holds it) or a PEM private key. */
  readonly keyText: string;
  /** Where the key came from, for messages (`--key-file x`, `$CRM_SECRET`); never the key. */
  readonly keySource: string;
  /** Explicit alg; default HS256 for a secret, ES256/ES384/ES512 or RS256 from a PEM key's type. */
  readonly alg?: string;
}

function hashBits(alg: SigningAlg): 'sha256' | 'sha384' | 'sha512' {
  return `sha${alg.slice(2)}` as 'sha256' | 'sha384' | 'sha512';
}

function defaultAsymmetricAlg(key: KeyObject): SigningAlg {
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1' || curve === 'P-256') return 'ES256';
    if (curve === 'secp384r1' || curve === 'P-384') return 'ES384';
    if (curve === 'secp521r1' || curve === 'P-521') return 'ES512';
  }
  if (key.asymmetricKeyType === 'rsa') return 'RS256';
  if (key.asymmetricKeyType === 'rsa-pss') return 'PS256';
  throw new UsageError(
    `the private key (${String(key.asymmetricKeyType)}) fits no JWS algorithm linkvault accepts`,
  );
}

/** Builds a signer; UsageError (never echoing key material) when the key and alg do not fit. */
export function createServiceSigner(input: SignerInput): ServiceSigner {
  const pem = input.keyText.includes('-----BEGIN');
  let alg: SigningAlg;
  let sign: (data: Buffer) => Buffer;
  if (input.alg !== undefined && !(ALGS as readonly string[]).includes(input.alg))
    throw new UsageError(`--alg must be one of ${ALGS.join(', ')}`);
  if (pem) {
    let key: KeyObject;
    try {
      key = createPrivateKey(input.keyText);
    } catch {
      throw new UsageError(`${input.keySource} is not a PEM private key`);
    }
    alg = (input.alg as SigningAlg | undefined) ?? defaultAsymmetricAlg(key);
    if (alg.startsWith('HS'))
      throw new UsageError(`${alg} needs a shared secret, and ${input.keySource} is a private key`);
    const hash = hashBits(alg);
    if (alg.startsWith('ES')) {
      sign = (data) => signWithKey(hash, data, { key, dsaEncoding: 'ieee-p1363' });
    } else if (alg.startsWith('PS')) {
      sign = (data) =>
        signWithKey(hash, data, {
          key,
          padding: constants.RSA_PKCS1_PSS_PADDING,
          saltLength: constants.RSA_PSS_SALTLEN_DIGEST,
        });
    } else {
      sign = (data) => signWithKey(hash, data, key);
    }
    try {
      sign(Buffer.from('probe'));
    } catch {
      throw new UsageError(`the private key in ${input.keySource} does not fit ${alg}`);
    }
  } else {
    alg = (input.alg as SigningAlg | undefined) ?? 'HS256';
    if (!alg.startsWith('HS'))
      throw new UsageError(`${alg} needs a PEM private key, and ${input.keySource} holds a secret`);
    const secret = Buffer.from(input.keyText);
    if (secret.length < 32)
      throw new UsageError(`${input.keySource} must hold at least 32 bytes for ${alg}`);
    const hash = hashBits(alg);
    sign = (data) => createHmac(hash, secret).update(data).digest();
  }
  const encode = (value: unknown): string =>
    Buffer.from(JSON.stringify(value)).toString('base64url');
  return {
    serviceId: input.serviceId,
    kid: input.kid,
    alg,
    audience: input.audience,
    token(nowMs = Date.now()) {
      const iat = Math.floor(nowMs / 1000);
      const head = encode({ alg, kid: input.kid, typ: 'JWT' });
      const claims = encode({
        iss: input.serviceId,
        aud: input.audience,
        iat,
        exp: iat + LIFETIME_SECONDS,
      });
      const signature = sign(Buffer.from(`${head}.${claims}`)).toString('base64url');
      return `${head}.${claims}.${signature}`;
    },
  };
}

/**
 * The key text from `--key-file PATH` (read here; a trailing newline of a secret file is not part
 * of the secret) or `--key-env NAME` (the variable's value, like the services file's `secret_env`).
 */
export function readSigningKey(
  options: { readonly keyFile?: string | undefined; readonly keyEnv?: string | undefined },
  env: Readonly<Record<string, string | undefined>>,
  cwd: string,
): { keyText: string; keySource: string } {
  if (options.keyFile !== undefined && options.keyEnv !== undefined)
    throw new UsageError('give either --key-file or --key-env, not both');
  if (options.keyFile !== undefined) {
    const path = resolve(cwd, options.keyFile);
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new UsageError(
        `cannot read --key-file ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`,
      );
    }
    return {
      keyText: text.includes('-----BEGIN') ? text : text.replace(/\r?\n$/, ''),
      keySource: `--key-file ${path}`,
    };
  }
  if (options.keyEnv !== undefined) {
    const value = env[options.keyEnv];
    if (value === undefined || value === '')
      throw new UsageError(`--key-env ${options.keyEnv}: the variable is not set`);
    return { keyText: value, keySource: `$${options.keyEnv}` };
  }
  throw new UsageError('--key-file or --key-env is required (the key of --kid)');
}
