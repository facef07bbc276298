// Builds @linkvault/connect from the script linkvault itself serves (src/web/connect.js): the
// package never carries its own copy in the repository, so it cannot drift from the server's.
//   node build.mjs [outDir]   copy the script to <outDir>/connect.v1.js (default ./dist)
//   node build.mjs --docs     also write the example deployment's SRI hash into docs/sdk.md
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connectScriptIntegrity } from './sri.js';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../..');
export const SERVED_SCRIPT = join(repo, 'src/web/connect.js');
/** The public URL the documented SRI hash is for (docs/sdk.md). */
export const DOCS_EXAMPLE_URL = 'https://vault.example.com';
const DOCS_SDK = join(repo, 'docs/sdk.md');
const SRI_LINE = /^(<!-- sri:connect\.v1 -->)`[^`]*`$/m;

/** Copies the served script into `outDir` as connect.v1.js; returns its path. */
export function buildConnectPackage(outDir = join(here, 'dist')) {
  mkdirSync(outDir, { recursive: true });
  const target = join(outDir, 'connect.v1.js');
  copyFileSync(SERVED_SCRIPT, target);
  return target;
}

/** docs/sdk.md with the SRI line for DOCS_EXAMPLE_URL brought up to date. */
export function documentedSdkMarkdown(markdown = readFileSync(DOCS_SDK, 'utf8')) {
  const integrity = connectScriptIntegrity(DOCS_EXAMPLE_URL, readFileSync(SERVED_SCRIPT, 'utf8'));
  if (!SRI_LINE.test(markdown)) throw new Error('docs/sdk.md: the sri:connect.v1 line is missing');
  return markdown.replace(SRI_LINE, (_line, marker) => `${marker}\`${integrity}\``);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const outDir = args.find((a) => !a.startsWith('--'));
  buildConnectPackage(outDir ? resolve(outDir) : undefined);
  if (args.includes('--docs')) writeFileSync(DOCS_SDK, documentedSdkMarkdown());
}
