import type { CliContext } from './command.js';

/**
 * Output for people (aligned tables, `name  value` lists) and for scripts (`--json`: one JSON
 * document on stdout, exactly what linkvault answered).
 */

/** A cell as text: null/undefined as `-`, lists comma-separated, objects as compact JSON. */
export function cellText(value: unknown): string {
  if (value === null || value === undefined) return '-';
  if (Array.isArray(value)) return value.length === 0 ? '-' : value.map(cellText).join(',');
  if (typeof value === 'object') return JSON.stringify(value);
  // One line per row whatever the data holds.
  return String(value).replace(/[\r\n\t]+/g, ' ');
}

/** Prints rows under a header, columns padded to their widest cell; `empty` when there are no rows. */
export function printTable(
  ctx: Pick<CliContext, 'out'>,
  columns: readonly { readonly header: string; readonly value: (row: never) => unknown }[],
  rows: readonly unknown[],
  empty: string,
): void {
  if (rows.length === 0) {
    ctx.out(empty);
    return;
  }
  const cells = rows.map((row) => columns.map((c) => cellText(c.value(row as never))));
  const widths = columns.map((c, i) =>
    Math.max(c.header.length, ...cells.map((r) => r[i]!.length)),
  );
  const line = (parts: readonly string[]): string =>
    parts
      .map((p, i) => (i === parts.length - 1 ? p : p.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  ctx.out(line(columns.map((c) => c.header.toUpperCase())));
  for (const row of cells) ctx.out(line(row));
}

/** Prints `name  value` lines, names padded, for one object (a link, a grant, a job's status). */
export function printFields(
  ctx: Pick<CliContext, 'out'>,
  fields: readonly (readonly [string, unknown])[],
): void {
  const width = Math.max(...fields.map(([name]) => name.length));
  for (const [name, value] of fields) ctx.out(`${name.padEnd(width)}  ${cellText(value)}`);
}

/** Prints one JSON document (2-space indented) for scripts. */
export function printJson(ctx: Pick<CliContext, 'out'>, value: unknown): void {
  ctx.out(JSON.stringify(value, null, 2));
}
