import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { CONFIG_VARIABLES } from '../../src/config.js';
import { editDistance, nearestName } from '../../src/config-check.js';
import { runBin } from './run-cli.js';

/** `linkvault check-config` on configurations that load but are almost certainly wrong. */

const roots: string[] = [];
after(() => {
  for (const dir of roots) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'lv-check-config-'));
  roots.push(dir);
  return dir;
}

function writeKey(path: string, mode: number): void {
  mkdirSync(join(path, '..'), { recursive: true, mode: 0o700 });
  writeFileSync(path, randomBytes(32), { mode });
}

const SECRET = randomBytes(32).toString('base64url');
function writeServices(dir: string): string {
  const file = join(dir, 'services.json');
  writeFileSync(
    file,
    JSON.stringify({
      services: [
        {
          id: 'crm-sync',
          roles: ['sessions', 'tokens'],
          keys: [{ kid: 'k1', alg: 'HS256', secret_env: 'LINKVAULT_CRM_SECRET' }],
        },
      ],
    }),
  );
  return file;
}

/** A production configuration that check-config accepts without findings (a key of its own, a service, a provider). */
function production(dir: string): Record<string, string> {
  writeKey(join(dir, 'keys/master.key'), 0o600);
  return {
    NODE_ENV: 'production',
    LINKVAULT_PUBLIC_URL: 'https://vault.example.com',
    LINKVAULT_LOCAL_KEY_FILE: 'keys/master.key',
    LINKVAULT_SERVICES_FILE: writeServices(dir),
    LINKVAULT_CRM_SECRET: SECRET,
    LINKVAULT_PROVIDER_HUBSPOT_CLIENT_ID: 'hub-client',
    LINKVAULT_PROVIDER_HUBSPOT_CLIENT_SECRET: 'hub-secret',
  };
}

