import { createSecretKey } from 'node:crypto';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import jwt from 'jsonwebtoken';
import type { Config } from '../config.js';
import { SERVICE_ROLES, type ServiceDefinition } from './services-file.js';

/**
 * The development service `dev`: outside production with the sandbox on, a registered service
 * holding every role, so that `linkvault dev-token` gives a curl-able bearer with no services
 * file to write. Its HS256 secret is 32 random bytes in `<data dir>/dev-service.key`, created with
 * mode 0600 on the service's first start and only read afterwards (the CLI never creates it: a key
 * the running service did not load would sign tokens it rejects).
 */

export const DEV_SERVICE_ID = 'dev';
export const DEV_SERVICE_KID = 'dev';
export const DEV_TOKEN_LIFETIME_SECONDS = 300;
const KEY_BYTES = 32;

type DevConfig = Pick<Config, 'production' | 'sandbox' | 'dataDir'>;

export class DevServiceError extends Error {
  override readonly name = 'DevServiceError';
}

/** Whether the dev service exists in this configuration. */
export function devServiceEnabled(config: Pick<Config, 'production' | 'sandbox'>): boolean {
  return !config.production && config.sandbox;
}

function devServiceKeyFile(config: Pick<Config, 'dataDir'>): string {
  return join(config.dataDir, 'dev-service.key');
}

function readKey(file: string): Buffer {
  const text = readFileSync(file, 'utf8').trim();
  const key = Buffer.from(text, 'base64url');
  if (key.length !== KEY_BYTES || key.toString('base64url') !== text) {
    throw new DevServiceError(
      `${file} is not a dev service key (32 bytes, base64url); delete it to have a new one generated`,
    );
  }
  return key;
}

/**
 * The dev service definition, creating its key file when missing; null when the dev service is
 * off (production, or the sandbox disabled). `created` tells the caller to log where the key went.
 */
export function loadDevService(
  config: DevConfig,
): { service: ServiceDefinition; keyFile: string; created: boolean } | null {
  if (!devServiceEnabled(config)) return null;
  const keyFile = devServiceKeyFile(config);
  let created = false;
  let key: Buffer;
  try {
    key = readKey(keyFile);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
    key = randomBytes(KEY_BYTES);
    try {
      // 'wx': never overwrite a key another process created meanwhile.
      writeFileSync(keyFile, `${key.toString('base64url')}\n`, { mode: 0o600, flag: 'wx' });
      chmodSync(keyFile, 0o600); // the umask may have narrowed the mode further, never widened it
      created = true;
    } catch (writeErr) {
      if ((writeErr as NodeJS.ErrnoException).code !== 'EEXIST') throw writeErr;
      key = readKey(keyFile);
    }
  }
  const service: ServiceDefinition = {
    id: DEV_SERVICE_ID,
    roles: new Set(SERVICE_ROLES),
    keys: new Map([
      [DEV_SERVICE_KID, { kid: DEV_SERVICE_KID, alg: 'HS256', key: createSecretKey(key) }],
    ]),
    tenants: null,
  };
  key.fill(0);
  return { service, keyFile, created };
}

/**
 * A 300-second service JWT for the dev service (what `linkvault dev-token` prints). Throws
 * DevServiceError when the dev service is off or its key does not exist yet.
 */
export function signDevToken(
  config: DevConfig & Pick<Config, 'audience'>,
  nowMs: number = Date.now(),
): string {
  if (!devServiceEnabled(config)) {
    throw new DevServiceError(
      'the dev service exists only outside production with the sandbox on (LINKVAULT_SANDBOX)',
    );
  }
  const keyFile = devServiceKeyFile(config);
  try {
    statSync(keyFile);
  } catch {
    throw new DevServiceError(
      `${keyFile} does not exist yet: start linkvault once (it creates the key), then run this again`,
    );
  }
  const key = readKey(keyFile);
  try {
    const iat = Math.floor(nowMs / 1000);
    return jwt.sign({ iat, exp: iat + DEV_TOKEN_LIFETIME_SECONDS }, key, {
      algorithm: 'HS256',
      keyid: DEV_SERVICE_KID,
      issuer: DEV_SERVICE_ID,
      audience: config.audience,
    });
  } finally {
    key.fill(0);
  }
}
