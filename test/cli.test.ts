import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { COMMANDS } from '../src/cli.js';
import { LocalKeyProvider } from '../src/keys/local-key-provider.js';
import { createVault } from '../src/keys/vault.js';
import { tokenSetIdentity } from '../src/links/sealing/token-vault.js';
import { Metrics } from '../src/metrics.js';
import { SqliteStore } from '../src/store/sqlite/sqlite-store.js';
import type { SealedRecord } from '../src/keys/sealed-record.js';

const BIN = join(import.meta.dirname, '../bin/linkvault.js');
const cwd = mkdtempSync(join(tmpdir(), 'linkvault-cli-'));
after(() => rmSync(cwd, { recursive: true, force: true }));

interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `node bin/linkvault.js <args>` in a temp directory with only `env` (plus PATH) set. */
function runCli(
  args: string[],
  env: Record<string, string> = {},
  dir: string = cwd,
): Promise<Outcome> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { cwd: dir, env: { PATH: process.env.PATH ?? '', ...env }, timeout: 30_000 },
      (err, stdout, stderr) => {
        resolve({
          code: err ? (typeof err.code === 'number' ? err.code : null) : 0,
          stdout,
          stderr,
        });
      },
    );
  });
}

function assertOneConfigLine(outcome: Outcome, variable: string): void {
  assert.equal(outcome.code, 1);
  assert.equal(outcome.stdout, '');
  const lines = outcome.stderr.split('\n');
  assert.equal(
    lines.length,
    2,
    `expected exactly one stderr line, got: ${JSON.stringify(outcome.stderr)}`,
  );
  assert.equal(lines[1], '');
  assert.match(lines[0]!, new RegExp(`^linkvault: invalid configuration: ${variable}: \\S`));
  assert.doesNotMatch(outcome.stderr, /\bat .*\.(ts|js):\d+/, 'no stack trace');
}

describe('linkvault check-config', () => {
  test('when a variable is invalid, then it exits 1 with exactly one stderr line naming it', async () => {
    const outcome = await runCli(['check-config'], { LINKVAULT_PORT: 'abc' });
    assertOneConfigLine(outcome, 'LINKVAULT_PORT');
    assert.equal(
      outcome.stderr,
      'linkvault: invalid configuration: LINKVAULT_PORT: must be a whole number, got "abc"\n',
    );
  });

  test('when LINKVAULT_STORE=redis has no address, then the line names LINKVAULT_REDIS_URL', async () => {
    assertOneConfigLine(
      await runCli(['check-config'], { LINKVAULT_STORE: 'redis' }),
      'LINKVAULT_REDIS_URL',
    );
  });

  test('when production has no local key file, then the line names LINKVAULT_LOCAL_KEY_FILE and no key is generated', async () => {
    const outcome = await runCli(['check-config'], {
      NODE_ENV: 'production',
      LINKVAULT_PUBLIC_URL: 'https://vault.example.com',
    });
    assertOneConfigLine(outcome, 'LINKVAULT_LOCAL_KEY_FILE');
    assert.equal(existsSync(join(cwd, 'data/master.key')), false);
  });

  test('when the services file is broken, then the line names LINKVAULT_SERVICES_FILE', async () => {
    writeFileSync(
      join(cwd, 'broken-services.json'),
      '{"services": [{"id": "a", "roles": ["root"], "keys": []}]}',
    );
    assertOneConfigLine(
      await runCli(['check-config'], { LINKVAULT_SERVICES_FILE: 'broken-services.json' }),
      'LINKVAULT_SERVICES_FILE',
    );
  });

  test('when the configuration is valid, then it exits 0 with the one-line summary, what it enables, and touches nothing', async () => {
    const outcome = await runCli(['check-config'], { LINKVAULT_PORT: '4000' });
    assert.equal(outcome.code, 0);
    assert.equal(outcome.stderr, '');
    assert.equal(
      outcome.stdout,
      [
        `linkvault: configuration ok: env=development port=4000 public_url=http://localhost:4000 store=sqlite (${join(cwd, 'data/linkvault.db')}) keys=local (${join(cwd, 'data/master.key')}) services=0 provider_credentials=0 sandbox=true`,
        '  environment        development',
        '  listen             *:4000',
        '  public url         http://localhost:4000',
        '  redirect uris      http://localhost:4000/v1/oauth/callback/<provider id>',
        `  store              sqlite (${join(cwd, 'data/linkvault.db')})`,
        `  keys               local (${join(cwd, 'data/master.key')}, generated at first start)`,
        '  audience           linkvault',
        '  services           none',
        '  providers enabled  sandbox (built-in Sandbox CRM)',
        '  sandbox            on (any username signs in: development only)',
        '',
      ].join('\n'),
    );
    assert.equal(existsSync(join(cwd, 'data')), false, 'check-config creates no data directory');
  });
});

