import {
  createHmac,
  createPrivateKey,
  generateKeyPairSync,
  randomBytes,
  sign as cryptoSign,
  type KeyObject,
} from 'node:crypto';
import {
  parseServicesFile,
  type ServiceDefinition,
  type ServiceRole,
} from '../../src/auth/services-file.js';

/**
 * Test-side service JWTs. The signer is written with node:crypto on purpose (not jsonwebtoken):
 * attack tests need tokens no well-behaved library would produce (alg none, HS256 keyed with a
 * public key, missing claims, hostile headers).
 */

export interface SignServiceJwtOptions {
  readonly kid: string;
  /** JOSE alg written in the header and used to sign: HS256/384/512, ES256/384/512, RS*, PS*, or 'none'. */
  readonly alg: string;
  /** HMAC secret (Buffer / string / secret KeyObject) or a private KeyObject / PEM. Ignored for 'none'. */
  readonly key?: KeyObject | Buffer | string;
  readonly iss: string;
  readonly aud: string | readonly string[];
  /** exp - iat; default 60. */
  readonly lifetimeSeconds?: number;
  /** Seconds since epoch; default now. */
  readonly iat?: number;
  /** Merged over {alg, kid, typ}; a member set to undefined is removed. */
  readonly extraHeader?: Readonly<Record<string, unknown>>;
  /** Merged over {iss, aud, iat, exp}; a member set to undefined is removed. */
  readonly extraClaims?: Readonly<Record<string, unknown>>;
}

