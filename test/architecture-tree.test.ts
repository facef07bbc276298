import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { test } from 'node:test';

/**
 * docs/architecture.md's tree ("## The tree") names every folder under src/ and every file under
 * src/http/: a folder or a route file added without a word in the tree fails here.
 */

const ROOT = join(import.meta.dirname, '..');

function treeText(markdown: string): string {
  const section = markdown.split(/^## The tree$/m)[1];
  assert.ok(section, 'docs/architecture.md has a "## The tree" section');
  const block = /^```\n([\s\S]*?)^```$/m.exec(section);
  assert.ok(block, 'the tree section has a code block');
  return block[1]!;
}

function foldersUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .flatMap((e) => [join(dir, e.name), ...foldersUnder(join(dir, e.name))]);
}

/** The names of the folders and src/http files the tree does not mention. */
function missingFrom(tree: string): string[] {
  const missing: string[] = [];
  for (const folder of foldersUnder(join(ROOT, 'src'))) {
    const name = folder.split('/').pop()!;
    // `proxy/` as an entry, or in a parent's line (`export/audit-chain.ts`).
    if (!new RegExp(`(^|[\\s(])${name.replace(/[.-]/g, '\\$&')}/`, 'm').test(tree))
      missing.push(`${relative(ROOT, folder)}/`);
  }
  for (const file of readdirSync(join(ROOT, 'src/http')))
    if (!new RegExp(`(^|[\\s(,;])${file.replace(/[.-]/g, '\\$&')}([\\s),;]|$)`, 'm').test(tree))
      missing.push(`src/http/${file}`);
  return missing;
}

test('when the tree is read, then it names every folder under src/ and every file under src/http/', () => {
  const tree = treeText(readFileSync(join(ROOT, 'docs/architecture.md'), 'utf8'));
  assert.deepEqual(missingFrom(tree), []);
});

test('when a folder or an http file is left out of the tree, then the check names it (the check can fail)', () => {
  const tree = treeText(readFileSync(join(ROOT, 'docs/architecture.md'), 'utf8'));
  const without = tree
    .replace(/^ {4}proxy\/ .*$/m, '')
    .replaceAll('proxy-routes.ts', 'the proxy route');
  assert.deepEqual(missingFrom(without), ['src/links/proxy/', 'src/http/proxy-routes.ts']);
});
