import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { test } from 'node:test';

/**
 * `npm run test:unit` runs the files listed in test/ops/unit-tests.txt under test/ops/unit-guard.ts.
 * This keeps the list honest without running it: every entry is a test file that exists, once, in
 * order; none imports (itself or through the test helpers it imports) what starts a process or a
 * real OAuth server or browser; and the npm scripts still say what they should. The guard catches
 * at run time what a static reading cannot (a helper that spawns through src/).
 * (This file spawns the guard itself, so it is not in the list.)
 */

const root = join(import.meta.dirname, '..', '..');
const LIST = 'test/ops/unit-tests.txt';
/** What a unit test must not reach: process spawning, the real OAuth server, the browser driver. */
const FORBIDDEN =
  /from '(node:child_process|oidc-provider|playwright-core)'|import\('(oidc-provider|playwright-core)/;

function withoutTestContext(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  return env;
}

function listed(): string[] {
  return readFileSync(join(root, LIST), 'utf8')
    .split('\n')
    .filter((line) => line !== '' && !line.startsWith('#'));
}

/** The test-side files `file` imports, transitively (relative imports inside test/). */
function reachable(file: string, seen = new Set<string>()): Set<string> {
  if (seen.has(file)) return seen;
  seen.add(file);
  const text = readFileSync(join(root, file), 'utf8');
  for (const m of text.matchAll(/from '(\.{1,2}\/[^']+)'/g)) {
    const target = normalize(join(dirname(file), m[1]!.replace(/\.js$/, '.ts')));
    if (target.startsWith('test/') && existsSync(join(root, target))) reachable(target, seen);
  }
  return seen;
}

test('every entry of the unit list is an existing test file, listed once, in order', () => {
  const files = listed();
  assert.ok(files.length >= 40, `only ${files.length} files`);
  for (const file of files) {
    assert.match(file, /^test\/.+\.test\.ts$/, file);
    assert.ok(existsSync(join(root, file)), `${file} does not exist`);
  }
  assert.deepEqual(files, [...new Set(files)].sort());
});

test('no listed file reaches process spawning, oidc-provider or playwright-core through its imports', () => {
  const offenders: string[] = [];
  for (const file of listed())
    for (const dep of reachable(file))
      if (FORBIDDEN.test(readFileSync(join(root, dep), 'utf8')))
        offenders.push(dep === file ? file : `${file} via ${dep}`);
  assert.deepEqual(offenders, []);
});

test('the static reading sees the helpers that start servers', () => {
  const deps = [...reachable('test/ops/monitoring-docs.test.ts')].map((f) => relative('', f));
  assert.ok(deps.includes('test/support/redis-server.ts'));
  assert.match(readFileSync(join(root, 'test/support/redis-server.ts'), 'utf8'), FORBIDDEN);
});

test('npm run test:unit runs the list under the guard, and npm test still runs every test file', () => {
  const scripts = (
    JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
      scripts: Record<string, string>;
    }
  ).scripts;
  assert.match(scripts['test:unit']!, /--import \.\/test\/ops\/unit-guard\.ts/);
  assert.match(scripts['test:unit']!, /test\/ops\/unit-tests\.txt/);
  assert.match(scripts.test!, /find test -name '\*\.test\.ts'/);
});

test('the guard fails a test that starts a process or loads oidc-provider, and lets a plain one pass', () => {
  const probe = join(root, 'test/ops/fixtures/guard-probe.fixture.ts');
  const run = spawnSync(
    process.execPath,
    [
      '--import',
      'tsx',
      '--import',
      './test/ops/unit-guard.ts',
      '--test',
      '--test-reporter=tap',
      probe,
    ],
    // Without NODE_TEST_CONTEXT, which would make the inner runner report to this one.
    { cwd: root, encoding: 'utf8', timeout: 60_000, env: withoutTestContext() },
  );
  const out = run.stdout;
  assert.match(out, /^ok \d+ - a plain test$/m);
  assert.match(out, /^not ok \d+ - a test that spawns$/m);
  assert.match(out, /^not ok \d+ - a test that loads oidc-provider$/m);
  assert.match(out, /is not allowed in `npm run test:unit`/);
});
