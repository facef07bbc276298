import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { test } from 'node:test';

/**
 * One naming convention for log fields (docs/monitoring.md): snake_case. Every log call in src/
 * whose first argument is an object literal is read, and each of its top-level keys (written or
 * shorthand) must be snake_case. It found `keyFile`, `linkId` and `timeoutMs` when it was written.
 */

const root = join(import.meta.dirname, '..', '..');
const SNAKE = /^[a-z][a-z0-9_]*$/;
const CALL = /\b(?:log|logger)\??\.(?:trace|debug|info|warn|error|fatal|child)\(\s*\{/g;

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory()
      ? sources(join(dir, e.name))
      : e.name.endsWith('.ts')
        ? [join(dir, e.name)]
        : [],
  );
}

/** The text of the object literal opening at `start` (just after its `{`), at depth 0 only. */
function topLevelOf(text: string, start: number): string {
  let depth = 1;
  let out = '';
  let quote: string | null = null;
  for (let i = start; i < text.length; i++) {
    const ch = text[i]!;
    if (quote) {
      // Strings are kept (a quoted key is read back) with their commas blanked out.
      if (ch === '\\') i++;
      else if (ch === quote) quote = null;
      if (depth === 1) out += ch === ',' || ch === '\\' ? ' ' : ch;
      continue;
    }
    if (ch === "'" || ch === '"' || ch === '`') {
      quote = ch;
      if (depth === 1) out += ch;
      continue;
    }
    if ('{[('.includes(ch)) depth++;
    else if ('}])'.includes(ch)) {
      depth--;
      if (depth === 0) return out;
      continue;
    }
    if (depth === 1) out += ch;
  }
  return out;
}

/** Top-level keys of an object literal's depth-0 text (`a: 1, b, 'c-d': 2, ...rest`). */
export function keysOf(body: string): string[] {
  return body
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part !== '' && !part.startsWith('...'))
    .map((part) => /^['"]?([^'":\s]+)['"]?\s*(?::|$)/.exec(part)?.[1])
    .filter((key): key is string => key !== undefined);
}

test('the key reader sees written, quoted and shorthand keys and skips spreads and nested objects', () => {
  const text = "{ link_id: id, keyFile, 'x-y': 1, ...rest, nested: { innerName: 1 }, f: g(a, b) }";
  assert.deepEqual(keysOf(topLevelOf(text, 1)), ['link_id', 'keyFile', 'x-y', 'nested', 'f']);
});

test('every log field written in src/ is snake_case', () => {
  const offenders: string[] = [];
  let calls = 0;
  for (const file of sources(join(root, 'src'))) {
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(CALL)) {
      calls++;
      for (const key of keysOf(topLevelOf(text, m.index + m[0].length))) {
        if (!SNAKE.test(key)) {
          const line = text.slice(0, m.index).split('\n').length;
          offenders.push(`${relative(root, file)}:${line} ${key}`);
        }
      }
    }
  }
  assert.ok(calls > 50, `only ${calls} log calls found: the pattern no longer matches the code`);
  assert.deepEqual(offenders, []);
});
