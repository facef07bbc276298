import { randomBytes } from 'node:crypto';
import { parseServicesFile } from '../../src/auth/services-file.js';
import {
  makeTestServices,
  signServiceJwt,
  type SignServiceJwtOptions,
  type TestServiceKey,
  type TestServices,
} from '../support/service-jwt.js';

/**
 * The test services of makeTestServices (crm-sync, billing, auditor: unscoped) plus tenant-scoped
 * ones, through a real services file:
 *  - `acme-sessions` role `sessions` only, tenants ["acme"] (the red team's impersonation case)
 *  - `acme-app`      sessions, links:read, tokens, links:revoke; tenants ["acme", "acme-eu"]
 *  - `acme-admin`    admin, links:read; tenants ["acme"]
 * Each has one HS256 kid named after it (`acme-sessions-hs`, ...).
 */
export function makeScopedServices(): TestServices {
  const base = makeTestServices();
  const scoped = [
    { id: 'acme-sessions', roles: ['sessions'], tenants: ['acme'] },
    {
      id: 'acme-app',
      roles: ['sessions', 'links:read', 'tokens', 'links:revoke'],
      tenants: ['acme', 'acme-eu'],
    },
    { id: 'acme-admin', roles: ['admin', 'links:read'], tenants: ['acme'] },
  ];
  const env: Record<string, string> = { ...base.env };
  const keys: Record<string, TestServiceKey> = { ...base.keys };
  const entries = scoped.map((s) => {
    const variable = `LV_TEST_${s.id.toUpperCase().replaceAll('-', '_')}_SECRET`;
    env[variable] = randomBytes(32).toString('base64url');
    const kid = `${s.id}-hs`;
    keys[kid] = { kid, alg: 'HS256', signingKey: Buffer.from(env[variable]!), iss: s.id };
    return { ...s, keys: [{ kid, alg: 'HS256', secret_env: variable }] };
  });
  const servicesFile = { services: [...base.servicesFile.services, ...entries] };
  const token = (kid: string, overrides: Partial<SignServiceJwtOptions> = {}): string => {
    const k = keys[kid];
    if (!k) throw new Error(`makeScopedServices: unknown kid ${kid}`);
    return signServiceJwt({
      kid,
      alg: k.alg,
      key: k.signingKey,
      iss: k.iss,
      aud: base.audience,
      ...overrides,
    });
  };
  return {
    audience: base.audience,
    services: parseServicesFile(servicesFile, env),
    servicesFile,
    env,
    keys,
    esPublicKeyPem: base.esPublicKeyPem,
    token,
    bearer: (kid, overrides) => `Bearer ${token(kid, overrides)}`,
  };
}
