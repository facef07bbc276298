import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { asksForHelp, optionsOf, parseCommandLine } from './cli/args.js';
import { checkConfigCommands } from './cli/check-config.js';
import { EXIT, UsageError, type CliCommand, type CliContext } from './cli/command.js';
import { devTokenCommands } from './cli/dev-token.js';
import { grantCommands } from './cli/grants.js';
import { linkCommands } from './cli/links.js';
import { revocationCommands } from './cli/revocations.js';
import { webhookCommands } from './cli/webhooks.js';
import { rewrapCommands } from './cli/rewrap.js';
import { auditCommands } from './cli/audit.js';
import { serveCommands } from './cli/serve.js';
import { sessionCommands } from './cli/sessions.js';

/**
 * `linkvault <command> [options]`. Commands live in src/cli/, one file per group, each a list of
 * CliCommand; add a group by writing its file and appending it to GROUPS. Command files import
 * only light modules at the top (the server graph is imported inside `run`), so `--help`,
 * `--version` and the HTTP commands start fast. Every command takes `--help` (and `-h`) and then
 * does nothing else; commands with `confirm` ask on a terminal or need `--yes`. Exit codes: EXIT
 * in src/cli/command.ts, documented in docs/cli.md. An invalid configuration ends the process with
 * exactly one line, `linkvault: invalid configuration: <VARIABLE>: <problem>`, and exit code 1
 * (STYLE: broken start-up invariants exit non-zero with one clear line).
 */

export type { CliCommand, CliContext } from './cli/command.js';

const help: CliCommand = {
  name: 'help',
  summary: 'show this help (`linkvault help COMMAND` for one command)',
  async run(input, ctx) {
    const topic = input.positionals.join(' ');
    if (topic !== '') return printTopicHelp(topic, ctx, 'out');
    ctx.out('usage: linkvault <command> [options]    (no command: serve)');
    ctx.out('');
    const width = Math.max(...COMMANDS.map((c) => c.name.length));
    for (const command of COMMANDS) ctx.out(`  ${command.name.padEnd(width)}  ${command.summary}`);
    ctx.out('');
    ctx.out('Every command takes --help. linkvault --version prints the version.');
    ctx.out(
      'Configuration comes from the environment; see config/example.env and docs/configuration.md.',
    );
    ctx.out(
      'Exit codes: 0 ok, 1 failure, 2 usage, 3 not confirmed, 4 refused by linkvault (docs/cli.md).',
    );
    return EXIT.ok;
  },
};

/** The command groups, in the order `linkvault help` lists them. */
const GROUPS: readonly (readonly CliCommand[])[] = [
  serveCommands,
  checkConfigCommands,
  rewrapCommands,
  devTokenCommands,
  sessionCommands,
  linkCommands,
  grantCommands,
  revocationCommands,
  webhookCommands,
  auditCommands,
  [help],
];

/** Every command, flat. */
export const COMMANDS: readonly CliCommand[] = GROUPS.flat();

function packageVersion(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const file = join(dir, 'package.json');
    if (existsSync(file))
      return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
    if (dirname(dir) === dir) return 'unknown';
  }
}

/** The `--help` text of one command. */
export function commandHelp(command: CliCommand): string[] {
  const args = (command.arguments ?? []).map((a) => ` ${a.name}`).join('');
  const lines = [`usage: linkvault ${command.name}${args} [options]`, '', command.summary];
  if (command.details) lines.push('', ...command.details);
  if (command.confirm)
    lines.push(
      '',
      'Asks for confirmation on a terminal; elsewhere it needs --yes (exit 3 without).',
    );
  if (command.arguments?.length) {
    lines.push('', 'arguments:');
    for (const a of command.arguments) lines.push(`  ${a.name.padEnd(24)}${a.description}`);
  }
  lines.push('', 'options:');
  for (const [name, o] of Object.entries(optionsOf(command))) {
    const flag = `${o.short ? `-${o.short}, ` : '    '}--${name}${o.type === 'string' ? ` ${o.value ?? 'VALUE'}` : ''}`;
    lines.push(`  ${flag.padEnd(24)}${o.description}${o.multiple ? ' (repeatable)' : ''}`);
  }
  return lines;
}

/** Help for `help TOPIC`: one command, or the commands of a group (`links`). */
function printTopicHelp(topic: string, ctx: CliContext, stream: 'out' | 'err'): number {
  const write = (line: string): void => ctx[stream](line);
  const command = COMMANDS.find((c) => c.name === topic);
  if (command) {
    for (const line of commandHelp(command)) write(line);
    return EXIT.ok;
  }
  const members = COMMANDS.filter((c) => c.name.startsWith(`${topic} `));
  if (members.length === 0) {
    ctx.err(`linkvault: unknown command "${topic}" (try: linkvault help)`);
    return EXIT.usage;
  }
  write(
    `usage: linkvault ${topic} <${members.map((c) => c.name.slice(topic.length + 1)).join('|')}> [options]`,
  );
  write('');
  const width = Math.max(...members.map((c) => c.name.length));
  for (const c of members) write(`  ${c.name.padEnd(width)}  ${c.summary}`);
  write('');
  write(`linkvault ${topic} <command> --help shows a command's options.`);
  return EXIT.ok;
}

