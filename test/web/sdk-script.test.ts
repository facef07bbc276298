import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import vm from 'node:vm';
import request from 'supertest';
import { buildSdk, SDK_CACHE_CONTROL } from '../../src/http/web-routes.js';
import { startWebApp, type WebApp } from '../support/web-app.js';

let web: WebApp;

before(async () => {
  web = await startWebApp({
    LINKVAULT_PUBLIC_URL: 'https://vault.example.com/lv',
    LINKVAULT_RETURN_URL_ALLOWLIST: 'https://app.example.com',
  });
});
after(() => web.close());

test("when /sdk/connect.js is fetched, then it is JavaScript with this deployment's exact base URL and origin written in", async () => {
  const res = await request(web.app).get('/sdk/connect.js');
  assert.equal(res.status, 200);
  assert.equal(res.headers['content-type'], 'text/javascript; charset=utf-8');
  const body = res.text;
  assert.ok(body.includes(`var BASE_URL = "https://vault.example.com/lv";`));
  assert.ok(body.includes(`var ORIGIN = "https://vault.example.com";`));
  assert.ok(!body.includes('__LINKVAULT_'), 'no placeholder is left');
  // Small: a drop-in script, not a framework.
  assert.ok(Buffer.byteLength(body) < 12 * 1024, `connect.js is ${Buffer.byteLength(body)} bytes`);
});

test('when the SDK is fetched, then it has an ETag, a public Cache-Control, and may be loaded cross-origin', async () => {
  const latest = await request(web.app).get('/sdk/connect.js');
  const v1 = await request(web.app).get('/sdk/connect.v1.js');
  assert.equal(latest.headers['cache-control'], SDK_CACHE_CONTROL.latest);
  assert.equal(v1.headers['cache-control'], SDK_CACHE_CONTROL.v1);
  assert.match(latest.headers.etag!, /^"[A-Za-z0-9_-]{32}"$/);
  assert.equal(latest.headers.etag, v1.headers.etag);
  assert.equal(latest.text, v1.text);
  assert.equal(latest.headers['cross-origin-resource-policy'], 'cross-origin');
  assert.equal(latest.headers['access-control-allow-origin'], '*');
  assert.equal(latest.headers['x-content-type-options'], 'nosniff');
  assert.equal(latest.headers['set-cookie'], undefined);
});

test('when the SDK is revalidated with its ETag, then 304 without a body; with another tag, then 200', async () => {
  const first = await request(web.app).get('/sdk/connect.v1.js');
  const etag = first.headers.etag!;
  const same = await request(web.app)
    .get('/sdk/connect.v1.js')
    .set('If-None-Match', `"other", W/${etag}`);
  assert.equal(same.status, 304);
  assert.equal(same.text, '');
  assert.equal(same.headers.etag, etag);
  assert.equal(same.headers['cache-control'], SDK_CACHE_CONTROL.v1);
  const other = await request(web.app).get('/sdk/connect.v1.js').set('If-None-Match', '"stale"');
  assert.equal(other.status, 200);
});

test('when a placeholder is missing from the SDK source, then building it fails loudly', () => {
  assert.throws(
    () => buildSdk("var BASE_URL = '__LINKVAULT_BASE_URL__';", 'https://vault.example.com'),
    /__LINKVAULT_ORIGIN__/,
  );
});

test('when the SDK runs, then it defines window.linkvault with connect, completeRedirect and a typed error', async () => {
  const res = await request(web.app).get('/sdk/connect.js');
  const window: Record<string, unknown> = {};
  vm.runInNewContext(res.text, {
    window,
    URLSearchParams,
    URL,
    Promise,
    Error,
    Object,
    JSON,
    Math,
    Uint8Array,
  });
  const lv = window.linkvault as Record<string, unknown> & {
    LinkvaultConnectError: new (code: string, message: string) => Error & { code: string };
  };
  assert.equal(lv.version, '1.0.0');
  assert.equal(lv.origin, 'https://vault.example.com');
  assert.equal(typeof lv.connect, 'function');
  assert.equal(typeof lv.completeRedirect, 'function');
  const err = new lv.LinkvaultConnectError('cancelled', 'x');
  assert.equal(err.name, 'LinkvaultConnectError');
  assert.equal(err.code, 'cancelled');
  assert.ok(Object.isFrozen(lv));
  // connect() without a token rejects with invalid_argument, before opening anything.
  await assert.rejects(
    (lv.connect as (o: unknown) => Promise<unknown>)({ provider: 'hubspot' }),
    (e: { code?: string }) => e.code === 'invalid_argument',
  );
});

test('when the SDK source is read, then it has no dependency: no import, no require, no other script', () => {
  const source = readFileSync(new URL('../../src/web/connect.js', import.meta.url), 'utf8');
  assert.doesNotMatch(source, /\bimport\b|\brequire\(|createElement\(['"]script/);
});