describe('linkvault check-config', () => {
  test('when a production configuration is sound, then it exits 0, warns about nothing and summarises what it enables', async () => {
    const dir = tempDir();
    const outcome = await runBin(['check-config'], { cwd: dir, env: production(dir) });
    assert.equal(outcome.stderr, '');
    assert.equal(outcome.code, 0);
    const lines = outcome.stdout.split('\n');
    assert.match(lines[0]!, /^linkvault: configuration ok: env=production /);
    assert.deepEqual(lines.slice(1), [
      '  environment        production',
      '  listen             *:3000',
      '  public url         https://vault.example.com',
      '  redirect uris      https://vault.example.com/v1/oauth/callback/<provider id>',
      `  store              sqlite (${join(dir, 'data/linkvault.db')})`,
      `  keys               local (${join(dir, 'keys/master.key')})`,
      '  audience           linkvault',
      '  services           crm-sync (sessions, tokens)',
      '  providers enabled  hubspot',
      '  sandbox            off',
      '',
    ]);
  });

  test('when a LINKVAULT_ variable is misspelt, then it warns with the nearest real name and still exits 0', async () => {
    const dir = tempDir();
    const outcome = await runBin(['check-config'], {
      cwd: dir,
      env: {
        LINKVAULT_PROT: '4000',
        LINKVAULT_SANBDOX: 'false',
        LINKVAULT_ZZZ_UNRELATED_THING: '1',
      },
    });
    assert.equal(outcome.code, 0);
    assert.equal(
      outcome.stderr,
      [
        'linkvault: warning: LINKVAULT_PROT: not a linkvault variable, ignored: did you mean LINKVAULT_PORT?',
        'linkvault: warning: LINKVAULT_SANBDOX: not a linkvault variable, ignored: did you mean LINKVAULT_SANDBOX?',
        'linkvault: warning: LINKVAULT_ZZZ_UNRELATED_THING: not a linkvault variable, ignored',
        '',
      ].join('\n'),
    );
  });

  test('when a services file names a LINKVAULT_ secret_env, then that variable is not reported as unknown', async () => {
    const dir = tempDir();
    const outcome = await runBin(['check-config'], { cwd: dir, env: production(dir) });
    assert.doesNotMatch(outcome.stderr, /LINKVAULT_CRM_SECRET/);
  });

  test('when credentials name a provider that is not in the catalogue, then it warns with the nearest provider', async () => {
    const dir = tempDir();
    const outcome = await runBin(['check-config'], {
      cwd: dir,
      env: {
        LINKVAULT_PROVIDER_HUBSPOTT_CLIENT_ID: 'id',
        LINKVAULT_PROVIDER_HUBSPOTT_CLIENT_SECRET: 'secret',
        LINKVAULT_PROVIDER_NOPE_CLIENT_ID: 'id',
        LINKVAULT_PROVIDER_NOPE_CLIENT_SECRET: 'secret',
      },
    });
    assert.equal(outcome.code, 0);
    assert.equal(
      outcome.stderr,
      [
        'linkvault: warning: LINKVAULT_PROVIDER_HUBSPOTT_CLIENT_ID: credentials for a provider that is not in the catalogue (config/providers.json): did you mean LINKVAULT_PROVIDER_HUBSPOT_CLIENT_ID?',
        'linkvault: warning: LINKVAULT_PROVIDER_HUBSPOTT_CLIENT_SECRET: credentials for a provider that is not in the catalogue (config/providers.json): did you mean LINKVAULT_PROVIDER_HUBSPOT_CLIENT_SECRET?',
        'linkvault: warning: LINKVAULT_PROVIDER_NOPE_CLIENT_ID: credentials for a provider that is not in the catalogue (config/providers.json)',
        'linkvault: warning: LINKVAULT_PROVIDER_NOPE_CLIENT_SECRET: credentials for a provider that is not in the catalogue (config/providers.json)',
        '',
      ].join('\n'),
    );
  });

  test('when production has no services and no enabled provider, then it warns about both', async () => {
    const dir = tempDir();
    writeKey(join(dir, 'keys/master.key'), 0o600);
    const outcome = await runBin(['check-config'], {
      cwd: dir,
      env: {
        NODE_ENV: 'production',
        LINKVAULT_PUBLIC_URL: 'https://vault.example.com',
        LINKVAULT_LOCAL_KEY_FILE: 'keys/master.key',
      },
    });
    assert.equal(outcome.code, 0);
    assert.equal(
      outcome.stderr,
      [
        'linkvault: warning: LINKVAULT_SERVICES_FILE: no services registered (no services file: set LINKVAULT_SERVICES_FILE): no backend can mint a session or obtain a token',
        'linkvault: warning: LINKVAULT_PROVIDER_<ID>_CLIENT_ID: no provider is enabled: set LINKVAULT_PROVIDER_<ID>_CLIENT_ID and _CLIENT_SECRET for each provider to offer (docs/providers/README.md)',
        '',
      ].join('\n'),
    );
    assert.match(outcome.stdout, /^ {2}providers enabled {2}none \(of 14 in the catalogue\)$/m);
  });

  test('when production runs on the development master key (the default data/master.key), then it is refused with exit 1', async () => {
    const dir = tempDir();
    const env = production(dir);
    delete env.LINKVAULT_LOCAL_KEY_FILE;
    writeKey(join(dir, 'data/master.key'), 0o600);
    const outcome = await runBin(['check-config'], { cwd: dir, env });
    assert.equal(outcome.code, 1);
    assert.equal(outcome.stdout, '');
    const lines = outcome.stderr.trimEnd().split('\n');
    assert.match(
      lines[0]!,
      /^linkvault: refused: LINKVAULT_LOCAL_KEY_FILE: .*data\/master\.key is the development master key \(LINKVAULT_LOCAL_KEY_FILE is not set/,
    );
    assert.equal(
      lines[1],
      'linkvault: configuration refused: 1 problem(s) that production must not run with',
    );
    assert.equal(lines.length, 2);
  });

  test('when production names a key file next to the development service key, then it is refused too', async () => {
    const dir = tempDir();
    const env = production(dir);
    writeFileSync(join(dir, 'keys/dev-service.key'), 'x', { mode: 0o600 });
    const outcome = await runBin(['check-config'], { cwd: dir, env });
    assert.equal(outcome.code, 1);
    assert.match(
      outcome.stderr,
      /^linkvault: refused: LINKVAULT_LOCAL_KEY_FILE: .* \(it sits next to dev-service\.key/,
    );
  });

  test('when the key file is group/other-readable (0644), then production refuses and development warns', async () => {
    const dir = tempDir();
    const env = production(dir);
    writeKey(join(dir, 'keys/loose.key'), 0o644);
    const prod = await runBin(['check-config'], {
      cwd: dir,
      env: { ...env, LINKVAULT_LOCAL_KEY_FILE: 'keys/loose.key' },
    });
    assert.equal(prod.code, 1);
    assert.equal(prod.stdout, '');
    assert.equal(
      prod.stderr,
      `linkvault: refused: LINKVAULT_LOCAL_KEY_FILE: ${join(dir, 'keys/loose.key')} has mode 0644: group or others may read the master key (chmod 600 ${join(dir, 'keys/loose.key')})\n` +
        'linkvault: configuration refused: 1 problem(s) that production must not run with\n',
    );
    const previous = await runBin(['check-config'], {
      cwd: dir,
      env: { ...env, LINKVAULT_LOCAL_PREVIOUS_KEY_FILES: 'keys/loose.key' },
    });
    assert.equal(previous.code, 1);
    assert.match(previous.stderr, /^linkvault: refused: LINKVAULT_LOCAL_PREVIOUS_KEY_FILES: /);

    const dev = await runBin(['check-config'], {
      cwd: dir,
      env: { LINKVAULT_LOCAL_KEY_FILE: 'keys/loose.key' },
    });
    assert.equal(dev.code, 0);
    assert.match(dev.stderr, /^linkvault: warning: LINKVAULT_LOCAL_KEY_FILE: .* has mode 0644/);
    assert.match(dev.stdout, /^linkvault: configuration ok: /);
  });

  test('when --json is given, then one JSON document carries ok, the summary and the findings', async () => {
    const dir = tempDir();
    const outcome = await runBin(['check-config', '--json'], {
      cwd: dir,
      env: { LINKVAULT_PROT: '1' },
    });
    assert.equal(outcome.code, 0);
    assert.equal(outcome.stderr, '');
    const report = JSON.parse(outcome.stdout) as Record<string, unknown>;
    assert.equal(report.ok, true);
    assert.equal(report.environment, 'development');
    assert.deepEqual(report.findings, [
      {
        level: 'warning',
        variable: 'LINKVAULT_PROT',
        message: 'not a linkvault variable, ignored: did you mean LINKVAULT_PORT?',
      },
    ]);
    assert.equal((report.summary as Record<string, string>)['public url'], 'http://localhost:3000');
  });

  test('when config.ts reads a variable, then CONFIG_VARIABLES lists it (so check-config does not call it unknown)', () => {
    const source = readFileSync(join(import.meta.dirname, '../../src/config.ts'), 'utf8');
    const read = new Set<string>();
    for (const m of source.matchAll(/'((?:LINKVAULT|AWS)_[A-Z0-9_]+|NODE_ENV)'/g)) read.add(m[1]!);
    assert.deepEqual([...new Set(CONFIG_VARIABLES)].sort(), [...read].sort());
  });

  test('when names are compared, then a transposition is one edit and far names have no suggestion', () => {
    assert.equal(editDistance('LINKVAULT_PROT', 'LINKVAULT_PORT'), 1);
    assert.equal(editDistance('abc', 'abc'), 0);
    assert.equal(editDistance('', 'abc'), 3);
    assert.equal(nearestName('LINKVAULT_PROT', CONFIG_VARIABLES), 'LINKVAULT_PORT');
    assert.equal(nearestName('LINKVAULT_ZZZ_UNRELATED_THING', CONFIG_VARIABLES), null);
  });
});
