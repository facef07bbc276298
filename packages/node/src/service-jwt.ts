import { createHmac, createPrivateKey, sign, type KeyObject } from 'node:crypto';

/**
 * Service JWTs (linkvault docs/service-auth.md): header `alg` + `kid`, claims `iss` (the service
 * id), `aud`, `iat`, `exp`, with `exp - iat` at most 300 s. Signed with node:crypto, no JWT
 * library: HS256 (a shared secret), ES256 (P-256) or RS256 (a private key).
 */

export type ServiceJwtAlg = 'HS256' | 'ES256' | 'RS256';

/** linkvault refuses longer-lived service JWTs. */
export const MAX_SERVICE_JWT_LIFETIME_SECONDS = 300;

export interface ServiceCredentials {
  /** The service id (the `iss` claim). */
  readonly serviceId: string;
  /** The key id registered for this key in linkvault's services file. */
  readonly kid: string;
  /** HS256: the shared secret (its UTF-8 bytes, as linkvault reads `secret_env`). ES256/RS256: a PEM private key or KeyObject. */
  readonly key: string | Buffer | KeyObject;
  /** Inferred when absent: HS256 for a secret, ES256 for an EC key, RS256 for an RSA key. */
  readonly alg?: ServiceJwtAlg;
  /** The `aud` linkvault expects (LINKVAULT_AUDIENCE; default `linkvault`). */
  readonly audience?: string;
  /** Lifetime of each minted JWT, at most 300 s (default 120). */
  readonly lifetimeSeconds?: number;
}

interface SigningKey {
  readonly alg: ServiceJwtAlg;
  readonly key: KeyObject | Buffer;
}

function isPem(key: string | Buffer): boolean {
  return key.toString().trimStart().startsWith('-----BEGIN');
}

/** The signing key and its alg, checked against each other once, at construction. */
export function signingKeyOf(credentials: Pick<ServiceCredentials, 'key' | 'alg'>): SigningKey {
  const { key } = credentials;
  const asymmetric =
    typeof key === 'object' && !Buffer.isBuffer(key)
      ? key
      : isPem(key)
        ? createPrivateKey(key)
        : null;
  if (asymmetric === null) {
    const alg = credentials.alg ?? 'HS256';
    if (alg !== 'HS256') throw new TypeError(`linkvault: ${alg} needs a private key, not a secret`);
    const secret = Buffer.from(key as string | Buffer);
    if (secret.length < 32)
      throw new TypeError('linkvault: an HS256 secret must be at least 32 bytes');
    return { alg, key: secret };
  }
  if (asymmetric.type !== 'private')
    throw new TypeError('linkvault: the key must be a private key');
  const keyType = asymmetric.asymmetricKeyType;
  const inferred: ServiceJwtAlg | null =
    keyType === 'ec' ? 'ES256' : keyType === 'rsa' ? 'RS256' : null;
  const alg = credentials.alg ?? inferred;
  if (alg === null || alg !== inferred)
    throw new TypeError(
      `linkvault: a ${keyType ?? 'unknown'} key cannot sign ${credentials.alg ?? 'a service JWT'}`,
    );
  if (alg === 'ES256' && asymmetric.asymmetricKeyDetails?.namedCurve !== 'prime256v1')
    throw new TypeError('linkvault: ES256 needs a P-256 key');
  return { alg, key: asymmetric };
}

function base64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

/** Signs one service JWT issued at `iatSeconds`. */
export function signServiceJwt(
  credentials: ServiceCredentials,
  signingKey: SigningKey,
  iatSeconds: number,
): string {
  const lifetime = credentials.lifetimeSeconds ?? 120;
  const header = { alg: signingKey.alg, typ: 'JWT', kid: credentials.kid };
  const claims = {
    iss: credentials.serviceId,
    aud: credentials.audience ?? 'linkvault',
    iat: iatSeconds,
    exp: iatSeconds + lifetime,
  };
  const input = `${base64url(header)}.${base64url(claims)}`;
  const signature =
    signingKey.alg === 'HS256'
      ? createHmac('sha256', signingKey.key).update(input).digest()
      : sign('sha256', Buffer.from(input), {
          key: signingKey.key as KeyObject,
          // JWS (RFC 7518 §3.4): ECDSA signatures are r || s, not DER.
          ...(signingKey.alg === 'ES256' ? { dsaEncoding: 'ieee-p1363' as const } : {}),
        });
  return `${input}.${signature.toString('base64url')}`;
}

/**
 * Mints service JWTs and reuses each until it is within `reuseMarginSeconds` (a quarter of its
 * lifetime, at least 10 s) of expiring, so a busy client signs a few times per lifetime, not per call.
 */
export class ServiceTokenMinter {
  readonly #credentials: ServiceCredentials;
  readonly #signingKey: SigningKey;
  readonly #now: () => number;
  #current: { token: string; expSeconds: number } | null = null;

  constructor(credentials: ServiceCredentials, now: () => number = Date.now) {
    const lifetime = credentials.lifetimeSeconds ?? 120;
    if (!Number.isInteger(lifetime) || lifetime < 20 || lifetime > MAX_SERVICE_JWT_LIFETIME_SECONDS)
      throw new RangeError('linkvault: lifetimeSeconds must be an integer from 20 to 300');
    this.#credentials = credentials;
    this.#signingKey = signingKeyOf(credentials);
    this.#now = now;
  }

  get alg(): ServiceJwtAlg {
    return this.#signingKey.alg;
  }

  /** A service JWT valid for at least the reuse margin. */
  token(): string {
    const nowSeconds = Math.floor(this.#now() / 1000);
    const lifetime = this.#credentials.lifetimeSeconds ?? 120;
    const margin = Math.max(10, Math.floor(lifetime / 4));
    if (this.#current && this.#current.expSeconds - nowSeconds > margin) return this.#current.token;
    const token = signServiceJwt(this.#credentials, this.#signingKey, nowSeconds);
    this.#current = { token, expSeconds: nowSeconds + lifetime };
    return token;
  }
}