/** The single line for an error that stops a command, and its exit code; never a stack trace. */
async function describeFailure(err: unknown): Promise<{ line: string; code: number }> {
  const [{ ConfigError }, { isLinkvaultError }, { ApiError, UnreachableError }] = await Promise.all(
    [import('./config.js'), import('./errors.js'), import('./cli/linkvault-api.js')],
  );
  if (err instanceof ConfigError)
    return {
      line: `linkvault: invalid configuration: ${err.variable}: ${err.problem}`,
      code: EXIT.failure,
    };
  if (err instanceof ApiError) {
    const id = err.requestId ? ` (request id ${err.requestId})` : '';
    // linkvault gives every refused token the same answer; the reason is in its log (docs/service-auth.md).
    const hint =
      err.status === 401 ? '; linkvault logs the reason at debug level with this request id' : '';
    return {
      line: `linkvault: linkvault answered ${err.status} ${err.code}${err.detail ? `: ${err.detail}` : ''}${id}${hint}`,
      code: err.status >= 400 && err.status < 500 ? EXIT.refused : EXIT.failure,
    };
  }
  if (err instanceof UnreachableError)
    return { line: `linkvault: ${err.message}`, code: EXIT.failure };
  if (isLinkvaultError(err))
    return {
      line: `linkvault: cannot start: ${err.code}: ${err.detail ?? err.title}`,
      code: EXIT.failure,
    };
  const message = err instanceof Error ? err.message : String(err);
  return { line: `linkvault: failed: ${message.split('\n')[0]}`, code: EXIT.failure };
}

/** Finds the command named by the leading words of `args` (the longest match). */
function findCommand(
  args: readonly string[],
): { command: CliCommand; rest: readonly string[] } | null {
  let found: { command: CliCommand; rest: readonly string[] } | null = null;
  for (const command of COMMANDS) {
    const words = command.name.split(' ');
    if (
      words.every((w, i) => args[i] === w) &&
      (!found || words.length > found.command.name.split(' ').length)
    )
      found = { command, rest: args.slice(words.length) };
  }
  return found;
}

function usageFailure(command: CliCommand, message: string, ctx: CliContext): number {
  const args = (command.arguments ?? []).map((a) => ` ${a.name}`).join('');
  ctx.err(`linkvault ${command.name}: ${message}`);
  ctx.err(`usage: linkvault ${command.name}${args} [options]  (linkvault ${command.name} --help)`);
  return EXIT.usage;
}

/** Runs `linkvault <args>`; resolves to the exit code (EXIT: 0 ok, 1 failure, 2 usage, 3 not confirmed, 4 refused). */
export async function runCli(args: readonly string[], ctx: CliContext): Promise<number> {
  const [first] = args;
  if (first === '--version' || first === '-V') {
    ctx.out(`linkvault ${packageVersion()}`);
    return EXIT.ok;
  }
  if (first === '--help' || first === '-h') return help.run({ positionals: [], options: {} }, ctx);
  const found = findCommand(args.length === 0 ? ['serve'] : args);
  if (!found) {
    const group = COMMANDS.some((c) => c.name.startsWith(`${first} `));
    if (group && (args.length === 1 || args[1]!.startsWith('-'))) {
      // `linkvault links` or `linkvault links --help`: the group's commands.
      if (asksForHelp(args.slice(1))) return printTopicHelp(first!, ctx, 'out');
      ctx.err(`linkvault ${first}: which command?`);
      printTopicHelp(first!, ctx, 'err');
      return EXIT.usage;
    }
    const shown = group ? `${first} ${args[1]}` : first;
    ctx.err(`linkvault: unknown command "${shown}" (try: linkvault help)`);
    return EXIT.usage;
  }
  const { command, rest } = found;
  if (asksForHelp(rest)) {
    for (const line of commandHelp(command)) ctx.out(line);
    return EXIT.ok;
  }
  try {
    const input =
      command === help ? { positionals: rest, options: {} } : parseCommandLine(command, rest);
    if (command.confirm && input.options.yes !== true) {
      const what = command.confirm(input);
      const question = `linkvault ${command.name}: this will ${what}. Continue? [y/N] `;
      const answer = ctx.ask ? await ctx.ask(question) : null;
      if (answer === null) {
        ctx.err(
          `linkvault ${command.name}: not on a terminal, so not asked: this would ${what}. Pass --yes to do it`,
        );
        return EXIT.notConfirmed;
      }
      if (!/^(y|yes)$/i.test(answer.trim())) {
        ctx.err(`linkvault ${command.name}: not confirmed, nothing done`);
        return EXIT.notConfirmed;
      }
    }
    return await command.run(input, ctx);
  } catch (err) {
    if (err instanceof UsageError) return usageFailure(command, err.message, ctx);
    const { line, code } = await describeFailure(err);
    ctx.err(line);
    return code;
  }
}

/** Asks on the terminal (stdin and stderr both TTYs), else resolves null. */
async function askOnTerminal(question: string): Promise<string | null> {
  if (!process.stdin.isTTY || !process.stderr.isTTY) return null;
  const { createInterface } = await import('node:readline/promises');
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return await rl.question(question);
  } finally {
    rl.close();
  }
}

/** The process entry: bin/linkvault.js and `tsx src/cli.ts` both come here. */
export async function main(argv: readonly string[] = process.argv.slice(2)): Promise<void> {
  const code = await runCli(argv, {
    env: process.env,
    cwd: process.cwd(),
    out: (line) => process.stdout.write(`${line}\n`),
    err: (line) => process.stderr.write(`${line}\n`),
    ask: askOnTerminal,
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
