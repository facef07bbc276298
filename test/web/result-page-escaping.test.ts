import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import request from 'supertest';
import { connectResultLocation } from '../../src/http/web-routes.js';
import { startWebApp, type WebApp } from '../support/web-app.js';

let web: WebApp;

before(async () => {
  web = await startWebApp();
});
after(() => web.close());

function bodyTag(html: string): string {
  return /<body[^>]*>/.exec(html)![0];
}

test('when the result is invalid or hostile, then the page shows invalid_request and reflects nothing unescaped', async () => {
  for (const query of [
    '',
    'status=connected',
    'status=connected&link_id=%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E',
    'status=error&error=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E',
    'status=%3Cb%3E',
    'status=connected&link_id=a&link_id=b',
  ]) {
    const res = await request(web.app).get(`/connect/result?${query}`);
    assert.equal(res.status, 200, query);
    assert.equal(
      bodyTag(res.text),
      '<body data-base-path="" data-page="result" data-status="error" data-error="invalid_request">',
      query,
    );
    assert.doesNotMatch(res.text, /<script>alert|<img src=x/, query);
    assert.match(res.text, /<code>invalid_request<\/code>/);
  }
});

test('when a provider id is hostile, then it is dropped, and a valid unknown one is shown only as data', async () => {
  const hostile = await request(web.app)
    .get('/connect/result')
    .query({ status: 'connected', link_id: 'lnk_1', provider: '"><script>x</script>' });
  assert.equal(
    bodyTag(hostile.text),
    '<body data-base-path="" data-page="result" data-status="connected" data-link-id="lnk_1">',
  );
  const unknown = await request(web.app)
    .get('/connect/result')
    .query({ status: 'connected', link_id: 'lnk_1', provider: 'nope' });
  assert.equal(
    bodyTag(unknown.text),
    '<body data-base-path="" data-page="result" data-status="connected" data-provider="nope" data-link-id="lnk_1">',
  );
  assert.match(unknown.text, /<h1 id="result-title" tabindex="-1">Account connected<\/h1>/);
});

test('when the connect succeeded, then the page names the provider from the catalogue', async () => {
  const res = await request(web.app)
    .get('/connect/result')
    .query({ status: 'connected', link_id: 'lnk_AbC-1_2', provider: 'hubspot' });
  assert.equal(
    bodyTag(res.text),
    '<body data-base-path="" data-page="result" data-status="connected" data-provider="hubspot" data-link-id="lnk_AbC-1_2">',
  );
  assert.match(res.text, /<h1 id="result-title" tabindex="-1">HubSpot is connected<\/h1>/);
  assert.match(res.text, /use your HubSpot account with the access you approved/);
});

test('when the provider reported access_denied, then the page says cancelled; any other provider error is an error', async () => {
  const denied = await request(web.app).get('/connect/result').query({
    status: 'error',
    error: 'provider_denied',
    provider_error: 'access_denied',
    provider: 'hubspot',
  });
  assert.equal(
    bodyTag(denied.text),
    '<body data-base-path="" data-page="result" data-status="cancelled" data-provider="hubspot">',
  );
  assert.match(denied.text, /Connection cancelled/);
  const scope = await request(web.app).get('/connect/result').query({
    status: 'error',
    error: 'provider_denied',
    provider_error: 'invalid_scope',
    provider: 'hubspot',
  });
  assert.equal(
    bodyTag(scope.text),
    '<body data-base-path="" data-page="result" data-status="error" data-provider="hubspot" data-error="provider_denied">',
  );
  assert.match(scope.text, /HubSpot did not grant access/);
});

test("when connectResultLocation builds the callback's redirect, then the result page reads back the same outcome", async () => {
  const ok = new URL(
    connectResultLocation('http://127.0.0.1:3000', {
      status: 'connected',
      linkId: 'lnk_x',
      providerId: 'hubspot',
    }),
  );
  assert.equal(
    ok.href,
    'http://127.0.0.1:3000/connect/result?status=connected&link_id=lnk_x&provider=hubspot',
  );
  const denied = new URL(
    connectResultLocation('http://127.0.0.1:3000', {
      status: 'error',
      error: 'provider_denied',
      providerId: 'hubspot',
      providerError: 'access_denied',
    }),
  );
  assert.equal(
    denied.href,
    'http://127.0.0.1:3000/connect/result?status=error&error=provider_denied&provider_error=access_denied&provider=hubspot',
  );
  const res = await request(web.app).get(`${denied.pathname}${denied.search}`);
  assert.match(bodyTag(res.text), /data-status="cancelled"/);
});
