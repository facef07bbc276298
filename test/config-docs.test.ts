import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

const root = join(import.meta.dirname, '..');
const read = (path: string): string => readFileSync(join(root, path), 'utf8');

/** Every variable name config.ts reads (string literals), so a new one cannot ship undocumented. */
function variablesReadByConfig(): string[] {
  const source = read('src/config.ts');
  const names = new Set<string>();
  for (const m of source.matchAll(/'((?:LINKVAULT|AWS)_[A-Z0-9_]+|NODE_ENV)'/g)) names.add(m[1]!);
  return [...names].sort();
}

/** Fallback names config.ts honours but documents under their primary name. */
const ALIASES = new Set(['AWS_DEFAULT_REGION', 'AWS_ENDPOINT_URL']);

test('when config.ts reads a variable, then config/example.env documents it', () => {
  const example = read('config/example.env');
  const missing = variablesReadByConfig().filter(
    (name) => !ALIASES.has(name) && !new RegExp(`^# ${name}=`, 'm').test(example),
  );
  assert.deepEqual(missing, []);
  assert.match(example, /^# LINKVAULT_PROVIDER_[A-Z]+_CLIENT_ID=/m);
  assert.match(example, /^# LINKVAULT_PROVIDER_[A-Z]+_CLIENT_SECRET=/m);
});

test('when config.ts reads a variable, then the docs/configuration.md table lists it', () => {
  const doc = read('docs/configuration.md');
  const rows = doc.split('\n').filter((line) => line.startsWith('| `'));
  const missing = variablesReadByConfig().filter(
    (name) => !ALIASES.has(name) && !rows.some((row) => row.startsWith(`| \`${name}\``)),
  );
  assert.deepEqual(missing, []);
  assert.ok(rows.some((row) => row.startsWith('| `LINKVAULT_PROVIDER_<ID>_CLIENT_ID`')));
});
