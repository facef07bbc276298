import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const BIN = join(import.meta.dirname, '../../bin/linkvault.js');

export interface ServiceProcess {
  readonly child: ChildProcess;
  /** The port it listens on (read from its "listening" log line). */
  readonly port: number;
  readonly url: string;
  /** Every stdout log line so far, parsed. */
  readonly lines: Record<string, unknown>[];
  /** Everything written to stderr so far. */
  stderr(): string;
  /** Resolves with the first stdout log line (past or future) that matches. */
  waitForLine(match: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
  /** Resolves when the process has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Kills it (SIGKILL) if still running; for cleanup after a failed test. */
  kill(): void;
}

/**
 * Spawns the real service (`node bin/linkvault.js serve`) in `cwd` with only `env` (plus PATH),
 * on a free loopback port unless env says otherwise, and resolves once it listens.
 */
export async function startServiceProcess(options: { cwd: string; env?: Record<string, string> }): Promise<ServiceProcess> {
  const child = spawn(process.execPath, [BIN, 'serve'], {
    cwd: options.cwd,
    env: { PATH: process.env.PATH ?? '', LINKVAULT_PORT: '0', LINKVAULT_HOST: '127.0.0.1', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: Record<string, unknown>[] = [];
  let waiters: { match: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }[] = [];
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString('utf8');
  });
  createInterface({ input: child.stdout! }).on('line', (text) => {
    let line: Record<string, unknown>;
    try {
      line = JSON.parse(text) as Record<string, unknown>;
    } catch {
      line = { msg: text, unparsed: true };
    }
    lines.push(line);
    waiters = waiters.filter((w) => {
      if (!w.match(line)) return true;
      w.resolve(line);
      return false;
    });
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  const waitForLine = (match: (l: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> => {
    const found = lines.find(match);
    if (found) return Promise.resolve(found);
    return new Promise((resolve) => waiters.push({ match, resolve }));
  };

  const listening = waitForLine((l) => typeof l.msg === 'string' && l.msg.startsWith('linkvault listening'));
  const outcome = await Promise.race([listening, exited.then((e) => ({ exitedEarly: e }))]);
  if ('exitedEarly' in outcome) {
    throw new Error(`the service exited before listening (${JSON.stringify(outcome.exitedEarly)}): ${stderr}`);
  }
  const port = Number(outcome.port);
  return {
    child,
    port,
    url: `http://127.0.0.1:${port}`,
    lines,
    stderr: () => stderr,
    waitForLine,
    exited,
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}
