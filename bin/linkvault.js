#!/usr/bin/env node
// linkvault's command line. In a checkout with the development dependencies it runs the TypeScript
// sources through tsx; where only the compiled build ships (the Docker image: dist/ from
// `npm run build`, production dependencies only) it runs that. Sources win when both can run, so a
// stale dist/ never runs instead of the code being edited.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const source = new URL('../src/cli.ts', import.meta.url);
const compiled = new URL('../dist/src/cli.js', import.meta.url);

async function loadTsx() {
  try {
    return await import('tsx/esm/api');
  } catch {
    return null;
  }
}

let cli;
const tsx = existsSync(fileURLToPath(source)) ? await loadTsx() : null;
if (tsx) {
  tsx.register();
  cli = await import(source.href);
} else if (existsSync(fileURLToPath(compiled))) {
  cli = await import(compiled.href);
} else if (existsSync(fileURLToPath(source))) {
  process.stderr.write(
    'linkvault: src/cli.ts needs the development dependency tsx (npm install), or build dist/ with `npm run build`\n',
  );
  process.exit(1);
} else {
  process.stderr.write(
    'linkvault: neither src/cli.ts nor dist/src/cli.js found (run `npm run build`)\n',
  );
  process.exit(1);
}
await cli.main(process.argv.slice(2));
