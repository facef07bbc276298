import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import request from 'supertest';
import { startWebApp, type WebApp } from '../support/web-app.js';

let web: WebApp;

before(async () => {
  web = await startWebApp();
});
after(() => web.close());

async function sessionToken(providers?: string[]): Promise<string> {
  const created = await web.sessions.createSession(
    { tenantId: 't1', userId: 'u1', ...(providers ? { providers } : {}) },
    'svc',
  );
  return created.session_token;
}

test('when GET /v1/me/providers has no or a bad bearer, then 401 session_expired with WWW-Authenticate, and no-store', async () => {
  for (const auth of [
    undefined,
    'Bearer ',
    'Bearer nope',
    `Basic ${Buffer.from('a:b').toString('base64')}`,
  ]) {
    const req = request(web.app).get('/v1/me/providers');
    if (auth) req.set('Authorization', auth);
    const res = await req;
    assert.equal(res.status, 401, String(auth));
    assert.equal(res.body.code, 'session_expired');
    assert.equal(res.headers['www-authenticate'], 'Bearer error="invalid_token"');
    assert.equal(res.headers['cache-control'], 'no-store');
  }
});

test('when the session allows some providers, then exactly those enabled ones come back, with names, scope descriptions and privacy', async () => {
  const token = await sessionToken(['hubspot']);
  const res = await request(web.app)
    .get('/v1/me/providers')
    .set('Authorization', `Bearer ${token}`);
  assert.equal(res.status, 200);
  assert.deepEqual(res.body, {
    providers: [
      {
        id: 'hubspot',
        name: 'HubSpot',
        category: 'crm',
        scopes: [
          { name: 'oauth', description: 'Connect to your HubSpot account' },
          { name: 'crm.objects.contacts.read', description: 'Read your CRM contacts' },
          { name: 'crm.objects.companies.read', description: 'Read your CRM companies' },
          { name: 'crm.objects.deals.read', description: 'Read your CRM deals' },
        ],
        privacy: web.catalogue.privacy('hubspot'),
      },
    ],
    user_display: null,
    app_name: null,
    require_confirmation: false,
  });
});

test('when the session names whom it is for, then user_display comes back with the providers', async () => {
  const created = await web.sessions.createSession(
    { tenantId: 't', userId: 'u', userDisplay: 'ana@example.com' },
    'crm-sync',
  );
  const res = await request(web.app)
    .get('/v1/me/providers')
    .set('Authorization', `Bearer ${created.session_token}`);
  assert.equal(res.status, 200);
  assert.equal(res.body.user_display, 'ana@example.com');
  assert.equal(res.body.app_name, null);
  assert.equal(res.body.require_confirmation, false);
});

test('when the session names no providers, then every enabled provider comes back in catalogue order', async () => {
  const token = await sessionToken();
  const res = await request(web.app)
    .get('/v1/me/providers')
    .set('Authorization', `Bearer ${token}`);
  assert.deepEqual(
    res.body.providers.map((p: { id: string }) => p.id),
    web.catalogue.enabled().map((e) => e.id),
  );
  assert.deepEqual(res.body.providers.map((p: { id: string }) => p.id).sort(), [
    'google',
    'hubspot',
    'salesforce',
  ]);
});

test('when GET /v1/providers is called without credentials, then every enabled provider comes back, never a disabled one', async () => {
  const res = await request(web.app).get('/v1/providers');
  assert.equal(res.status, 200);
  assert.deepEqual(
    res.body.providers.map((p: { id: string }) => p.id),
    web.catalogue.enabled().map((e) => e.id),
  );
  assert.deepEqual(res.body.providers[0], web.catalogue.publicView(web.catalogue.enabled()[0]!));
  assert.ok(
    !res.body.providers.some((p: { id: string }) => p.id === 'zoho'),
    'zoho has no credentials here',
  );
});