describe('linkvault (other commands)', () => {
  test('when serve is given an invalid configuration, then it exits 1 with the same one line and does not start', async () => {
    assertOneConfigLine(
      await runCli(['serve'], { LINKVAULT_KEYS: 'aws-kms', AWS_REGION: 'eu-west-1' }),
      'LINKVAULT_KMS_KEY_ID',
    );
  });

  test('when no command is given, then it means serve (and so validates the configuration first)', async () => {
    assertOneConfigLine(await runCli([], { LINKVAULT_LOG_LEVEL: 'loud' }), 'LINKVAULT_LOG_LEVEL');
  });

  test('when rewrap is given an invalid configuration, then it exits 1 with the one line', async () => {
    assertOneConfigLine(
      await runCli(['rewrap', '--yes'], { LINKVAULT_STORE: 'mysql' }),
      'LINKVAULT_STORE',
    );
  });

  test('when the command is unknown, then it exits 2 naming it', async () => {
    const outcome = await runCli(['frobnicate']);
    assert.equal(outcome.code, 2);
    assert.equal(outcome.stdout, '');
    assert.equal(outcome.stderr, 'linkvault: unknown command "frobnicate" (try: linkvault help)\n');
  });

  test('when help is asked for, then every command is listed and it exits 0', async () => {
    const outcome = await runCli(['help']);
    assert.equal(outcome.code, 0);
    assert.equal(outcome.stderr, '');
    for (const { name } of COMMANDS)
      assert.match(outcome.stdout, new RegExp(`^  ${name} +\\S`, 'm'));
    for (const name of ['serve', 'check-config', 'rewrap', 'help'])
      assert.ok(COMMANDS.some((c) => c.name === name));
  });

  test('when a command is in the table, then docs/cli.md documents it', () => {
    const doc = readFileSync(join(import.meta.dirname, '../docs/cli.md'), 'utf8');
    const missing = COMMANDS.filter(({ name }) => !doc.includes(`| \`linkvault ${name}`));
    assert.deepEqual(
      missing.map((c) => c.name),
      [],
    );
  });
});

