import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import request from 'supertest';
import { startWebApp, parseCsp, type WebApp } from '../support/web-app.js';

let web: WebApp;

before(async () => {
  web = await startWebApp({
    LINKVAULT_RETURN_URL_ALLOWLIST: 'https://app.example.com,http://localhost:5173',
  });
});
after(() => web.close());

const PAGES = [
  '/connect',
  '/manage',
  '/connect/result?status=connected&link_id=lnk_abc&provider=hubspot',
];

describe('pages', () => {
  for (const path of PAGES) {
    test(`when ${path} is served, then its CSP allows only linkvault's own scripts and styles, no inline code, and framing only by the allowlist`, async () => {
      const res = await request(web.app).get(path);
      assert.equal(res.status, 200);
      assert.equal(res.headers['content-type'], 'text/html; charset=utf-8');
      const csp = parseCsp(res.headers['content-security-policy']);
      assert.deepEqual(Object.fromEntries(csp), {
        'default-src': ["'none'"],
        'script-src': ["'self'"],
        'style-src': ["'self'"],
        'img-src': ["'self'"],
        'connect-src': ["'self'"],
        'form-action': ["'none'"],
        'base-uri': ["'none'"],
        'frame-ancestors': ['https://app.example.com', 'http://localhost:5173'],
        'require-trusted-types-for': ["'script'"],
        'trusted-types': ["'none'"],
      });
      // frame-ancestors rules framing; a DENY next to it would contradict it.
      assert.equal(res.headers['x-frame-options'], undefined);
      assert.equal(res.headers['cache-control'], 'no-store');
      assert.equal(res.headers['referrer-policy'], 'no-referrer');
      assert.equal(res.headers['x-content-type-options'], 'nosniff');
      assert.equal(res.headers['set-cookie'], undefined);
    });

    test(`when ${path} is served, then its HTML has no inline script, no inline style and no third-party asset`, async () => {
      const res = await request(web.app).get(path);
      const html = res.text;
      for (const tag of html.match(/<script\b[^>]*>/g) ?? [])
        assert.match(tag, /\ssrc="\/(assets|sdk)\/[a-z0-9.-]+\.js"/, tag);
      assert.doesNotMatch(html, /<script\b[^>]*>[^<]+<\/script>/, 'no script body');
      assert.doesNotMatch(html, /<style\b/i);
      assert.doesNotMatch(html, /\sstyle=/i);
      assert.doesNotMatch(html, /\son[a-z]+=/i, 'no inline event handler');
      for (const m of html.matchAll(/\s(?:src|href)="([^"]*)"/g))
        assert.match(m[1]!, /^\/(assets|sdk)\//, `same-origin asset: ${m[1]}`);
      assert.match(html, /<html lang="en">/);
      assert.match(html, /<meta name="viewport" content="width=device-width, initial-scale=1">/);
    });
  }

  test("when /manage is served, then it keeps its popups' opener (COOP same-origin-allow-popups) and loads the SDK before its module", async () => {
    const res = await request(web.app).get('/manage');
    assert.equal(res.headers['cross-origin-opener-policy'], 'same-origin-allow-popups');
    assert.ok(res.text.indexOf('/sdk/connect.v1.js') < res.text.indexOf('/assets/manage-page.js'));
  });

  test('when /connect is served, then it sets no COOP: it is the popup another origin opened and must keep its opener', async () => {
    const res = await request(web.app).get('/connect');
    assert.equal(res.headers['cross-origin-opener-policy'], undefined);
  });
});

test('when the public URL is https, then the CSP also upgrades insecure requests', async () => {
  const https = await startWebApp({ LINKVAULT_PUBLIC_URL: 'https://vault.example.com' });
  try {
    const res = await request(https.app).get('/manage');
    const csp = parseCsp(res.headers['content-security-policy']);
    assert.deepEqual(csp.get('upgrade-insecure-requests'), []);
    // Default allowlist: the public URL's own origin.
    assert.deepEqual(csp.get('frame-ancestors'), ['https://vault.example.com']);
  } finally {
    await https.close();
  }
});

test('when the public URL has a path, then every asset and script path carries it', async () => {
  const prefixed = await startWebApp({ LINKVAULT_PUBLIC_URL: 'http://127.0.0.1:3000/lv' });
  try {
    const res = await request(prefixed.app).get('/manage');
    assert.match(res.text, /<body data-base-path="\/lv" data-page="manage">/);
    assert.match(res.text, /href="\/lv\/assets\/styles.css"/);
    assert.match(res.text, /src="\/lv\/sdk\/connect.v1.js"/);
    assert.match(res.text, /src="\/lv\/assets\/manage-page.js"/);
  } finally {
    await prefixed.close();
  }
});
