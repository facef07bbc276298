import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { COMMANDS } from '../../src/cli.js';
import { BIN, runBin, startRecordingServer } from './run-cli.js';

/**
 * `--help` is side-effect free for every command: in a directory and an environment where running
 * the command would create data/ (serve, rewrap), print a token (dev-token) or call linkvault (the
 * HTTP commands, pointed at a server that records requests), asking for help does none of it.
 */
describe('linkvault <command> --help', () => {
  let server: Awaited<ReturnType<typeof startRecordingServer>>;
  const dir = mkdtempSync(join(tmpdir(), 'lv-cli-help-'));
  const secretFile = join(dir, 'secret');
  let env: Record<string, string>;
  before(async () => {
    server = await startRecordingServer();
    writeFileSync(secretFile, randomBytes(32).toString('base64url'), { mode: 0o600 });
    env = { LINKVAULT_PUBLIC_URL: server.url, LINKVAULT_SANDBOX: 'true', LINKVAULT_PORT: '0' };
  });
  after(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  // Arguments that would make each command act, so that only --help stops it.
  const acting: Record<string, string[]> = {
    'links show': ['lnk_x'],
    'links revoke': ['lnk_x', '--yes'],
    'grants delete': ['grt_x', '--yes'],
    'revocations status': ['job_x'],
    'revocations create': ['--tenant', 'acme', '--reason', 'r', '--yes'],
    'sessions create': ['--tenant', 'acme', '--user', 'u1'],
    'grants create': ['--for', 's', '--tenant', 'acme', '--purpose', 'p'],
    rewrap: ['--yes'],
  };
  const httpFlags = (name: string): string[] =>
    /^(sessions|links|grants|revocations) /.test(name)
      ? ['--service', 'ops', '--kid', 'k1', '--key-file', secretFile]
      : [];

  for (const { name } of COMMANDS) {
    for (const flag of ['--help', '-h']) {
      test(`when "${name} ${flag}" is run, then it prints the usage, exits 0 and does nothing else`, async () => {
        const before = server.requests.length;
        const args = [...name.split(' '), ...(acting[name] ?? []), ...httpFlags(name), flag];
        const outcome = await runBin(args, { cwd: dir, env });
        assert.equal(outcome.stderr, '');
        assert.equal(outcome.code, 0);
        assert.match(outcome.stdout, new RegExp(`^usage: linkvault ${name}\\b`));
        assert.match(outcome.stdout, /-h, --help +show this help and exit/);
        assert.equal(server.requests.length, before, 'no request reached linkvault');
        assert.deepEqual(readdirSync(dir), ['secret'], 'no file was created');
      });
    }
  }

  test('when --help comes before other arguments or with unknown options, then help still wins', async () => {
    const outcome = await runBin(['rewrap', '--help', '--frobnicate'], { cwd: dir, env });
    assert.equal(outcome.code, 0);
    assert.match(outcome.stdout, /^usage: linkvault rewrap \[options\]/);
    assert.deepEqual(readdirSync(dir), ['secret']);
  });

  test('when a group is named with --help, then its commands are listed; without a command, exit 2', async () => {
    const help = await runBin(['grants', '--help'], { cwd: dir, env });
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^usage: linkvault grants <list\|create\|delete> \[options\]\n/);
    const bare = await runBin(['grants'], { cwd: dir, env });
    assert.equal(bare.code, 2);
    assert.equal(bare.stdout, '');
    assert.match(bare.stderr, /^linkvault grants: which command\?\n/);
  });

  test('when --version or -V is given, then it prints the package version and exits 0', async () => {
    const { version } = (await import('../../package.json', { with: { type: 'json' } })).default;
    for (const flag of ['--version', '-V']) {
      const outcome = await runBin([flag], { cwd: dir, env });
      assert.deepEqual(outcome, { code: 0, stdout: `linkvault ${version}\n`, stderr: '' });
    }
  });

  test('when an option is unknown or an argument missing, then it exits 2 naming it, with the usage line', async () => {
    const unknown = await runBin(['links', 'list', '--frob'], { cwd: dir, env });
    assert.deepEqual(unknown, {
      code: 2,
      stdout: '',
      stderr:
        "linkvault links list: Unknown option '--frob'\nusage: linkvault links list [options]  (linkvault links list --help)\n",
    });
    const missing = await runBin(['links', 'show'], { cwd: dir, env });
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /^linkvault links show: missing LINK_ID\n/);
    const required = await runBin(
      ['sessions', 'create', '--tenant', 'acme', ...httpFlags('sessions create')],
      { cwd: dir, env },
    );
    assert.equal(required.code, 2);
    assert.match(required.stderr, /^linkvault sessions create: --user is required\n/);
    // A bulk revocation that names nothing is a usage error before anyone is asked to confirm.
    const unscoped = await runBin(
      ['revocations', 'create', '--reason', 'r', ...httpFlags('revocations create')],
      { cwd: dir, env },
    );
    assert.equal(unscoped.code, 2);
    assert.match(
      unscoped.stderr,
      /^linkvault revocations create: --tenant or --provider is required\n/,
    );
    assert.equal(server.requests.length, 0);
  });

  test('when a destructive command has no --yes and no terminal, then it exits 3 and sends nothing', async () => {
    for (const args of [
      ['links', 'revoke', 'lnk_x'],
      ['grants', 'delete', 'grt_x'],
      ['revocations', 'create', '--tenant', 'acme', '--reason', 'r'],
    ]) {
      const outcome = await runBin([...args, ...httpFlags(args.slice(0, 2).join(' '))], {
        cwd: dir,
        env,
      });
      assert.equal(outcome.code, 3, args.join(' '));
      assert.equal(outcome.stdout, '');
      assert.match(
        outcome.stderr,
        /not on a terminal, so not asked: this would .*\. Pass --yes to do it\n$/,
      );
    }
    const rewrap = await runBin(['rewrap'], { cwd: dir, env });
    assert.equal(rewrap.code, 3);
    assert.equal(server.requests.length, 0);
    assert.deepEqual(readdirSync(dir), ['secret'], 'rewrap opened no store');
  });
});