describe('linkvault serve and rewrap against real files', () => {
  test('when a start-up step finds bad configuration (a group-readable key in production), then serve exits 1 with the one line', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'linkvault-cli-serve-'));
    try {
      mkdirSync(join(dir, 'data'));
      writeFileSync(join(dir, 'data/master.key'), randomBytes(32), { mode: 0o644 });
      const outcome = await runCli(
        ['serve'],
        {
          NODE_ENV: 'production',
          LINKVAULT_PUBLIC_URL: 'https://vault.example.com',
          LINKVAULT_PORT: '0',
        },
        dir,
      );
      assertOneConfigLine(outcome, 'LINKVAULT_LOCAL_KEY_FILE');
      assert.match(outcome.stderr, /chmod 600/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('when the master key was rotated, then rewrap moves every link to the current key and prints the counts', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'linkvault-cli-rewrap-'));
    try {
      mkdirSync(join(dir, 'data'), { mode: 0o700 });
      const oldKey = join(dir, 'data/old.key');
      const newKey = join(dir, 'data/master.key');
      writeFileSync(oldKey, randomBytes(32), { mode: 0o600 });
      writeFileSync(newKey, randomBytes(32), { mode: 0o600 });

      // A link sealed under the old key, and one without tokens.
      const metrics = new Metrics();
      const oldProvider = await LocalKeyProvider.load({
        keyFile: oldKey,
        mayGenerate: false,
        metrics,
      });
      const oldVault = createVault({ keys: oldProvider, metrics, maxEntries: 0, maxAgeMs: 0 });
      const now = Date.now();
      const base = {
        tenantId: 't1',
        userId: 'u1',
        providerId: 'sandbox',
        status: 'active' as const,
        version: 0,
        providerAccountId: null,
        grantedScopes: [],
        metadata: {},
        endpointVariables: {},
        accessTokenExpiresAtMs: null,
        createdAtMs: now,
        updatedAtMs: now,
        lastRefreshedAtMs: null,
        lastUsedAtMs: null,
      };
      const store = new SqliteStore({ path: join(dir, 'data/linkvault.db') });
      const sealed = await oldVault.seal(
        tokenSetIdentity({ id: 'l1', tenantId: 't1', providerId: 'sandbox' }),
        Buffer.from('token-set-bytes'),
      );
      assert.ok(await store.saveLink({ ...base, id: 'l1', tokens: sealed }, null));
      assert.ok(await store.saveLink({ ...base, id: 'l2', tokens: null }, null));
      await store.close();

      const outcome = await runCli(
        ['rewrap', '--yes'],
        { LINKVAULT_LOCAL_PREVIOUS_KEY_FILES: 'data/old.key', LINKVAULT_LOG_LEVEL: 'silent' },
        dir,
      );
      const newProvider = await LocalKeyProvider.load({
        keyFile: newKey,
        mayGenerate: false,
        metrics,
      });
      assert.equal(outcome.stderr, '');
      assert.equal(
        outcome.stdout,
        'linkvault: rewrap done: scanned=2 rewrapped=1 skipped=1 conflicts=0 failed=0 jobs_scanned=0 jobs_rewrapped=0 jobs_skipped=0 job_conflicts=0 jobs_failed=0' +
          ` jobs_on_old_key=0 current_key=${newProvider.currentKeyId()}\n`,
      );
      assert.equal(outcome.code, 0);

      // Queued jobs: a pending provider revocation carrying a sealed copy under the old key (re-wrapped),
      // a job of a kind rewrap cannot tell the seal identity of holding one too (left: the old key must stay),
      // and a job without sealed material (nothing to do).
      const withJob = new SqliteStore({ path: join(dir, 'data/linkvault.db') });
      const jobSealed = await oldVault.seal(
        tokenSetIdentity({ id: 'l3', tenantId: 't1', providerId: 'sandbox' }),
        Buffer.from('job-token-set'),
      );
      const revocationPayload = {
        link_id: 'l3',
        tenant_id: 't1',
        user_id: 'u1',
        provider_id: 'sandbox',
        link_version: 1,
        role: 'link',
        sealed: jobSealed,
        requested_at_ms: now,
      };
      await withJob.enqueue({
        id: 'job-1',
        kind: 'revocation.provider',
        payload: revocationPayload,
        attempts: 0,
        runAtMs: now,
      });
      await withJob.enqueue({
        id: 'job-2',
        kind: 'something.else',
        payload: { nested: { sealed: jobSealed } },
        attempts: 0,
        runAtMs: now,
      });
      await withJob.enqueue({
        id: 'job-3',
        kind: 'revocation.bulk',
        payload: { job_id: 'b1' },
        attempts: 0,
        runAtMs: now,
      });
      await withJob.close();
      const again = await runCli(
        ['rewrap', '--yes'],
        { LINKVAULT_LOCAL_PREVIOUS_KEY_FILES: 'data/old.key', LINKVAULT_LOG_LEVEL: 'silent' },
        dir,
      );
      assert.match(
        again.stdout,
        / scanned=2 rewrapped=0 skipped=2 conflicts=0 failed=0 jobs_scanned=3 jobs_rewrapped=1 jobs_skipped=2 job_conflicts=0 jobs_failed=0 jobs_on_old_key=1 /,
      );
      assert.equal(
        again.stderr,
        'linkvault: 1 queued job(s) still hold data keys under an old key: keep the old key and run rewrap again until it reports jobs_on_old_key=0\n',
      );
      assert.equal(again.code, 0);

      // The record now opens with the new key alone.
      const reopened = new SqliteStore({ path: join(dir, 'data/linkvault.db') });
      try {
        const link = await reopened.getLink('l1');
        assert.equal(link!.tokens!.kid, newProvider.currentKeyId());
        const newVault = createVault({ keys: newProvider, metrics, maxEntries: 0, maxAgeMs: 0 });
        assert.equal(
          (await newVault.open(tokenSetIdentity(link!), link!.tokens!)).toString(),
          'token-set-bytes',
        );
        // The revocation job's sealed copy too.
        const jobs: Record<string, unknown>[] = [];
        for await (const job of reopened.scanJobs()) if (job.id === 'job-1') jobs.push(job.payload);
        const jobRecord = jobs[0]!.sealed as SealedRecord;
        assert.equal(jobRecord.kid, newProvider.currentKeyId());
        assert.equal(
          (
            await newVault.open(
              tokenSetIdentity({ id: 'l3', tenantId: 't1', providerId: 'sandbox' }),
              jobRecord,
            )
          ).toString(),
          'job-token-set',
        );
      } finally {
        await reopened.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
