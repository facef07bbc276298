import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

/** `node bin/linkvault.js` as a child process, with only the given environment (plus PATH). */

export const BIN = join(import.meta.dirname, '../../bin/linkvault.js');

export interface CliOutcome {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs the CLI in `cwd` with stdin closed (not a terminal). */
export function runBin(
  args: readonly string[],
  options: { readonly cwd: string; readonly env?: Readonly<Record<string, string>> },
): Promise<CliOutcome> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [BIN, ...args],
      { cwd: options.cwd, env: { PATH: process.env.PATH ?? '', ...options.env }, timeout: 60_000 },
      (err, stdout, stderr) => {
        resolve({
          code: err ? (typeof err.code === 'number' ? err.code : null) : 0,
          stdout,
          stderr,
        });
      },
    );
    child.stdin?.end();
  });
}

/** An HTTP server that records every request and answers 500: no command under test should reach it. */
export async function startRecordingServer(): Promise<{
  url: string;
  requests: { method: string; url: string }[];
  close(): Promise<void>;
}> {
  const requests: { method: string; url: string }[] = [];
  const server = createServer((req: IncomingMessage, res) => {
    requests.push({ method: req.method ?? '', url: req.url ?? '' });
    res.statusCode = 500;
    res.end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

/** The CLI pointed at one running linkvault as crm-sync (HS256 key from the environment). */
export interface CliAgainst {
  /** `--service crm-sync --kid crm-hs --key-env LV_TEST_CRM_SECRET` */
  readonly asCrm: readonly string[];
  /** Runs the CLI with the linkvault's URL and the key in its environment (plus `env`). */
  cli(args: readonly string[], env?: Record<string, string>): Promise<CliOutcome>;
  /** The JSON a command printed; asserts it succeeded without a word on stderr. */
  json(outcome: CliOutcome): Record<string, unknown>;
  /** What linkvault itself answers `path` for crm-sync, to compare the CLI with. */
  api(path: string): Promise<unknown>;
}

export function cliAgainst(target: {
  readonly dir: string;
  readonly url: string;
  readonly crmSecret: string;
  readonly bearer: (kid: string) => string;
}): CliAgainst {
  const env = { LV_TEST_CRM_SECRET: target.crmSecret, LINKVAULT_PUBLIC_URL: target.url };
  return {
    asCrm: ['--service', 'crm-sync', '--kid', 'crm-hs', '--key-env', 'LV_TEST_CRM_SECRET'],
    cli: (args, extra = {}) => runBin([...args], { cwd: target.dir, env: { ...env, ...extra } }),
    json(outcome) {
      assert.equal(outcome.stderr, '');
      assert.equal(outcome.code, 0);
      return JSON.parse(outcome.stdout) as Record<string, unknown>;
    },
    async api(path) {
      const res = await fetch(`${target.url}${path}`, {
        headers: { authorization: target.bearer('crm-hs') },
      });
      assert.equal(res.status, 200);
      return res.json();
    },
  };
}
