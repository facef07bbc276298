import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ERROR_CATALOGUE } from '../src/errors.js';

const ERRORS_DOC = readFileSync(join(import.meta.dirname, '../docs/errors.md'), 'utf8');

/** The rows of the table under docs/errors.md's "## Catalogue" heading, in order. */
function documentedErrorRows(): string[] {
  const start = ERRORS_DOC.indexOf('\n## Catalogue\n');
  assert.notEqual(start, -1, 'docs/errors.md has a "## Catalogue" section');
  const end = ERRORS_DOC.indexOf('\n## ', start + 1);
  const section = ERRORS_DOC.slice(start, end === -1 ? undefined : end);
  return section.split('\n').filter((line) => /^\| `/.test(line));
}

function catalogueRows(): string[] {
  return Object.entries(ERROR_CATALOGUE).map(
    ([code, entry]) => `| \`${code}\` | ${entry.status} | ${entry.title} |`,
  );
}

test('when the docs/errors.md error table is compared with ERROR_CATALOGUE, then both list the same codes, statuses and titles', () => {
  const documented = documentedErrorRows();
  const catalogue = catalogueRows();
  const missingFromDocs = catalogue.filter((row) => !documented.includes(row));
  const unknownToCatalogue = documented.filter((row) => !catalogue.includes(row));
  const table = ['| code | status | title |', '|---|---|---|', ...catalogue].join('\n');
  assert.deepEqual(
    { missingFromDocs, unknownToCatalogue },
    { missingFromDocs: [], unknownToCatalogue: [] },
    `docs/errors.md "## Catalogue" is out of date; the table should read:\n${table}\n`,
  );
  assert.equal(new Set(documented).size, documented.length, 'no code is listed twice');
});

test('when a code is in the catalogue, then it is snake_case and its status is an HTTP error status', () => {
  for (const [code, entry] of Object.entries(ERROR_CATALOGUE)) {
    assert.match(code, /^[a-z]+(_[a-z]+)*$/, code);
    assert.ok(entry.status >= 400 && entry.status <= 599, `${code}: ${entry.status}`);
    assert.ok(
      entry.title.length > 0 && !entry.title.includes('|'),
      `${code}: title fits a table cell`,
    );
  }
});
