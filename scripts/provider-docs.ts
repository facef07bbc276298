import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderProviderDocs } from '../src/providers/provider-docs.js';

/** `npm run docs:providers`: (re)writes docs/providers/ from config/providers.json. */

const root = join(import.meta.dirname, '..');
const out = join(root, 'docs', 'providers');
const pages = renderProviderDocs(join(root, 'config', 'providers.json'));
mkdirSync(out, { recursive: true });
// A provider removed from the catalogue loses its page.
for (const name of readdirSync(out)) if (!pages.has(name)) rmSync(join(out, name));
for (const [name, text] of pages) writeFileSync(join(out, name), text);
process.stdout.write(`docs/providers: ${pages.size} pages written\n`);
