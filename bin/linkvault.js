#!/usr/bin/env node
// linkvault's command line. In a checkout it runs the TypeScript sources through tsx; where only
// the compiled build ships (the Docker image: dist/ from `npm run build`, no src/) it runs that.
// Sources win when both exist, so a stale dist/ never runs instead of the code being edited.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const source = new URL('../src/cli.ts', import.meta.url);
const compiled = new URL('../dist/src/cli.js', import.meta.url);
let cli;
if (existsSync(fileURLToPath(source))) {
  const { register } = await import('tsx/esm/api');
  register();
  cli = await import(source.href);
} else if (existsSync(fileURLToPath(compiled))) {
  cli = await import(compiled.href);
} else {
  process.stderr.write('linkvault: neither src/cli.ts nor dist/src/cli.js found (run `npm run build`)\n');
  process.exit(1);
}
await cli.main(process.argv.slice(2));
