/**
 * What a `linkvault` command is, and what it is given. A command group (links, grants, …) is one
 * file under src/cli/ exporting a list of these; src/cli.ts lists the groups. Command files import
 * only light modules at the top: anything that opens a store, a key service or the HTTP server is
 * imported inside `run`, so `--help` and the HTTP commands start without the server graph.
 */

/** Exit codes, documented in docs/cli.md. */
export const EXIT = {
  /** Done. */
  ok: 0,
  /** Failed: invalid configuration, linkvault unreachable or answering 5xx, a start-up or rewrap failure. */
  failure: 1,
  /** Usage: unknown command or option, a missing or malformed argument. */
  usage: 2,
  /** A destructive command was not confirmed (no --yes and no terminal, or the answer was not "yes"). */
  notConfirmed: 3,
  /** linkvault refused the request (a 4xx problem: not found, forbidden, invalid request, …). */
  refused: 4,
} as const;

export interface CliContext {
  /** The environment to configure from (process.env in production; tests pass their own). */
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly cwd: string;
  /** Writes one line to stdout. */
  out(line: string): void;
  /** Writes one line to stderr. */
  err(line: string): void;
  /**
   * Asks a person a question on the terminal and resolves with the answer; null when there is no
   * terminal to ask on (stdin or stderr is not a TTY: a script, a pipe, CI). Absent: no terminal.
   */
  ask?(question: string): Promise<string | null>;
}

/** A wrong invocation: the dispatcher prints it with the command's usage line and exits 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export interface OptionSpec {
  readonly type: 'string' | 'boolean';
  readonly short?: string;
  /** May be given more than once (values are collected in order). */
  readonly multiple?: boolean;
  /** Shown in help after the option name, for string options (e.g. `ID`). */
  readonly value?: string;
  readonly description: string;
}

export interface ArgumentSpec {
  readonly name: string;
  readonly description: string;
}

/** The parsed command line of one command. */
export interface CommandInput {
  readonly positionals: readonly string[];
  /** Options by long name: string, string[] (multiple), boolean; absent when not given. */
  readonly options: Readonly<Record<string, string | boolean | string[] | undefined>>;
}

export interface CliCommand {
  /** Words after `linkvault`: `check-config`, `links list`, … */
  readonly name: string;
  /** One line for `linkvault help`. */
  readonly summary: string;
  /** Positional arguments, all required, in order. */
  readonly arguments?: readonly ArgumentSpec[];
  readonly options?: Readonly<Record<string, OptionSpec>>;
  /** Extra paragraphs for `--help`. */
  readonly details?: readonly string[];
  /**
   * Set for commands that destroy or rewrite something: the command asks on a terminal, needs
   * `--yes` otherwise. The text says what will happen (`revoke link lnk_… at linkvault and the provider`).
   */
  readonly confirm?: (input: CommandInput) => string;
  /** Runs the command; resolves to the exit code. Throw ConfigError for bad configuration, UsageError for bad use. */
  run(input: CommandInput, ctx: CliContext): Promise<number>;
}

/** Options every command takes (handled by the dispatcher). */
export const HELP_OPTION: Readonly<Record<string, OptionSpec>> = {
  help: { type: 'boolean', short: 'h', description: 'show this help and exit (does nothing else)' },
};

/** `--yes`, added to every command with `confirm`. */
export const YES_OPTION: Readonly<Record<string, OptionSpec>> = {
  yes: {
    type: 'boolean',
    short: 'y',
    description: 'do it without asking (required when not on a terminal)',
  },
};

/** `--json`, for commands that print data. */
export const JSON_OPTION: Readonly<Record<string, OptionSpec>> = {
  json: { type: 'boolean', description: 'print JSON (for scripts) instead of a table' },
};

/** A string option's value, or undefined. */
export function stringOption(input: CommandInput, name: string): string | undefined {
  const v = input.options[name];
  return typeof v === 'string' ? v : undefined;
}

/** A repeated string option's values ([] when not given). */
export function listOption(input: CommandInput, name: string): string[] {
  const v = input.options[name];
  return Array.isArray(v) ? v : typeof v === 'string' ? [v] : [];
}

/** A required string option's value; UsageError naming it when missing. */
export function requiredOption(input: CommandInput, name: string): string {
  const v = stringOption(input, name);
  if (v === undefined || v.trim() === '') throw new UsageError(`--${name} is required`);
  return v;
}
