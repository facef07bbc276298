import childProcess from 'node:child_process';
import { register, syncBuiltinESMExports } from 'node:module';

/**
 * Loaded before every file of `npm run test:unit` (package.json): what makes a unit test one. A
 * unit test starts no process (redis-server, a `linkvault` child, Chromium) and loads neither
 * node-oidc-provider nor playwright-core. A file in test/ops/unit-tests.txt that starts to need
 * one fails here, with this message, instead of the list silently growing slow.
 * esbuild's own service process (tsx compiles TypeScript with it) is the one process allowed.
 */

const ADVICE =
  'is not allowed in `npm run test:unit` (test/ops/unit-guard.ts): remove this file from test/ops/unit-tests.txt';

const child = childProcess as unknown as Record<string, (...args: unknown[]) => unknown>;
for (const name of ['spawn', 'spawnSync', 'exec', 'execSync', 'execFile', 'execFileSync', 'fork']) {
  const original = child[name]!;
  child[name] = function guarded(this: unknown, ...args: unknown[]): unknown {
    const command = String(args[0]);
    if (/[\\/]esbuild(\.exe)?$|[\\/]@esbuild[\\/]/.test(command)) return original.apply(this, args);
    throw new Error(`child_process.${name}(${command}) ${ADVICE}`);
  };
}
syncBuiltinESMExports();

const hooks = `
const FORBIDDEN = new Set(['oidc-provider', 'playwright-core']);
export async function resolve(specifier, context, next) {
  if (FORBIDDEN.has(specifier))
    throw new Error('importing ' + specifier + ' ${ADVICE}');
  return next(specifier, context);
}
`;
register(`data:text/javascript,${encodeURIComponent(hooks)}`, import.meta.url);
