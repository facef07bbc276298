import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { builtinEntries, renderProviderDocs } from '../../src/providers/provider-docs.js';

/** docs/providers/ is exactly what `npm run docs:providers` renders from the catalogue. */

const ROOT = join(import.meta.dirname, '../..');
const CATALOGUE = join(ROOT, 'config/providers.json');
const DOCS = join(ROOT, 'docs/providers');

describe('the provider pages', () => {
  test('when the committed pages are compared with the generated ones, then they are equal and there are no others', () => {
    const pages = renderProviderDocs(CATALOGUE);
    assert.deepEqual(readdirSync(DOCS).sort(), [...pages.keys()].sort());
    for (const [name, text] of pages)
      assert.equal(
        readFileSync(join(DOCS, name), 'utf8'),
        text,
        `docs/providers/${name} is stale: run npm run docs:providers`,
      );
  });

  test('when a page is rendered, then it names the redirect URI, the two variables, the scopes, the revocation style and the guidance', () => {
    const pages = renderProviderDocs(CATALOGUE);
    const entries = builtinEntries(CATALOGUE);
    assert.equal(entries.length, pages.size - 1);
    for (const e of entries) {
      const page = pages.get(`${e.id}.md`)!;
      const envId = e.id.toUpperCase().replace(/[^A-Z0-9]/g, '_');
      assert.ok(page.includes(`<LINKVAULT_PUBLIC_URL>/v1/oauth/callback/${e.id}`), e.id);
      assert.ok(page.includes(`LINKVAULT_PROVIDER_${envId}_CLIENT_ID`), e.id);
      assert.ok(page.includes(`LINKVAULT_PROVIDER_${envId}_CLIENT_SECRET`), e.id);
      for (const scope of e.scopes.default)
        assert.ok(page.includes(`\`${scope}\``), `${e.id}: ${scope}`);
      assert.ok(page.includes(`Style \`${e.revocation.style}\``), e.id);
      assert.ok(page.includes(e.privacy.policyUrl), e.id);
      assert.ok(pages.get('README.md')!.includes(`[${e.name}](${e.id}.md)`), e.id);
    }
  });

  test('when the catalogue changes, then the generated page follows it (nothing is fixed text)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lv-provider-docs-'));
    try {
      const json = JSON.parse(readFileSync(CATALOGUE, 'utf8')) as {
        providers: Record<string, unknown>[];
      };
      const hubspot = json.providers.find((p) => p.id === 'hubspot')!;
      hubspot.name = 'HubSpot Renamed';
      hubspot.pkce = false;
      hubspot.capture_metadata = ['portal_id_changed'];
      writeFileSync(join(dir, 'providers.json'), JSON.stringify({ providers: [hubspot] }));
      const pages = renderProviderDocs(join(dir, 'providers.json'));
      assert.deepEqual([...pages.keys()], ['README.md', 'hubspot.md']);
      const page = pages.get('hubspot.md')!;
      assert.match(page, /^# HubSpot Renamed \(`hubspot`\)$/m);
      assert.match(page, /^- PKCE \(S256\): no /m);
      assert.match(page, /`portal_id_changed`/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("when the catalogue's comment names paths, then they are paths of this repository that exist", () => {
    const comment = (JSON.parse(readFileSync(CATALOGUE, 'utf8')) as { $comment: string }).$comment;
    assert.doesNotMatch(comment, /(^|\s)\/(work|home|tmp|Users)\//, 'no path of a machine');
    const paths = [...comment.matchAll(/\b((?:src|docs|config|scripts)\/[\w./-]*\w)/g)].map(
      (m) => m[1]!,
    );
    assert.ok(paths.length > 0);
    for (const path of paths) assert.ok(existsSync(join(ROOT, path)), `${path} does not exist`);
  });
});
