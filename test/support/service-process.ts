import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { providerEnvName } from '../../src/config.js';
import type { TestServices } from './service-jwt.js';

/**
 * The real service as a child process (`node bin/linkvault.js serve`), for tests that need more
 * than one process, a signal (SIGKILL, SIGSTOP, SIGTERM) or a restart, and for the benchmark.
 * Every process started here is SIGKILLed when the test process exits, so a failed test never
 * leaves one behind.
 */

const BIN = join(import.meta.dirname, '../../bin/linkvault.js');
const STOP_TIMEOUT_MS = 5000;
const live = new Set<ChildProcess>();
let exitHookInstalled = false;

type LogLine = Record<string, unknown>;

export interface ServiceProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** The port it listens on. */
  readonly port: number;
  readonly url: string;
  /** Every stdout log line so far, parsed. */
  readonly lines: LogLine[];
  /** Everything written to stderr so far. */
  stderr(): string;
  /** Resolves with the first stdout log line (past or future) that matches. */
  waitForLine(match: (line: LogLine) => boolean): Promise<LogLine>;
  /** Resolves when the process has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Kills it (SIGKILL) if still running, without waiting; for cleanup after a failed test. */
  kill(): void;
  /** SIGKILL (no shutdown at all: a crash) and resolves once it has exited. */
  crash(): Promise<void>;
  /** Freezes (SIGSTOP) or thaws (SIGCONT) the process. */
  pause(): void;
  resume(): void;
  /** Graceful stop: SIGCONT, SIGTERM, SIGKILL after 5 s; resolves once it has exited. Idempotent. */
  stop(): Promise<void>;
}

export interface StartServiceProcessOptions {
  readonly cwd: string;
  /** The whole environment besides PATH (nothing else is inherited). */
  readonly env?: Readonly<Record<string, string>>;
  /** Node flags for the child, e.g. `--cpu-prof`. */
  readonly nodeArgs?: readonly string[];
  /**
   * The line that says it is ready; default the info line `linkvault listening on port N`. A
   * process logging above info (the benchmark) never writes that one: give a fixed LINKVAULT_PORT
   * and another line here.
   */
  readonly ready?: (line: LogLine) => boolean;
}

const isListening = (line: LogLine): boolean =>
  typeof line.msg === 'string' && line.msg.startsWith('linkvault listening on port ');

function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of live) child.kill('SIGKILL');
  });
}

/**
 * Spawns the real service in `cwd` with only `env` (plus PATH) on a free loopback port (port 0)
 * unless env says otherwise, and resolves once it is ready; rejects, with its stderr, if it exits first.
 */
export async function startServiceProcess(
  options: StartServiceProcessOptions,
): Promise<ServiceProcess> {
  installExitHook();
  const env = {
    PATH: process.env.PATH ?? '',
    LINKVAULT_PORT: '0',
    LINKVAULT_HOST: '127.0.0.1',
    ...options.env,
  };
  const child = spawn(process.execPath, [...(options.nodeArgs ?? []), BIN, 'serve'], {
    cwd: options.cwd,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(child);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      live.delete(child);
      resolve({ code, signal });
    });
  });

  const lines: LogLine[] = [];
  let waiters: { match: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString('utf8');
  });
  createInterface({ input: child.stdout! }).on('line', (text) => {
    let line: LogLine;
    try {
      line = JSON.parse(text) as LogLine;
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
  const waitForLine = (match: (l: LogLine) => boolean): Promise<LogLine> => {
    const found = lines.find(match);
    if (found) return Promise.resolve(found);
    return new Promise((resolve) => waiters.push({ match, resolve }));
  };

  const ready = waitForLine(options.ready ?? isListening);
  const outcome = await Promise.race([ready, exited.then((e) => ({ exitedEarly: e }))]);
  if ('exitedEarly' in outcome) {
    throw new Error(
      `the service exited before it was ready (${JSON.stringify(outcome.exitedEarly)}): ${stderr}`,
    );
  }
  const port = options.ready ? Number(env.LINKVAULT_PORT) : Number(outcome.port);
  if (!(port > 0)) {
    child.kill('SIGKILL');
    throw new Error(
      'startServiceProcess: with a custom ready line, give LINKVAULT_PORT (a free port)',
    );
  }

  let stopped: Promise<void> | undefined;
  return {
    child,
    pid: child.pid!,
    port,
    url: `http://127.0.0.1:${port}`,
    lines,
    stderr: () => stderr,
    waitForLine,
    exited,
    kill: () => {
      if (isRunning(child)) child.kill('SIGKILL');
    },
    async crash() {
      if (isRunning(child)) child.kill('SIGKILL');
      await exited;
    },
    pause: () => void child.kill('SIGSTOP'),
    resume: () => void child.kill('SIGCONT'),
    stop: () =>
      (stopped ??= (async () => {
        if (!isRunning(child)) return;
        child.kill('SIGCONT');
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
        await exited;
        clearTimeout(timer);
      })()),
  };
}

export interface ServiceConfigOptions {
  /** Where the files go (the service's working directory). */
  readonly dir: string;
  readonly services: TestServices;
  /** Catalogue entries (snake_case, http:// allowed) and the client credentials the operator would set. */
  readonly providers: readonly {
    readonly entry: Record<string, unknown>;
    readonly clientId: string;
    readonly clientSecret: string;
  }[];
}

/**
 * Writes services.json and providers.json into `dir` and returns the environment that configures
 * the service with them, as an operator would: NODE_ENV=test, the sandbox off, http:// provider
 * URLs allowed, the master key file `dir`/master.key, each provider's credentials in its
 * LINKVAULT_PROVIDER_<ID>_CLIENT_ID/SECRET, and the services' HMAC secrets. Add the store's variables.
 */
export function writeServiceConfig(options: ServiceConfigOptions): Record<string, string> {
  const servicesFile = join(options.dir, 'services.json');
  const providersFile = join(options.dir, 'providers.json');
  writeFileSync(servicesFile, JSON.stringify(options.services.servicesFile));
  writeFileSync(
    providersFile,
    JSON.stringify({ providers: options.providers.map((p) => p.entry) }),
  );
  const env: Record<string, string> = {
    ...options.services.env,
    NODE_ENV: 'test',
    LINKVAULT_SANDBOX: 'false',
    LINKVAULT_ALLOW_INSECURE_PROVIDER_URLS: 'true',
    LINKVAULT_LOCAL_KEY_FILE: join(options.dir, 'master.key'),
    LINKVAULT_SERVICES_FILE: servicesFile,
    LINKVAULT_PROVIDERS_FILE: providersFile,
  };
  for (const p of options.providers) {
    const name = providerEnvName(String(p.entry.id));
    env[`LINKVAULT_PROVIDER_${name}_CLIENT_ID`] = p.clientId;
    env[`LINKVAULT_PROVIDER_${name}_CLIENT_SECRET`] = p.clientSecret;
  }
  return env;
}