function b64(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

function hmacKey(key: SignServiceJwtOptions['key']): Buffer | KeyObject {
  if (key === undefined) throw new Error('signServiceJwt: key required');
  return typeof key === 'string' ? Buffer.from(key) : key;
}

/** Signs a JWS compact token exactly as told (it does not refuse insecure combinations). */
export function signServiceJwt(options: SignServiceJwtOptions): string {
  const iat = options.iat ?? Math.floor(Date.now() / 1000);
  const header = { alg: options.alg, kid: options.kid, typ: 'JWT', ...options.extraHeader };
  const claims = {
    iss: options.iss,
    aud: options.aud,
    iat,
    exp: iat + (options.lifetimeSeconds ?? 60),
    ...options.extraClaims,
  };
  const input = `${b64(header)}.${b64(claims)}`;
  const alg = options.alg;
  let signature: Buffer;
  if (alg === 'none') {
    signature = Buffer.alloc(0);
  } else if (alg.startsWith('HS')) {
    signature = createHmac(`sha${alg.slice(2)}`, hmacKey(options.key))
      .update(input)
      .digest();
  } else {
    const key =
      typeof options.key === 'string' || Buffer.isBuffer(options.key)
        ? createPrivateKey(options.key)
        : options.key;
    if (!key) throw new Error('signServiceJwt: key required');
    const hash = `sha${alg.slice(2)}`;
    if (alg.startsWith('ES'))
      signature = cryptoSign(hash, Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
    else if (alg.startsWith('PS'))
      signature = cryptoSign(hash, Buffer.from(input), {
        key,
        padding: 6 /* RSA_PKCS1_PSS_PADDING */,
        saltLength: Number(alg.slice(2)) / 8,
      });
    else signature = cryptoSign(hash, Buffer.from(input), key);
  }
  return `${input}.${signature.toString('base64url')}`;
}

export interface TestServiceKey {
  readonly kid: string;
  readonly alg: 'HS256' | 'ES256';
  /** What signs: the HMAC secret, or the EC private key. */
  readonly signingKey: KeyObject | Buffer;
  /** The service this key belongs to (the required `iss`). */
  readonly iss: string;
}

export interface TestServices {
  readonly audience: string;
  readonly services: ServiceDefinition[];
  /**
   * The services file JSON and the env it needs (HMAC secrets by variable), for child processes:
   * write `servicesFile` to disk and pass `env` along with LINKVAULT_SERVICES_FILE.
   */
  readonly servicesFile: { services: unknown[] };
  readonly env: Record<string, string>;
  /** Signing material by kid. */
  readonly keys: Readonly<Record<string, TestServiceKey>>;
  /** The ES256 public key PEM of kid `crm-es` (the "HS256 keyed with the public key" attack uses it). */
  readonly esPublicKeyPem: string;
  /** A valid bearer JWT for `kid` (60 s lifetime); `overrides` go to signServiceJwt. */
  token(kid: string, overrides?: Partial<SignServiceJwtOptions>): string;
  /** `Bearer <token(kid)>`. */
  bearer(kid: string, overrides?: Partial<SignServiceJwtOptions>): string;
}

/**
 * Services for tests, with fresh keys each call:
 *  - `crm-sync`  every role; kids `crm-hs` (HS256) and `crm-es` (ES256)
 *  - `billing`   roles `tokens`, `links:read`; kid `billing-hs` (HS256)
 *  - `auditor`   role `links:read` only; kid `auditor-hs` (HS256)
 */
export function makeTestServices(audience = 'linkvault'): TestServices {
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const esPublicKeyPem = ec.publicKey.export({ format: 'pem', type: 'spki' }).toString();
  const env: Record<string, string> = {
    LV_TEST_CRM_SECRET: randomBytes(32).toString('base64url'),
    LV_TEST_BILLING_SECRET: randomBytes(32).toString('base64url'),
    LV_TEST_AUDITOR_SECRET: randomBytes(32).toString('base64url'),
  };
  const allRoles: ServiceRole[] = ['sessions', 'links:read', 'tokens', 'links:revoke', 'admin'];
  const servicesFile = {
    services: [
      {
        id: 'crm-sync',
        roles: allRoles,
        keys: [
          { kid: 'crm-hs', alg: 'HS256', secret_env: 'LV_TEST_CRM_SECRET' },
          { kid: 'crm-es', alg: 'ES256', public_key_pem: esPublicKeyPem },
        ],
      },
      {
        id: 'billing',
        roles: ['tokens', 'links:read'],
        keys: [{ kid: 'billing-hs', alg: 'HS256', secret_env: 'LV_TEST_BILLING_SECRET' }],
      },
      {
        id: 'auditor',
        roles: ['links:read'],
        keys: [{ kid: 'auditor-hs', alg: 'HS256', secret_env: 'LV_TEST_AUDITOR_SECRET' }],
      },
    ],
  };
  const services = parseServicesFile(servicesFile, env);
  const keys: Record<string, TestServiceKey> = {
    'crm-hs': {
      kid: 'crm-hs',
      alg: 'HS256',
      signingKey: Buffer.from(env.LV_TEST_CRM_SECRET!),
      iss: 'crm-sync',
    },
    'crm-es': { kid: 'crm-es', alg: 'ES256', signingKey: ec.privateKey, iss: 'crm-sync' },
    'billing-hs': {
      kid: 'billing-hs',
      alg: 'HS256',
      signingKey: Buffer.from(env.LV_TEST_BILLING_SECRET!),
      iss: 'billing',
    },
    'auditor-hs': {
      kid: 'auditor-hs',
      alg: 'HS256',
      signingKey: Buffer.from(env.LV_TEST_AUDITOR_SECRET!),
      iss: 'auditor',
    },
  };
  const token = (kid: string, overrides: Partial<SignServiceJwtOptions> = {}): string => {
    const k = keys[kid];
    if (!k) throw new Error(`makeTestServices: unknown kid ${kid}`);
    return signServiceJwt({
      kid,
      alg: k.alg,
      key: k.signingKey,
      iss: k.iss,
      aud: audience,
      ...overrides,
    });
  };
  return {
    audience,
    services,
    servicesFile,
    env,
    keys,
    esPublicKeyPem,
    token,
    bearer: (kid, overrides) => `Bearer ${token(kid, overrides)}`,
  };
}
