import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ConfigError, loadConfig } from '../src/config.js';

const cwd = mkdtempSync(join(tmpdir(), 'linkvault-config-'));
after(() => rmSync(cwd, { recursive: true, force: true }));

const HMAC_SECRET = 'x'.repeat(40);

/** Asserts that loading `env` fails with a ConfigError naming `variable`. */
function assertRejects(env: Record<string, string>, variable: string, problem?: RegExp): void {
  assert.throws(
    () => loadConfig(env, cwd),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
      assert.equal(err.variable, variable);
      assert.equal(err.message, `${variable}: ${err.problem}`);
      assert.doesNotMatch(err.message, /\n/);
      if (problem) assert.match(err.problem, problem);
      return true;
    },
  );
}

function writeJson(name: string, value: unknown): string {
  const path = join(cwd, name);
  writeFileSync(path, typeof value === 'string' ? value : JSON.stringify(value));
  return path;
}

describe('loadConfig', () => {
  test('when the environment is empty, then the documented development defaults apply', () => {
    const config = loadConfig({}, cwd);
    assert.equal(config.production, false);
    assert.equal(config.nodeEnv, 'development');
    assert.equal(config.port, 3000);
    assert.equal(config.host, '127.0.0.1');
    assert.equal(config.publicUrl, 'http://localhost:3000');
    assert.deepEqual(config.store, { kind: 'sqlite', sqlitePath: join(cwd, 'data/linkvault.db') });
    assert.deepEqual(config.keys, {
      kind: 'local',
      localKeyFile: join(cwd, 'data/master.key'),
      previousKeyFiles: [],
      mayGenerate: true,
    });
    assert.equal(config.audience, 'linkvault');
    assert.equal(config.servicesFile, null);
    assert.deepEqual(config.services, []);
    assert.equal(config.providersFile, null);
    assert.equal(config.providerCredentials.size, 0);
    assert.equal(config.allowInsecureProviderUrls, false);
    assert.deepEqual(config.returnUrlAllowlist, ['http://localhost:3000']);
    assert.equal(config.dormantLinkDays, null);
    assert.equal(config.sessionTtlSeconds, 900);
    assert.equal(config.sandbox, true);
    assert.equal(config.backgroundRefresh, true);
    assert.equal(config.providerTimeoutMs, 10_000);
    assert.equal(config.shutdownTimeoutMs, 10_000);
    assert.equal(config.logLevel, 'info');
    assert.deepEqual(config.keyCache, { maxEntries: 10_000, maxAgeMs: 300_000 });
    assert.equal(config.dataDir, join(cwd, 'data'));
  });

  test('when a value is given, then it is used (port, public URL, allowlist, redis cluster, kms, credentials)', () => {
    const config = loadConfig(
      {
        LINKVAULT_PORT: '8080',
        LINKVAULT_HOST: '127.0.0.1',
        LINKVAULT_PUBLIC_URL: 'https://vault.example.com/',
        LINKVAULT_RETURN_URL_ALLOWLIST: 'https://app.example.com, http://localhost:5173',
        LINKVAULT_STORE: 'redis',
        LINKVAULT_REDIS_CLUSTER_NODES: '10.0.0.1:7000,[::1]:7001',
        LINKVAULT_REDIS_PREFIX: 'lv-test',
        LINKVAULT_KEYS: 'aws-kms',
        LINKVAULT_KMS_KEY_ID: 'alias/linkvault',
        AWS_REGION: 'eu-west-1',
        AWS_ENDPOINT_URL_KMS: 'http://127.0.0.1:4566',
        LINKVAULT_PROVIDER_GOOGLE_WORKSPACE_CLIENT_ID: 'cid',
        LINKVAULT_PROVIDER_GOOGLE_WORKSPACE_CLIENT_SECRET: 'csecret',
        LINKVAULT_DORMANT_LINK_DAYS: '90',
        LINKVAULT_SHUTDOWN_TIMEOUT_SECONDS: '3',
        LINKVAULT_LOG_LEVEL: 'warn',
      },
      cwd,
    );
    assert.equal(config.port, 8080);
    assert.equal(config.host, '127.0.0.1');
    assert.equal(config.publicUrl, 'https://vault.example.com');
    assert.deepEqual(config.returnUrlAllowlist, [
      'https://app.example.com',
      'http://localhost:5173',
    ]);
    assert.deepEqual(config.store, {
      kind: 'redis',
      redisUrl: null,
      clusterNodes: [
        { host: '10.0.0.1', port: 7000 },
        { host: '::1', port: 7001 },
      ],
      keyPrefix: 'lv-test',
    });
    assert.deepEqual(config.keys, {
      kind: 'aws-kms',
      kmsKeyId: 'alias/linkvault',
      region: 'eu-west-1',
      endpoint: 'http://127.0.0.1:4566/',
    });
    assert.deepEqual(config.providerCredentialFor('google-workspace'), {
      clientId: 'cid',
      clientSecret: 'csecret',
    });
    assert.equal(config.providerCredentialFor('hubspot'), null);
    assert.equal(config.dormantLinkDays, 90);
    assert.equal(config.shutdownTimeoutMs, 3000);
    assert.equal(config.logLevel, 'warn');
  });

  test('when the result is returned, then it and its parts are frozen', () => {
    const config = loadConfig(
      {
        LINKVAULT_SERVICES_FILE: writeJson('frozen-services.json', {
          services: [
            {
              id: 's',
              roles: ['tokens'],
              keys: [{ kid: 'k-frozen', alg: 'HS256', secret_env: 'S_SECRET' }],
            },
          ],
        }),
        S_SECRET: HMAC_SECRET,
      },
      cwd,
    );
    assert.ok(Object.isFrozen(config));
    assert.ok(Object.isFrozen(config.store));
    assert.ok(Object.isFrozen(config.keys));
    assert.ok(Object.isFrozen(config.keyCache));
    assert.ok(Object.isFrozen(config.services));
    assert.ok(Object.isFrozen(config.returnUrlAllowlist));
    assert.throws(() => {
      (config as { port: number }).port = 1;
    }, TypeError);
  });

  const invalid: [string, Record<string, string>, string, RegExp?][] = [
    ['a non-numeric port', { LINKVAULT_PORT: '30x0' }, 'LINKVAULT_PORT', /whole number/],
    ['a port out of range', { LINKVAULT_PORT: '70000' }, 'LINKVAULT_PORT', /between 0 and 65535/],
    ['a malformed host', { LINKVAULT_HOST: 'not a host' }, 'LINKVAULT_HOST'],
    [
      'a relative public URL',
      { LINKVAULT_PUBLIC_URL: 'vault.example.com' },
      'LINKVAULT_PUBLIC_URL',
      /absolute URL/,
    ],
    [
      'a public URL with a query',
      { LINKVAULT_PUBLIC_URL: 'https://vault.example.com/?a=1' },
      'LINKVAULT_PUBLIC_URL',
      /query/,
    ],
    [
      'a public URL with credentials',
      { LINKVAULT_PUBLIC_URL: 'https://u:p@vault.example.com' },
      'LINKVAULT_PUBLIC_URL',
      /credentials/,
    ],
    ['an unknown store', { LINKVAULT_STORE: 'postgres' }, 'LINKVAULT_STORE', /sqlite or redis/],
    ['redis without an address', { LINKVAULT_STORE: 'redis' }, 'LINKVAULT_REDIS_URL', /required/],
    [
      'redis with both a URL and cluster seeds',
      {
        LINKVAULT_STORE: 'redis',
        LINKVAULT_REDIS_URL: 'redis://a:6379',
        LINKVAULT_REDIS_CLUSTER_NODES: 'b:6379',
      },
      'LINKVAULT_REDIS_URL',
      /not both/,
    ],
    [
      'a redis URL of another scheme',
      { LINKVAULT_STORE: 'redis', LINKVAULT_REDIS_URL: 'http://a:6379' },
      'LINKVAULT_REDIS_URL',
      /redis:\/\//,
    ],
    [
      'a malformed cluster seed',
      { LINKVAULT_STORE: 'redis', LINKVAULT_REDIS_CLUSTER_NODES: 'a:6379,b' },
      'LINKVAULT_REDIS_CLUSTER_NODES',
      /host:port/,
    ],
    [
      'a bad redis prefix',
      {
        LINKVAULT_STORE: 'redis',
        LINKVAULT_REDIS_URL: 'redis://a:6379',
        LINKVAULT_REDIS_PREFIX: 'a b',
      },
      'LINKVAULT_REDIS_PREFIX',
    ],
    ['an unknown key provider', { LINKVAULT_KEYS: 'vault' }, 'LINKVAULT_KEYS', /local or aws-kms/],
    [
      'kms without a key id',
      { LINKVAULT_KEYS: 'aws-kms', AWS_REGION: 'eu-west-1' },
      'LINKVAULT_KMS_KEY_ID',
      /required/,
    ],
    [
      'kms without a region',
      { LINKVAULT_KEYS: 'aws-kms', LINKVAULT_KMS_KEY_ID: 'alias/x' },
      'AWS_REGION',
      /required/,
    ],
    [
      'a kms endpoint that is not a URL',
      {
        LINKVAULT_KEYS: 'aws-kms',
        LINKVAULT_KMS_KEY_ID: 'alias/x',
        AWS_REGION: 'eu-west-1',
        AWS_ENDPOINT_URL_KMS: 'localhost',
      },
      'AWS_ENDPOINT_URL_KMS',
    ],
    [
      'a previous key file that does not exist',
      { LINKVAULT_LOCAL_PREVIOUS_KEY_FILES: './missing.key' },
      'LINKVAULT_LOCAL_PREVIOUS_KEY_FILES',
      /does not exist/,
    ],
    [
      'a negative cache size',
      { LINKVAULT_KEY_CACHE_MAX_ENTRIES: '-1' },
      'LINKVAULT_KEY_CACHE_MAX_ENTRIES',
    ],
    [
      'a cache age over a day',
      { LINKVAULT_KEY_CACHE_MAX_AGE_SECONDS: '86401' },
      'LINKVAULT_KEY_CACHE_MAX_AGE_SECONDS',
    ],
    [
      'a providers file that does not exist',
      { LINKVAULT_PROVIDERS_FILE: './nope.json' },
      'LINKVAULT_PROVIDERS_FILE',
      /does not exist/,
    ],
    [
      'a client id without its secret',
      { LINKVAULT_PROVIDER_HUBSPOT_CLIENT_ID: 'id' },
      'LINKVAULT_PROVIDER_HUBSPOT_CLIENT_SECRET',
      /required/,
    ],
    [
      'a client secret without its id',
      { LINKVAULT_PROVIDER_HUBSPOT_CLIENT_SECRET: 's' },
      'LINKVAULT_PROVIDER_HUBSPOT_CLIENT_ID',
      /required/,
    ],
    [
      'a non-boolean insecure switch',
      { LINKVAULT_ALLOW_INSECURE_PROVIDER_URLS: 'yes' },
      'LINKVAULT_ALLOW_INSECURE_PROVIDER_URLS',
      /true or false/,
    ],
    [
      'an allowlist entry with a path',
      { LINKVAULT_RETURN_URL_ALLOWLIST: 'https://app.example.com/cb' },
      'LINKVAULT_RETURN_URL_ALLOWLIST',
      /origin/,
    ],
    [
      'an allowlist entry that is not a URL',
      { LINKVAULT_RETURN_URL_ALLOWLIST: 'app.example.com' },
      'LINKVAULT_RETURN_URL_ALLOWLIST',
    ],
    ['zero dormant days', { LINKVAULT_DORMANT_LINK_DAYS: '0' }, 'LINKVAULT_DORMANT_LINK_DAYS'],
    [
      'a session TTL under a minute',
      { LINKVAULT_SESSION_TTL_SECONDS: '59' },
      'LINKVAULT_SESSION_TTL_SECONDS',
    ],
    ['a non-boolean sandbox switch', { LINKVAULT_SANDBOX: 'maybe' }, 'LINKVAULT_SANDBOX'],
    [
      'a non-boolean background refresh switch',
      { LINKVAULT_BACKGROUND_REFRESH: 'on' },
      'LINKVAULT_BACKGROUND_REFRESH',
    ],
    [
      'a provider timeout of zero',
      { LINKVAULT_PROVIDER_TIMEOUT_SECONDS: '0' },
      'LINKVAULT_PROVIDER_TIMEOUT_SECONDS',
    ],
    [
      'a shutdown timeout over five minutes',
      { LINKVAULT_SHUTDOWN_TIMEOUT_SECONDS: '301' },
      'LINKVAULT_SHUTDOWN_TIMEOUT_SECONDS',
    ],
    ['an unknown log level', { LINKVAULT_LOG_LEVEL: 'verbose' }, 'LINKVAULT_LOG_LEVEL'],
  ];
  for (const [what, env, variable, problem] of invalid) {
    test(`when given ${what}, then a ConfigError names ${variable}`, () =>
      assertRejects(env, variable, problem));
  }

  describe('in production', () => {
    const keyFile = writeJson('prod-master.key', 'k'.repeat(32));
    const prod = {
      NODE_ENV: 'production',
      LINKVAULT_PUBLIC_URL: 'https://vault.example.com',
      LINKVAULT_LOCAL_KEY_FILE: keyFile,
    };

    test('when everything is production-grade, then it loads with the sandbox off and no key generation', () => {
      const config = loadConfig(prod, cwd);
      assert.equal(config.production, true);
      assert.equal(config.sandbox, false);
      assert.deepEqual(config.keys, {
        kind: 'local',
        localKeyFile: keyFile,
        previousKeyFiles: [],
        mayGenerate: false,
      });
    });

    test('when the local key file is missing, then it refuses to generate one (LINKVAULT_LOCAL_KEY_FILE)', () =>
      assertRejects(
        { ...prod, LINKVAULT_LOCAL_KEY_FILE: join(cwd, 'absent.key') },
        'LINKVAULT_LOCAL_KEY_FILE',
        /never generates/,
      ));

    test('when insecure provider URLs are allowed, then it refuses (LINKVAULT_ALLOW_INSECURE_PROVIDER_URLS)', () =>
      assertRejects(
        { ...prod, LINKVAULT_ALLOW_INSECURE_PROVIDER_URLS: 'true' },
        'LINKVAULT_ALLOW_INSECURE_PROVIDER_URLS',
        /production/,
      ));

    test('when the sandbox is switched on, then it refuses (LINKVAULT_SANDBOX)', () =>
      assertRejects({ ...prod, LINKVAULT_SANDBOX: 'true' }, 'LINKVAULT_SANDBOX', /production/));

    test('when the public URL is http, then it refuses (LINKVAULT_PUBLIC_URL)', () =>
      assertRejects(
        { ...prod, LINKVAULT_PUBLIC_URL: 'http://vault.example.com' },
        'LINKVAULT_PUBLIC_URL',
        /https/,
      ));

    test('when the public URL is left to its http default, then it refuses (LINKVAULT_PUBLIC_URL)', () => {
      const { LINKVAULT_PUBLIC_URL: _omitted, ...withoutUrl } = prod;
      assertRejects(withoutUrl, 'LINKVAULT_PUBLIC_URL', /https/);
    });

    test('when a return URL origin is http, then it refuses (LINKVAULT_RETURN_URL_ALLOWLIST)', () =>
      assertRejects(
        { ...prod, LINKVAULT_RETURN_URL_ALLOWLIST: 'http://app.example.com' },
        'LINKVAULT_RETURN_URL_ALLOWLIST',
        /https/,
      ));

    test('when the KMS endpoint is http, then it refuses (AWS_ENDPOINT_URL_KMS)', () =>
      assertRejects(
        {
          ...prod,
          LINKVAULT_KEYS: 'aws-kms',
          LINKVAULT_KMS_KEY_ID: 'alias/x',
          AWS_REGION: 'eu-west-1',
          AWS_ENDPOINT_URL_KMS: 'http://kms.internal',
        },
        'AWS_ENDPOINT_URL_KMS',
        /https/,
      ));
  });

  describe('services file', () => {
    const service = (keys: unknown[], extra: Record<string, unknown> = {}) => ({
      services: [{ id: 'crm-sync', roles: ['sessions', 'tokens'], keys, ...extra }],
    });

    test('when the file is valid, then its services load with KeyObjects and roles', () => {
      const file = writeJson(
        'services-ok.json',
        service([{ kid: 'k1', alg: 'HS256', secret_env: 'CRM_SYNC_JWT_SECRET' }]),
      );
      const config = loadConfig(
        { LINKVAULT_SERVICES_FILE: file, CRM_SYNC_JWT_SECRET: HMAC_SECRET },
        cwd,
      );
      assert.equal(config.servicesFile, file);
      assert.equal(config.services.length, 1);
      const [svc] = config.services;
      assert.equal(svc!.id, 'crm-sync');
      assert.deepEqual([...svc!.roles], ['sessions', 'tokens']);
      assert.equal(svc!.keys.get('k1')!.alg, 'HS256');
      assert.equal(svc!.keys.get('k1')!.key.type, 'secret');
    });

    test('when ./config/services.json exists and the variable is unset, then it is used', () => {
      const dir = mkdtempSync(join(tmpdir(), 'linkvault-config-default-'));
      try {
        mkdirSync(join(dir, 'config'));
        writeFileSync(
          join(dir, 'config/services.json'),
          JSON.stringify(service([{ kid: 'k1', alg: 'HS256', secret_env: 'CRM_SYNC_JWT_SECRET' }])),
        );
        const config = loadConfig({ CRM_SYNC_JWT_SECRET: HMAC_SECRET }, dir);
        assert.equal(config.servicesFile, join(dir, 'config/services.json'));
        assert.equal(config.services.length, 1);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    test('when the shipped services.example.json is used with its secret set, then it is valid', () => {
      const config = loadConfig(
        {
          LINKVAULT_SERVICES_FILE: join(import.meta.dirname, '../config/services.example.json'),
          CRM_SYNC_JWT_SECRET: HMAC_SECRET,
        },
        cwd,
      );
      assert.deepEqual(
        config.services.map((s) => s.id),
        ['crm-sync', 'ops-console'],
      );
    });

    const bad: [string, unknown, Record<string, string>, RegExp][] = [
      ['is missing', null, {}, /cannot read/],
      ['is not JSON', '{"services": [', {}, /cannot read .* as JSON/],
      ['has no services array', { services: {} }, {}, /"services" array/],
      [
        'has an unknown role',
        service([{ kid: 'k1', alg: 'HS256', secret_env: 'CRM_SYNC_JWT_SECRET' }], {
          roles: ['root'],
        }),
        { CRM_SYNC_JWT_SECRET: HMAC_SECRET },
        /unknown role "root"/,
      ],
      [
        'names an unset secret variable',
        service([{ kid: 'k1', alg: 'HS256', secret_env: 'CRM_SYNC_JWT_SECRET' }]),
        {},
        /CRM_SYNC_JWT_SECRET is not set/,
      ],
      [
        'has a short HMAC secret',
        service([{ kid: 'k1', alg: 'HS256', secret_env: 'CRM_SYNC_JWT_SECRET' }]),
        { CRM_SYNC_JWT_SECRET: 'short' },
        /at least 32 bytes/,
      ],
      [
        'has an unknown alg',
        service([{ kid: 'k1', alg: 'none', secret_env: 'CRM_SYNC_JWT_SECRET' }]),
        { CRM_SYNC_JWT_SECRET: HMAC_SECRET },
        /"alg" must be one of/,
      ],
      [
        'has a bad public key',
        service([
          {
            kid: 'k1',
            alg: 'ES256',
            public_key_pem: '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----',
          },
        ]),
        {},
        /not a valid public key/,
      ],
      [
        'has an unknown field',
        service([{ kid: 'k1', alg: 'HS256', secret_env: 'CRM_SYNC_JWT_SECRET', secret: 'inline' }]),
        { CRM_SYNC_JWT_SECRET: HMAC_SECRET },
        /unknown field "secret"/,
      ],
    ];
    bad.forEach(([what, content, env, problem], i) => {
      test(`when the file ${what}, then a ConfigError names LINKVAULT_SERVICES_FILE`, () => {
        const file =
          content === null
            ? join(cwd, 'does-not-exist.json')
            : writeJson(`services-bad-${i}.json`, content);
        assertRejects(
          { LINKVAULT_SERVICES_FILE: file, ...env },
          'LINKVAULT_SERVICES_FILE',
          problem,
        );
      });
    });

    test('when a services-file error mentions a secret variable, then it never contains the secret value', () => {
      const secret = 'short-but-secret-value';
      const file = writeJson(
        'services-secret.json',
        service([{ kid: 'k1', alg: 'HS256', secret_env: 'CRM_SYNC_JWT_SECRET' }]),
      );
      assert.throws(
        () => loadConfig({ LINKVAULT_SERVICES_FILE: file, CRM_SYNC_JWT_SECRET: secret }, cwd),
        (err: Error) => !err.message.includes(secret),
      );
    });
  });
});
