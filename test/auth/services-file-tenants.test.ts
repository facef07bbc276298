import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ServicesFileError, parseServicesFile } from '../../src/auth/services-file.js';
import { ConfigError, loadConfig } from '../../src/config.js';

/**
 * `tenants` in the services file (docs/configuration.md, "Services file"): absent means every
 * tenant; present, a non-empty list of distinct tenant ids. A list that could never match a
 * session's tenant (a lone surrogate, white space around it) would silently scope a service to
 * nothing, so it stops the start with one line naming the entry.
 */

const env = { SECRET: randomBytes(32).toString('base64url') };
const entry = (tenants?: unknown) => ({
  services: [
    {
      id: 'svc',
      roles: ['sessions'],
      keys: [{ kid: 'k1', alg: 'HS256', secret_env: 'SECRET' }],
      ...(tenants === undefined ? {} : { tenants }),
    },
  ],
});

describe('the tenants of a service in the services file', () => {
  test('when tenants is absent, then the service acts for every tenant (null)', () => {
    assert.equal(parseServicesFile(entry(), env)[0]!.tenants, null);
  });

  test('when tenants lists distinct tenant ids, then they are its scope', () => {
    const [svc] = parseServicesFile(entry(['acme', 'acme-eu', 'Ünïcode 😀']), env);
    assert.deepEqual([...svc!.tenants!], ['acme', 'acme-eu', 'Ünïcode 😀']);
  });

  test('when tenants is not a non-empty list of distinct well-formed tenant ids, then the file is refused naming the entry', () => {
    const cases: [unknown, string][] = [
      [
        [],
        'services[0]: "tenants" must be a non-empty array of at most 1000 tenant ids (omit it for every tenant)',
      ],
      [
        'acme',
        'services[0]: "tenants" must be a non-empty array of at most 1000 tenant ids (omit it for every tenant)',
      ],
      [
        null,
        'services[0]: "tenants" must be a non-empty array of at most 1000 tenant ids (omit it for every tenant)',
      ],
      [['acme', 'acme'], 'services[0].tenants[1]: duplicate tenant "acme"'],
      [
        ['acme', 7],
        'services[0].tenants[1]: must be a tenant id: 1-256 printable characters, no surrounding white space',
      ],
      [
        [' acme'],
        'services[0].tenants[0]: must be a tenant id: 1-256 printable characters, no surrounding white space',
      ],
      [
        [''],
        'services[0].tenants[0]: must be a tenant id: 1-256 printable characters, no surrounding white space',
      ],
      [
        ['acme\ud800'],
        'services[0].tenants[0]: must be a tenant id: 1-256 printable characters, no surrounding white space',
      ],
      [
        ['a'.repeat(257)],
        'services[0].tenants[0]: must be a tenant id: 1-256 printable characters, no surrounding white space',
      ],
    ];
    for (const [tenants, message] of cases) {
      assert.throws(
        () => parseServicesFile(entry(tenants), env),
        (err: unknown) => err instanceof ServicesFileError && err.message === message,
        JSON.stringify(tenants),
      );
    }
  });

  test('when a services file on disk has a bad tenants list, then loadConfig stops with one line naming LINKVAULT_SERVICES_FILE', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lv-tenants-'));
    try {
      const file = join(dir, 'services.json');
      writeFileSync(file, JSON.stringify(entry(['acme', 'acme'])));
      assert.throws(
        () => loadConfig({ NODE_ENV: 'test', LINKVAULT_SERVICES_FILE: file, ...env }, dir),
        (err: unknown) =>
          err instanceof ConfigError &&
          err.message.includes('LINKVAULT_SERVICES_FILE') &&
          err.message.includes('services[0].tenants[1]: duplicate tenant "acme"'),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
