import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import request from 'supertest';
import { PAGE_ASSETS } from '../../src/http/web-routes.js';
import { startWebApp, type WebApp } from '../support/web-app.js';

let web: WebApp;

before(async () => {
  web = await startWebApp();
});
after(() => web.close());

test('when an asset path is not one of the listed assets, then 404 problem+json (no file system walk)', async () => {
  for (const path of [
    '/assets/connect.js',
    '/assets/render-page.ts',
    '/assets/..%2Fconfig.ts',
    '/assets/%2e%2e%2f%2e%2e%2fpackage.json',
    '/assets/styles.css%00.js',
    '/assets/',
    '/assets/STYLES.CSS',
  ]) {
    const res = await request(web.app).get(path);
    assert.equal(res.status, 404, path);
    assert.equal(res.headers['content-type'], 'application/problem+json; charset=utf-8', path);
    assert.equal(res.body.code, 'not_found', path);
  }
});

test('when every listed asset is fetched, then it has its type, an ETag and no-cache (revalidate on every use)', async () => {
  const types: Record<string, string> = {
    js: 'text/javascript; charset=utf-8',
    css: 'text/css; charset=utf-8',
    svg: 'image/svg+xml',
  };
  for (const name of PAGE_ASSETS) {
    const res = await request(web.app).get(`/assets/${name}`);
    assert.equal(res.status, 200, name);
    assert.equal(res.headers['content-type'], types[name.split('.').pop()!], name);
    assert.equal(res.headers['cache-control'], 'no-cache', name);
    assert.match(res.headers.etag!, /^"[A-Za-z0-9_-]{32}"$/, name);
    const again = await request(web.app)
      .get(`/assets/${name}`)
      .set('If-None-Match', res.headers.etag!);
    assert.equal(again.status, 304, name);
  }
});

test('when the page scripts are read, then none writes HTML strings into the DOM or evaluates code', async () => {
  for (const name of PAGE_ASSETS.filter((n) => n.endsWith('.js'))) {
    const res = await request(web.app).get(`/assets/${name}`);
    assert.doesNotMatch(
      res.text,
      /innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|setTimeout\(\s*['"`]/,
      name,
    );
    assert.doesNotMatch(res.text, /localStorage/, `${name}: the session must not be persisted`);
  }
});