describe('the CLI start-up graph', () => {
  test('when src/cli.ts and src/cli/ import statically, then only node: built-ins and src/cli/ itself (the server graph loads in run)', async () => {
    const { readdirSync: list, readFileSync: read } = await import('node:fs');
    const root = join(import.meta.dirname, '../..');
    const files = ['src/cli.ts', ...list(join(root, 'src/cli')).map((f) => `src/cli/${f}`)];
    const found: string[] = [];
    for (const file of files) {
      const text = read(join(root, file), 'utf8');
      // Static value imports; `import type` is erased at run time.
      for (const m of text.matchAll(/^import\s+(?!type\s)[^'"]*?from\s*['"]([^'"]+)['"]/gm)) {
        const specifier = m[1]!;
        const inCli =
          (file === 'src/cli.ts' && specifier.startsWith('./cli/')) ||
          (file !== 'src/cli.ts' && /^\.\/[\w-]+\.js$/.test(specifier));
        if (!specifier.startsWith('node:') && !inCli) found.push(`${file} imports ${specifier}`);
      }
    }
    assert.ok(files.length >= 10);
    assert.deepEqual(found, []);
  });
});

describe('confirmation on a real terminal', () => {
  const hasScript = existsSync('/usr/bin/script');
  /** Runs the CLI under script(1), which gives it a pseudo-terminal, typing `typed` into it. */
  function onTerminal(
    args: readonly string[],
    typed: string,
    cwd: string,
    env: Record<string, string>,
  ): Promise<{ code: number | null; output: string }> {
    const command = [process.execPath, BIN, ...args]
      .map((a) => `'${a.replace(/'/g, "'\\''")}'`)
      .join(' ');
    return new Promise((resolve) => {
      const child = execFile(
        '/usr/bin/script',
        ['-qec', command, '/dev/null'],
        { cwd, env: { PATH: process.env.PATH ?? '', ...env }, timeout: 60_000 },
        (err, stdout) =>
          resolve({
            code: err ? (typeof err.code === 'number' ? err.code : null) : 0,
            output: stdout,
          }),
      );
      child.stdin!.end(typed);
    });
  }

  test(
    'when a person answers on a terminal, then "n" sends nothing (exit 3) and "y" goes on',
    { skip: !hasScript && 'script(1) is not installed' },
    async () => {
      const server = await startRecordingServer();
      const dir = mkdtempSync(join(tmpdir(), 'lv-cli-tty-'));
      try {
        writeFileSync(join(dir, 'secret'), randomBytes(32).toString('base64url'));
        const args = [
          'grants',
          'delete',
          'grt_1',
          '--url',
          server.url,
          '--service',
          'ops',
          '--kid',
          'k1',
          '--key-file',
          'secret',
        ];
        const no = await onTerminal(args, 'n\n', dir, {});
        assert.equal(no.code, 3);
        assert.match(
          no.output,
          /this will delete grant grt_1: its service can no longer obtain tokens through it\. Continue\? \[y\/N\]/,
        );
        assert.match(no.output, /not confirmed, nothing done/);
        assert.equal(server.requests.length, 0);
        const yes = await onTerminal(args, 'y\n', dir, {});
        // The recording server answers 500: the command went on and reports linkvault's failure.
        assert.equal(yes.code, 1);
        assert.deepEqual(server.requests, [{ method: 'DELETE', url: '/v1/grants/grt_1' }]);
      } finally {
        await server.close();
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});
