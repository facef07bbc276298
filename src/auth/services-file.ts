import { createPublicKey, createSecretKey, type KeyObject } from 'node:crypto';
import { checkCallerId } from '../links/connect/sessions.js';

/** Roles a service may hold; each gates a group of routes. */
export const SERVICE_ROLES = [
  'sessions',
  'links:read',
  'tokens',
  'links:revoke',
  'admin',
  'proxy',
] as const;
export type ServiceRole = (typeof SERVICE_ROLES)[number];

export const HMAC_ALGS = ['HS256', 'HS384', 'HS512'] as const;
export const ASYMMETRIC_ALGS = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
] as const;
export type JwtAlg = (typeof HMAC_ALGS)[number] | (typeof ASYMMETRIC_ALGS)[number];

export interface ServiceKey {
  readonly kid: string;
  /** The only algorithm accepted for this kid (RFC 8725 §3.1: pin the algorithm to the key). */
  readonly alg: JwtAlg;
  /** Built once at start: verifying with a KeyObject is ~40x cheaper than with a string secret. */
  readonly key: KeyObject;
}

export interface ServiceDefinition {
  readonly id: string;
  readonly roles: ReadonlySet<ServiceRole>;
  readonly keys: ReadonlyMap<string, ServiceKey>;
  /** The tenants it acts within (src/auth/tenant-scope.ts); null when `tenants` is absent: every tenant. */
  readonly tenants: ReadonlySet<string> | null;
}

/** Thrown for an invalid services file; config.ts turns it into one line naming the variable. */
export class ServicesFileError extends Error {}

const MIN_HMAC_SECRET_BYTES = 32;
/** A service scoped to more tenants than this is better left unscoped (each listing queries every tenant). */
export const MAX_SERVICE_TENANTS = 1000;
const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

function fail(where: string, what: string): never {
  throw new ServicesFileError(`${where}: ${what}`);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function checkKeys(
  where: string,
  value: Record<string, unknown>,
  allowed: readonly string[],
): void {
  for (const key of Object.keys(value))
    if (!allowed.includes(key)) fail(where, `unknown field "${key}"`);
}

/**
 * Parses and validates a services file (docs/configuration.md, "Services file"). Secrets named by `secret_env` are read from
 * `env` (the object config.ts was given), so nothing here touches process.env.
 */
export function parseServicesFile(
  json: unknown,
  env: Readonly<Record<string, string | undefined>>,
): ServiceDefinition[] {
  if (!isRecord(json) || !Array.isArray(json.services))
    fail('services file', 'must be an object with a "services" array');
  checkKeys('services file', json, ['services']);
  const seen = new Set<string>();
  const kids = new Set<string>();
  return json.services.map((raw, i): ServiceDefinition => {
    const where = `services[${i}]`;
    if (!isRecord(raw)) fail(where, 'must be an object');
    checkKeys(where, raw, ['id', 'roles', 'keys', 'tenants', 'description']);
    const id = raw.id;
    if (typeof id !== 'string' || !ID_PATTERN.test(id))
      fail(where, '"id" must be 1-128 characters of letters, digits, . _ : -');
    if (seen.has(id)) fail(where, `duplicate service id "${id}"`);
    seen.add(id);
    if (!Array.isArray(raw.roles)) fail(where, '"roles" must be an array');
    const roles = new Set<ServiceRole>();
    for (const role of raw.roles) {
      if (!(SERVICE_ROLES as readonly unknown[]).includes(role))
        fail(where, `unknown role ${JSON.stringify(role)} (known: ${SERVICE_ROLES.join(', ')})`);
      roles.add(role as ServiceRole);
    }
    if (!Array.isArray(raw.keys) || raw.keys.length === 0)
      fail(where, '"keys" must be a non-empty array');
    const keys = new Map<string, ServiceKey>();
    raw.keys.forEach((rawKey, k) => {
      const kw = `${where}.keys[${k}]`;
      if (!isRecord(rawKey)) fail(kw, 'must be an object');
      checkKeys(kw, rawKey, ['kid', 'alg', 'secret_env', 'public_key_pem']);
      const { kid, alg } = rawKey;
      if (typeof kid !== 'string' || !ID_PATTERN.test(kid))
        fail(kw, '"kid" must be 1-128 characters of letters, digits, . _ : -');
      // kids are global so that a JWT's kid names exactly one key of one service.
      if (kids.has(kid)) fail(kw, `duplicate kid "${kid}" (kids must be unique across services)`);
      kids.add(kid);
      if ((HMAC_ALGS as readonly unknown[]).includes(alg)) {
        if (rawKey.public_key_pem !== undefined)
          fail(kw, `"public_key_pem" does not go with ${String(alg)}`);
        const name = rawKey.secret_env;
        if (typeof name !== 'string' || !/^[A-Z_][A-Z0-9_]*$/.test(name))
          fail(kw, '"secret_env" must name an environment variable');
        const secret = env[name];
        if (!secret) fail(kw, `environment variable ${name} is not set`);
        if (Buffer.byteLength(secret) < MIN_HMAC_SECRET_BYTES)
          fail(kw, `${name} must be at least ${MIN_HMAC_SECRET_BYTES} bytes for ${String(alg)}`);
        keys.set(kid, { kid, alg: alg as JwtAlg, key: createSecretKey(Buffer.from(secret)) });
      } else if ((ASYMMETRIC_ALGS as readonly unknown[]).includes(alg)) {
        if (rawKey.secret_env !== undefined)
          fail(kw, `"secret_env" does not go with ${String(alg)}`);
        const pem = rawKey.public_key_pem;
        if (typeof pem !== 'string' || !pem.includes('PUBLIC KEY'))
          fail(kw, '"public_key_pem" must be a PEM public key');
        let key: KeyObject;
        try {
          key = createPublicKey(pem);
        } catch {
          fail(kw, '"public_key_pem" is not a valid public key');
        }
        const type = key.asymmetricKeyType;
        const fits = String(alg).startsWith('ES')
          ? type === 'ec'
          : type === 'rsa' || (String(alg).startsWith('PS') && type === 'rsa-pss');
        if (!fits) fail(kw, `the public key (${type}) does not fit ${String(alg)}`);
        keys.set(kid, { kid, alg: alg as JwtAlg, key });
      } else {
        fail(kw, `"alg" must be one of ${[...HMAC_ALGS, ...ASYMMETRIC_ALGS].join(', ')}`);
      }
    });
    return { id, roles, keys, tenants: parseTenants(where, raw.tenants) };
  });
}

/**
 * `tenants`: absent means every tenant; present, a non-empty list of distinct tenant ids, each
 * valid under the rule sessions apply to tenant ids (a list naming a tenant no session could have
 * would be a scope that silently matches nothing).
 */
function parseTenants(where: string, value: unknown): ReadonlySet<string> | null {
  if (value === undefined) return null;
  if (!Array.isArray(value) || value.length === 0 || value.length > MAX_SERVICE_TENANTS)
    fail(
      where,
      `"tenants" must be a non-empty array of at most ${MAX_SERVICE_TENANTS} tenant ids (omit it for every tenant)`,
    );
  const tenants = new Set<string>();
  value.forEach((tenant, t) => {
    try {
      checkCallerId(tenant, 'tenant');
    } catch {
      fail(
        `${where}.tenants[${t}]`,
        'must be a tenant id: 1-256 printable characters, no surrounding white space',
      );
    }
    if (tenants.has(tenant as string))
      fail(`${where}.tenants[${t}]`, `duplicate tenant ${JSON.stringify(tenant)}`);
    tenants.add(tenant as string);
  });
  return tenants;
}
