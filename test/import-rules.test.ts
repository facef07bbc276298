import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, it } from 'node:test';

/**
 * The dependency rules that docs/architecture.md draws, checked against every import in src/
 * (static, dynamic and type-only): the domain stays free of frameworks and drivers, and each
 * inner folder depends only inward.
 */

const ROOT = join(import.meta.dirname, '..');
const SRC = join(ROOT, 'src');

interface Import {
  readonly file: string;
  readonly specifier: string;
  /** Repository path of a relative import (src/...), or null for a package. */
  readonly target: string | null;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return /\.(ts|js)$/.test(entry.name) ? [path] : [];
  });
}

const IMPORT =
  /(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)|(?:^|\n)\s*import\s*['"]([^'"]+)['"]/g;

function importsOf(path: string): Import[] {
  const text = readFileSync(path, 'utf8');
  const file = relative(ROOT, path);
  return [...text.matchAll(IMPORT)].map((m) => {
    const specifier = (m[1] ?? m[2] ?? m[3])!;
    const target = specifier.startsWith('.')
      ? relative(ROOT, join(path, '..', specifier)).replace(/\.js$/, '.ts')
      : null;
    return { file, specifier, target };
  });
}

const ALL = sourceFiles(SRC).flatMap(importsOf);
const under = (folder: string) => (i: Import) => i.file.startsWith(`src/${folder}/`);
const packageName = (specifier: string) =>
  specifier.startsWith('@') ? specifier.split('/').slice(0, 2).join('/') : specifier.split('/')[0]!;

function violations(from: (i: Import) => boolean, forbidden: (i: Import) => boolean): string[] {
  return ALL.filter((i) => from(i) && forbidden(i)).map((i) => `${i.file} imports ${i.specifier}`);
}

const DRIVERS = new Set([
  'express',
  'ioredis',
  '@aws-sdk/client-kms',
  'openid-client',
  'better-sqlite3',
  'oidc-provider',
  'jsonwebtoken',
]);

describe('import rules', () => {
  it('when the rules are checked, then every src file was read and relative imports resolve inside src', () => {
    assert.ok(ALL.length > 200, `only ${ALL.length} imports found`);
    const outside = ALL.filter((i) => i.target !== null && !i.target.startsWith('src/'));
    assert.deepEqual(outside, []);
  });

  it('when links/ imports, then never a framework, driver or SDK (express, ioredis, AWS SDK, openid-client, better-sqlite3)', () => {
    assert.deepEqual(
      violations(under('links'), (i) => i.target === null && DRIVERS.has(packageName(i.specifier))),
      [],
    );
  });

  it('when links/ imports from src, then never the HTTP layer, an adapter or the composition root', () => {
    const adapter = (t: string) =>
      t.startsWith('src/http/') ||
      t.startsWith('src/store/sqlite/') ||
      t.startsWith('src/store/redis/') ||
      t.startsWith('src/sandbox/') ||
      t.startsWith('src/net/') ||
      t === 'src/oauth/openid-oauth-client.ts' ||
      t === 'src/keys/aws-kms-key-provider.ts' ||
      t === 'src/features.ts' ||
      t === 'src/main.ts' ||
      t === 'src/app.ts';
    assert.deepEqual(
      violations(under('links'), (i) => i.target !== null && adapter(i.target)),
      [],
    );
  });

  it('when jobs/ imports, then nothing from links/ (the worker is generic)', () => {
    assert.deepEqual(
      violations(under('jobs'), (i) => i.target?.startsWith('src/links/') === true),
      [],
    );
  });

  it('when keys/ imports, then nothing from links/, http/ or store adapters', () => {
    assert.deepEqual(
      violations(
        under('keys'),
        (i) => i.target !== null && /^src\/(links|http|store\/(sqlite|redis))\//.test(i.target),
      ),
      [],
    );
  });

  it('when store/ imports, then nothing from http/, keys adapters or the features (only domain types)', () => {
    assert.deepEqual(
      violations(
        under('store'),
        (i) =>
          i.target !== null &&
          /^src\/(http\/|features\.ts|main\.ts|oauth\/|providers\/)/.test(i.target),
      ),
      [],
    );
  });

  it('when a driver package is imported, then only by its adapter folder', () => {
    const owners: Record<string, RegExp> = {
      express: /^src\/(http\/|app\.ts|features\.ts|sandbox\/)/,
      ioredis: /^src\/store\/redis\//,
      'better-sqlite3': /^src\/store\/sqlite\//,
      '@aws-sdk/client-kms': /^src\/keys\/aws-kms/,
      'openid-client': /^src\/oauth\//,
      'oidc-provider': /^src\/sandbox\//,
      jsonwebtoken: /^src\/(http|auth)\//,
    };
    const bad = ALL.filter(
      (i) =>
        i.target === null &&
        owners[packageName(i.specifier)] !== undefined &&
        !owners[packageName(i.specifier)]!.test(i.file),
    );
    assert.deepEqual(
      bad.map((i) => `${i.file} imports ${i.specifier}`),
      [],
    );
  });

  it('when a folder is imported, then there is no barrel index file to import it through', () => {
    assert.deepEqual(
      sourceFiles(SRC)
        .map((p) => relative(ROOT, p))
        .filter((p) => /\/index\.(ts|js)$/.test(p)),
      [],
    );
  });
});
