import { parseArgs } from 'node:util';
import {
  HELP_OPTION,
  UsageError,
  YES_OPTION,
  type CliCommand,
  type CommandInput,
  type OptionSpec,
} from './command.js';

/**
 * The argument parser: node:util's parseArgs (strict: unknown options and missing values are
 * usage errors), plus the command's positional arguments counted exactly. No dependency.
 */

/** Every option the command takes: its own, `--help`, and `--yes` when it asks for confirmation. */
export function optionsOf(command: CliCommand): Record<string, OptionSpec> {
  return { ...command.options, ...(command.confirm ? YES_OPTION : {}), ...HELP_OPTION };
}

/** True when `--help` or `-h` appears before a `--`: help wins over everything else on the line. */
export function asksForHelp(args: readonly string[]): boolean {
  for (const arg of args) {
    if (arg === '--') return false;
    if (arg === '--help' || arg === '-h') return true;
  }
  return false;
}

/** Parses the words after the command's name. Throws UsageError for anything it does not take. */
export function parseCommandLine(command: CliCommand, args: readonly string[]): CommandInput {
  const spec = optionsOf(command);
  const config: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> =
    {};
  for (const [name, o] of Object.entries(spec))
    config[name] = {
      type: o.type,
      ...(o.short === undefined ? {} : { short: o.short }),
      ...(o.multiple === undefined ? {} : { multiple: o.multiple }),
    };
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: [...args], options: config, allowPositionals: true, strict: true });
  } catch (err) {
    // parseArgs' messages name the option ("Unknown option '--frob'"); its code says which kind.
    const message = err instanceof Error ? err.message.split('\n')[0]! : String(err);
    throw new UsageError(message.replace(/\. To specify a positional argument.*$/, ''));
  }
  const expected = command.arguments ?? [];
  const positionals = parsed.positionals;
  if (positionals.length < expected.length)
    throw new UsageError(
      `missing ${expected
        .slice(positionals.length)
        .map((a) => a.name)
        .join(', ')}`,
    );
  if (positionals.length > expected.length)
    throw new UsageError(`unexpected argument "${positionals[expected.length]}"`);
  return {
    positionals,
    options: parsed.values as CommandInput['options'],
  };
}
