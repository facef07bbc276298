import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

/**
 * Spawns release-service-main.ts (the real token-release service) as a child process and resolves
 * once it listens. Every process started here is SIGKILLed when the test process exits.
 */

const ENTRY = join(import.meta.dirname, 'release-service-main.ts');
/** tsx by absolute URL: the child runs in a temp dir where a bare `tsx` does not resolve. */
const TSX = import.meta.resolve('tsx');
const live = new Set<ChildProcess>();
let hooked = false;

export interface ReleaseServiceProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly url: string;
  /** Parsed stdout log lines so far. */
  readonly lines: Record<string, unknown>[];
  stderr(): string;
  /** SIGTERM and wait for exit (SIGKILL after 5 s). Idempotent. */
  stop(): Promise<void>;
}

export async function startReleaseService(options: { cwd: string; env: Record<string, string>; nodeArgs?: readonly string[] }): Promise<ReleaseServiceProcess> {
  if (!hooked) {
    hooked = true;
    process.on('exit', () => {
      for (const c of live) c.kill('SIGKILL');
    });
  }
  const child = spawn(process.execPath, [...(options.nodeArgs ?? []), '--import', TSX, ENTRY], {
    cwd: options.cwd,
    env: { PATH: process.env.PATH ?? '', LINKVAULT_PORT: '0', LINKVAULT_HOST: '127.0.0.1', LINKVAULT_LOG_LEVEL: 'info', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  void exited.then(() => live.delete(child));
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString('utf8');
  });
  const lines: Record<string, unknown>[] = [];
  const listening = new Promise<number>((resolve) => {
    createInterface({ input: child.stdout! }).on('line', (text) => {
      let line: Record<string, unknown>;
      try {
        line = JSON.parse(text) as Record<string, unknown>;
      } catch {
        line = { msg: text };
      }
      lines.push(line);
      if (typeof line.msg === 'string' && line.msg.startsWith('linkvault listening')) resolve(Number(line.port));
    });
  });
  const port = await Promise.race([listening, exited.then(() => Promise.reject(new Error(`release service exited before listening: ${stderr}`)))]);
  let stopped: Promise<void> | undefined;
  return {
    child,
    pid: child.pid!,
    url: `http://127.0.0.1:${port}`,
    lines,
    stderr: () => stderr,
    stop: () =>
      (stopped ??= (async () => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill('SIGCONT');
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      })()),
  };
}
