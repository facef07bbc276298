import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';

const BIN = join(import.meta.dirname, '../bin/linkvault.js');
const cwd = mkdtempSync(join(tmpdir(), 'linkvault-cli-'));
after(() => rmSync(cwd, { recursive: true, force: true }));

interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `node bin/linkvault.js <args>` in a temp directory with only `env` (plus PATH) set. */
function runCli(args: string[], env: Record<string, string> = {}): Promise<Outcome> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd, env: { PATH: process.env.PATH ?? '', ...env }, timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr });
    });
  });
}

function assertOneConfigLine(outcome: Outcome, variable: string): void {
  assert.equal(outcome.code, 1);
  assert.equal(outcome.stdout, '');
  const lines = outcome.stderr.split('\n');
  assert.equal(lines.length, 2, `expected exactly one stderr line, got: ${JSON.stringify(outcome.stderr)}`);
  assert.equal(lines[1], '');
  assert.match(lines[0]!, new RegExp(`^linkvault: invalid configuration: ${variable}: \\S`));
  assert.doesNotMatch(outcome.stderr, /\bat .*\.(ts|js):\d+/, 'no stack trace');
}

describe('linkvault check-config', () => {
  test('when a variable is invalid, then it exits 1 with exactly one stderr line naming it', async () => {
    const outcome = await runCli(['check-config'], { LINKVAULT_PORT: 'abc' });
    assertOneConfigLine(outcome, 'LINKVAULT_PORT');
    assert.equal(outcome.stderr, 'linkvault: invalid configuration: LINKVAULT_PORT: must be a whole number, got "abc"\n');
  });

  test('when LINKVAULT_STORE=redis has no address, then the line names LINKVAULT_REDIS_URL', async () => {
    assertOneConfigLine(await runCli(['check-config'], { LINKVAULT_STORE: 'redis' }), 'LINKVAULT_REDIS_URL');
  });

  test('when production has no local key file, then the line names LINKVAULT_LOCAL_KEY_FILE and no key is generated', async () => {
    const outcome = await runCli(['check-config'], { NODE_ENV: 'production', LINKVAULT_PUBLIC_URL: 'https://vault.example.com' });
    assertOneConfigLine(outcome, 'LINKVAULT_LOCAL_KEY_FILE');
    assert.equal(existsSync(join(cwd, 'data/master.key')), false);
  });

  test('when the services file is broken, then the line names LINKVAULT_SERVICES_FILE', async () => {
    writeFileSync(join(cwd, 'broken-services.json'), '{"services": [{"id": "a", "roles": ["root"], "keys": []}]}');
    assertOneConfigLine(await runCli(['check-config'], { LINKVAULT_SERVICES_FILE: 'broken-services.json' }), 'LINKVAULT_SERVICES_FILE');
  });

  test('when the configuration is valid, then it exits 0 with a one-line summary and touches nothing', async () => {
    const outcome = await runCli(['check-config'], { LINKVAULT_PORT: '4000' });
    assert.equal(outcome.code, 0);
    assert.equal(outcome.stderr, '');
    assert.equal(
      outcome.stdout,
      `linkvault: configuration ok: env=development port=4000 public_url=http://localhost:4000 store=sqlite (${join(cwd, 'data/linkvault.db')}) keys=local (${join(cwd, 'data/master.key')}) services=0 provider_credentials=0 sandbox=true\n`,
    );
    assert.equal(existsSync(join(cwd, 'data')), false, 'check-config creates no data directory');
  });
});

describe('linkvault (other commands)', () => {
  test('when serve is given an invalid configuration, then it exits 1 with the same one line and does not start', async () => {
    assertOneConfigLine(await runCli(['serve'], { LINKVAULT_KEYS: 'aws-kms', AWS_REGION: 'eu-west-1' }), 'LINKVAULT_KMS_KEY_ID');
  });

  test('when no command is given, then it means serve (and so validates the configuration first)', async () => {
    assertOneConfigLine(await runCli([], { LINKVAULT_LOG_LEVEL: 'loud' }), 'LINKVAULT_LOG_LEVEL');
  });

  test('when rewrap is given an invalid configuration, then it exits 1 with the one line', async () => {
    assertOneConfigLine(await runCli(['rewrap'], { LINKVAULT_STORE: 'mysql' }), 'LINKVAULT_STORE');
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
    for (const name of ['serve', 'check-config', 'rewrap', 'help']) assert.match(outcome.stdout, new RegExp(`^  ${name} +\\S`, 'm'));
  });
});
