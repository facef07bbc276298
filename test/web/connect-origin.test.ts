import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import request from 'supertest';
import { startWebApp, type WebApp } from '../support/web-app.js';

let web: WebApp;

before(async () => {
  web = await startWebApp({
    LINKVAULT_RETURN_URL_ALLOWLIST: 'https://app.example.com,http://localhost:5173',
  });
});
after(() => web.close());

function bodyTag(html: string): string {
  return /<body[^>]*>/.exec(html)![0];
}

test('when the connect page is opened without an origin, then it renders with no opener origin', async () => {
  const res = await request(web.app).get('/connect');
  assert.equal(res.status, 200);
  assert.equal(bodyTag(res.text), '<body data-base-path="" data-page="connect">');
});

test('when the opener origin is on the allowlist, or is linkvault itself, then the page carries it for the result page', async () => {
  for (const origin of [
    'https://app.example.com',
    'http://localhost:5173',
    'http://127.0.0.1:3000',
  ]) {
    const res = await request(web.app).get('/connect').query({ origin });
    assert.equal(res.status, 200, origin);
    assert.equal(
      bodyTag(res.text),
      `<body data-base-path="" data-page="connect" data-opener-origin="${origin}">`,
    );
  }
});

test('when the opener origin is not exactly an allowlisted origin, then 400 and the page carries no origin', async () => {
  for (const origin of [
    'https://evil.example.com',
    'https://app.example.com/',
    'https://app.example.com.evil.net',
    'http://app.example.com',
    'https://APP.example.com',
    'https://app.example.com:443',
    'null',
    '*',
    '',
    '"><script>alert(1)</script>',
  ]) {
    const res = await request(web.app).get('/connect').query({ origin });
    assert.equal(res.status, 400, origin);
    assert.equal(
      bodyTag(res.text),
      '<body data-base-path="" data-page="connect" data-origin-rejected="true">',
      origin,
    );
    assert.doesNotMatch(res.text, /<script>alert/);
  }
});

test('when the origin parameter is repeated, then it is refused rather than one of them picked', async () => {
  const res = await request(web.app).get(
    '/connect?origin=https://app.example.com&origin=https://evil.example.com',
  );
  assert.equal(res.status, 400);
  assert.doesNotMatch(res.text, /data-opener-origin/);
});
