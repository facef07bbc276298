import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { ConfigError, loadConfig, type Config } from './config.js';
import { isLinkvaultError } from './errors.js';

/**
 * `linkvault <command>`. Every command loads the configuration first; an invalid one ends the
 * process with exactly one line, `linkvault: invalid configuration: <VARIABLE>: <problem>`, and
 * exit code 1 (STYLE: broken start-up invariants exit non-zero with one clear line).
 */

export interface CliContext {
  /** The environment to configure from (process.env in production; tests pass their own). */
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly cwd: string;
  /** Writes one line to stdout. */
  out(line: string): void;
  /** Writes one line to stderr. */
  err(line: string): void;
}

export interface CliCommand {
  readonly name: string;
  /** One line for `linkvault help`. */
  readonly summary: string;
  /** Runs the command; resolves to the process exit code. Throw ConfigError for bad configuration. */
  run(args: readonly string[], ctx: CliContext): Promise<number>;
}

function configOf(ctx: CliContext): Config {
  return loadConfig(ctx.env, ctx.cwd);
}

function describe(config: Config): string {
  const store =
    config.store.kind === 'sqlite'
      ? `sqlite (${config.store.sqlitePath})`
      : config.store.clusterNodes
        ? `redis cluster (${config.store.clusterNodes.length} seeds)`
        : 'redis';
  const keys =
    config.keys.kind === 'local'
      ? `local (${config.keys.localKeyFile})`
      : `aws-kms (${config.keys.kmsKeyId})`;
  return [
    `env=${config.production ? 'production' : config.nodeEnv}`,
    `port=${config.port}`,
    `public_url=${config.publicUrl}`,
    `store=${store}`,
    `keys=${keys}`,
    `services=${config.services.length}`,
    `provider_credentials=${config.providerCredentials.size}`,
    `sandbox=${config.sandbox}`,
  ].join(' ');
}

/** Resolves with the first SIGTERM or SIGINT. */
function waitForStopSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      // A second signal while draining means "now": exit without waiting for requests in flight.
      process.once('SIGTERM', () => process.exit(1));
      process.once('SIGINT', () => process.exit(1));
      resolve(signal);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}

const serve: CliCommand = {
  name: 'serve',
  summary: 'start the HTTP service (default); SIGTERM/SIGINT shut it down gracefully',
  async run(_args, ctx) {
    const config = configOf(ctx);
    const { startService } = await import('./main.js');
    const service = await startService(config);
    const signal = await waitForStopSignal();
    service.log.info({ signal }, 'stop signal received');
    await service.close();
    return 0;
  },
};

const checkConfig: CliCommand = {
  name: 'check-config',
  summary: 'validate the configuration and print a one-line summary',
  async run(_args, ctx) {
    const config = configOf(ctx);
    ctx.out(`linkvault: configuration ok: ${describe(config)}`);
    return 0;
  },
};

const rewrap: CliCommand = {
  name: 'rewrap',
  summary: "re-wrap every link's data keys under the current master/KMS key (after a key rotation)",
  async run(_args, ctx) {
    const config = configOf(ctx);
    const [{ createLogger }, { buildAdapters }, { rewrapAll }] = await Promise.all([
      import('./log.js'),
      import('./features.js'),
      import('./links/sealing/rewrap.js'),
    ]);
    // Logs go to stderr so that stdout carries only the result line.
    const log = createLogger({ level: config.logLevel, destination: process.stderr });
    const { store, vault, keys, close } = await buildAdapters(config, { log });
    try {
      const r = await rewrapAll({ store, vault, keys, log });
      ctx.out(
        `linkvault: rewrap done: scanned=${r.scanned} rewrapped=${r.rewrapped} skipped=${r.skipped} conflicts=${r.conflicts} failed=${r.failed}` +
          ` jobs_scanned=${r.jobsScanned} jobs_rewrapped=${r.jobsRewrapped} jobs_skipped=${r.jobsSkipped} job_conflicts=${r.jobConflicts} jobs_failed=${r.jobsFailed}` +
          ` jobs_on_old_key=${r.jobsOnOldKey} current_key=${keys.currentKeyId()}`,
      );
      // Queued work (pending provider revocations) that still carries a sealed copy under an old key
      // (leased by a worker at the time, or of a kind rewrap cannot re-wrap): the old key must outlive
      // it, or that revocation could no longer reach the provider.
      if (r.jobsOnOldKey > 0)
        ctx.err(
          `linkvault: ${r.jobsOnOldKey} queued job(s) still hold data keys under an old key: keep the old key and run rewrap again until it reports jobs_on_old_key=0`,
        );
      // Links or jobs left as they were still open under their old key; say so through the exit code.
      return r.failed > 0 || r.jobsFailed > 0 ? 1 : 0;
    } finally {
      await close();
    }
  },
};

const devToken: CliCommand = {
  name: 'dev-token',
  summary:
    'print a 300-second service JWT for the development service "dev" (sandbox on, outside production)',
  async run(_args, ctx) {
    const config = configOf(ctx);
    const { signDevToken } = await import('./auth/dev-service.js');
    ctx.out(signDevToken(config));
    return 0;
  },
};

const help: CliCommand = {
  name: 'help',
  summary: 'show this help',
  async run(_args, ctx) {
    ctx.out('usage: linkvault [command]');
    ctx.out('');
    for (const command of COMMANDS) ctx.out(`  ${command.name.padEnd(14)} ${command.summary}`);
    ctx.out('');
    ctx.out(
      'Configuration comes from the environment; see config/example.env and docs/configuration.md.',
    );
    return 0;
  },
};

/**
 * The subcommand table. Add a command by appending an entry; import heavy modules inside `run`
 * (dynamic import) so `check-config` and `help` stay fast and do not open stores.
 */
export const COMMANDS: CliCommand[] = [serve, checkConfig, rewrap, devToken, help];

/** The single line for an error that stops a command; never a stack trace. */
function describeFailure(err: unknown): string {
  if (err instanceof ConfigError)
    return `linkvault: invalid configuration: ${err.variable}: ${err.problem}`;
  if (isLinkvaultError(err))
    return `linkvault: cannot start: ${err.code}: ${err.detail ?? err.title}`;
  const message = err instanceof Error ? err.message : String(err);
  return `linkvault: failed: ${message.split('\n')[0]}`;
}

/** Runs `linkvault <args>`; resolves to the exit code (0 ok, 1 failure, 2 usage). */
export async function runCli(args: readonly string[], ctx: CliContext): Promise<number> {
  const [name = 'serve', ...rest] = args;
  const command =
    COMMANDS.find((c) => c.name === name) ??
    (name === '--help' || name === '-h' ? help : undefined);
  if (!command) {
    ctx.err(`linkvault: unknown command "${name}" (try: linkvault help)`);
    return 2;
  }
  try {
    return await command.run(rest, ctx);
  } catch (err) {
    ctx.err(describeFailure(err));
    return 1;
  }
}

/** The process entry: bin/linkvault.js and `tsx src/cli.ts` both come here. */
export async function main(argv: readonly string[] = process.argv.slice(2)): Promise<void> {
  const code = await runCli(argv, {
    env: process.env,
    cwd: process.cwd(),
    out: (line) => process.stdout.write(`${line}\n`),
    err: (line) => process.stderr.write(`${line}\n`),
  });
  process.exitCode = code;
  // Whatever a library left scheduled must not keep a stopped service alive (e.g. under `docker stop`).
  setTimeout(() => process.exit(code), 2000).unref();
}

function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return import.meta.url === pathToFileURL(realpathSync(script)).href;
  } catch {
    return false;
  }
}

if (isEntryPoint()) await main();
