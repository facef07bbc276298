import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ERROR_CATALOGUE } from '../src/errors.js';

const README = readFileSync(join(import.meta.dirname, '../README.md'), 'utf8');

/** The rows of the table under README's "## Errors" heading, in order. */
function readmeErrorRows(): string[] {
  const start = README.indexOf('\n## Errors\n');
  assert.notEqual(start, -1, 'README has an "## Errors" section');
  const end = README.indexOf('\n## ', start + 1);
  const section = README.slice(start, end === -1 ? undefined : end);
  return section.split('\n').filter((line) => /^\| `/.test(line));
}

function catalogueRows(): string[] {
  return Object.entries(ERROR_CATALOGUE).map(([code, entry]) => `| \`${code}\` | ${entry.status} | ${entry.title} |`);
}

test('when the README error table is compared with ERROR_CATALOGUE, then both list the same codes, statuses and titles', () => {
  const readme = readmeErrorRows();
  const catalogue = catalogueRows();
  const missingFromReadme = catalogue.filter((row) => !readme.includes(row));
  const unknownToCatalogue = readme.filter((row) => !catalogue.includes(row));
  const table = ['| code | status | title |', '|---|---|---|', ...catalogue].join('\n');
  assert.deepEqual(
    { missingFromReadme, unknownToCatalogue },
    { missingFromReadme: [], unknownToCatalogue: [] },
    `README "## Errors" is out of date; the table should read:\n${table}\n`,
  );
  assert.equal(new Set(readme).size, readme.length, 'no code is listed twice');
});

test('when a code is in the catalogue, then it is snake_case and its status is an HTTP error status', () => {
  for (const [code, entry] of Object.entries(ERROR_CATALOGUE)) {
    assert.match(code, /^[a-z]+(_[a-z]+)*$/, code);
    assert.ok(entry.status >= 400 && entry.status <= 599, `${code}: ${entry.status}`);
    assert.ok(entry.title.length > 0 && !entry.title.includes('|'), `${code}: title fits a table cell`);
  }
});
