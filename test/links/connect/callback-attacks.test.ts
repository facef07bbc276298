import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import {
  APP_ORIGIN,
  startConnectHarness,
  type ConnectHarness,
  type HttpAnswer,
} from '../../support/connect-harness.js';
import { startOidcServer, type OidcServer } from '../../support/oidc-server.js';

/**
 * Attacks on the authorization response (RFC 9700 §4.5 code injection, §4.7 CSRF, §4.4 mix-up,
 * §4.2.4 leakage). Each asserts the status, the error code, how many token requests reached the
 * provider (zero wherever the attack must be stopped before the exchange) and that nothing was stored.
 */

const CLIENT = { client_id: 'lv-acme', client_secret: 'acme-client-secret-0123456789abcdef' };
const JSON_ACCEPT = { accept: 'application/json' };

describe('when an authorization response is replayed, forged, misdelivered or malformed', () => {
  let oidc: OidcServer;
  let other: OidcServer;
  let h: ConnectHarness;
  let tenantSeq = 0;

  before(async () => {
    h = await startConnectHarness({
      providers: async (publicUrl) => {
        oidc = await startOidcServer({
          mode: 'oidc',
          clients: [{ ...CLIENT, redirect_uris: [`${publicUrl}/v1/oauth/callback/acme`] }],
        });
        other = await startOidcServer({
          mode: 'oidc',
          clients: [{ ...CLIENT, redirect_uris: [`${publicUrl}/v1/oauth/callback/other`] }],
        });
        const credentials = { clientId: CLIENT.client_id, clientSecret: CLIENT.client_secret };
        return [
          { entry: oidc.catalogueEntry('acme'), credentials, allowInsecureUrls: true },
          { entry: other.catalogueEntry('other'), credentials, allowInsecureUrls: true },
        ];
      },
    });
  });
  after(async () => {
    await h.close();
    await oidc.close();
    await other.close();
  });

  const codeExchanges = (): number =>
    (oidc.tokenRequests().authorization_code ?? 0) +
    (other.tokenRequests().authorization_code ?? 0);

  /** A fresh tenant per test, so "nothing stored" is a plain count. */
  async function newSession(withReturnTo = false): Promise<{ token: string; tenant: string }> {
    const tenant = `tenant-attack-${++tenantSeq}`;
    const body: Record<string, unknown> = { tenant_id: tenant, user_id: 'victim' };
    if (withReturnTo) body.return_to = `${APP_ORIGIN}/done`;
    const session = await h.createSession(body);
    return { token: session.session_token, tenant };
  }

  async function linksOf(tenant: string): Promise<number> {
    return (await h.store.listLinks({ tenantId: tenant })).length;
  }

  function assertProblem(answer: HttpAnswer, status: number, code: string): void {
    assert.equal(answer.status, status, answer.text);
    assert.equal(answer.headers.get('content-type'), 'application/problem+json; charset=utf-8');
    assert.equal(answer.json?.code, code);
    assert.equal(answer.headers.get('cache-control'), 'no-store');
    assert.equal(answer.headers.get('referrer-policy'), 'no-referrer');
  }

  test('a replayed callback (same state, same cookie) is invalid_state and never reaches the token endpoint again', async () => {
    const { token, tenant } = await newSession();
    const flow = await h.startFlow('acme', token);
    const callbackUrl = await oidc.completeLogin(flow.authorizationUrl, { accountId: 'replay' });
    const first = await h.callback(callbackUrl, flow.cookie, { headers: JSON_ACCEPT });
    assert.equal(first.status, 200, first.text);
    const exchanges = codeExchanges();
    const replay = await h.callback(callbackUrl, flow.cookie, { headers: JSON_ACCEPT });
    assertProblem(replay, 400, 'invalid_state');
    assert.equal(codeExchanges(), exchanges);
    assert.equal(await linksOf(tenant), 1);
  });

  test('a forged state is invalid_state with zero token requests', async () => {
    const { tenant } = await newSession();
    const exchanges = codeExchanges();
    const forged = `${h.publicUrl}/v1/oauth/callback/acme?code=${randomBytes(32).toString('base64url')}&state=${randomBytes(32).toString('base64url')}&iss=${encodeURIComponent(oidc.issuer)}`;
    const answer = await h.callback(forged, `lv_flow=${randomBytes(32).toString('base64url')}`, {
      headers: JSON_ACCEPT,
    });
    assertProblem(answer, 400, 'invalid_state');
    const noState = await h.callback(`${h.publicUrl}/v1/oauth/callback/acme?code=abc`, null, {
      headers: JSON_ACCEPT,
    });
    assertProblem(noState, 400, 'invalid_state');
    assert.equal(codeExchanges(), exchanges);
    assert.equal(await linksOf(tenant), 0);
  });

  test('a callback in another browser (no cookie) is flow_binding_mismatch, and the state is spent', async () => {
    const { token, tenant } = await newSession(true);
    const flow = await h.startFlow('acme', token);
    const callbackUrl = await oidc.completeLogin(flow.authorizationUrl, { accountId: 'victim' });
    const exchanges = codeExchanges();
    const answer = await h.callback(callbackUrl, null, { headers: JSON_ACCEPT });
    // Not redirected to return_to: a browser that did not start the flow learns nothing of it.
    assertProblem(answer, 400, 'flow_binding_mismatch');
    assert.equal(answer.location, null);
    // The state was consumed: the right browser coming second gets nothing either.
    const late = await h.callback(callbackUrl, flow.cookie, { headers: JSON_ACCEPT });
    assertProblem(late, 400, 'invalid_state');
    assert.equal(codeExchanges(), exchanges);
    assert.equal(await linksOf(tenant), 0);
  });

  test("a callback with another flow's cookie (swapped) is flow_binding_mismatch with zero token requests", async () => {
    const victim = await newSession();
    const attacker = await newSession();
    const victimFlow = await h.startFlow('acme', victim.token);
    const attackerFlow = await h.startFlow('acme', attacker.token);
    const callbackUrl = await oidc.completeLogin(victimFlow.authorizationUrl, {
      accountId: 'victim',
    });
    const exchanges = codeExchanges();
    const answer = await h.callback(callbackUrl, attackerFlow.cookie, { headers: JSON_ACCEPT });
    assertProblem(answer, 400, 'flow_binding_mismatch');
    // Two cookies of our name (one tossed in by someone else): refused rather than guessed.
    const attackerCallback = await oidc.completeLogin(attackerFlow.authorizationUrl, {
      accountId: 'attacker',
    });
    const doubled = await h.callback(
      attackerCallback,
      `${attackerFlow.cookie}; ${victimFlow.cookie}`,
      { headers: JSON_ACCEPT },
    );
    assertProblem(doubled, 400, 'flow_binding_mismatch');
    assert.equal(codeExchanges(), exchanges);
    assert.equal(await linksOf(victim.tenant), 0);
    assert.equal(await linksOf(attacker.tenant), 0);
  });

  test('an authorization response from another issuer (iss mix-up) is issuer_mismatch with zero token requests', async () => {
    const { token, tenant } = await newSession(true);
    const flow = await h.startFlow('acme', token);
    const callbackUrl = await oidc.completeLogin(flow.authorizationUrl, { accountId: 'victim' });
    assert.equal(callbackUrl.searchParams.get('iss'), oidc.issuer);
    callbackUrl.searchParams.set('iss', other.issuer);
    const exchanges = codeExchanges();
    const answer = await h.callback(callbackUrl, flow.cookie);
    // The flow was ours and this browser's: the user goes back to the app with the error code.
    assert.equal(answer.status, 303);
    assert.equal(
      answer.location?.href,
      `${APP_ORIGIN}/done?status=error&error=issuer_mismatch&provider=acme`,
    );
    assert.equal(codeExchanges(), exchanges);
    assert.equal(await linksOf(tenant), 0);
  });

  test("a response for one provider delivered to another provider's callback is invalid_state with zero token requests", async () => {
    const { token, tenant } = await newSession(true);
    const flow = await h.startFlow('acme', token);
    const callbackUrl = await oidc.completeLogin(flow.authorizationUrl, { accountId: 'victim' });
    const exchanges = codeExchanges();
    const misdelivered = new URL(`${h.publicUrl}/v1/oauth/callback/other${callbackUrl.search}`);
    const answer = await h.callback(misdelivered, flow.cookie, { headers: JSON_ACCEPT });
    assertProblem(answer, 400, 'invalid_state');
    assert.equal(answer.location, null);
    assert.equal(codeExchanges(), exchanges);
    assert.equal(await linksOf(tenant), 0);
  });

  test('a code from another flow (injected) is refused by the exchange (PKCE) and nothing is stored', async () => {
    const attacker = await newSession();
    const victim = await newSession();
    const attackerFlow = await h.startFlow('acme', attacker.token);
    const attackerCallback = await oidc.completeLogin(attackerFlow.authorizationUrl, {
      accountId: 'attacker',
    });
    const victimFlow = await h.startFlow('acme', victim.token);
    const victimCallback = await oidc.completeLogin(victimFlow.authorizationUrl, {
      accountId: 'victim',
    });
    victimCallback.searchParams.set('code', attackerCallback.searchParams.get('code')!);
    const exchanges = codeExchanges();
    const answer = await h.callback(victimCallback, victimFlow.cookie, { headers: JSON_ACCEPT });
    assertProblem(answer, 400, 'authorization_code_rejected');
    assert.equal(codeExchanges() - exchanges, 1, 'one exchange, refused by the provider');
    assert.equal(await linksOf(victim.tenant), 0);
    assert.equal(await linksOf(attacker.tenant), 0);
  });

  test('a provider error answer (user denied) is provider_denied with zero token requests', async () => {
    const { token, tenant } = await newSession(true);
    const flow = await h.startFlow('acme', token);
    const callbackUrl = await oidc.completeLogin(flow.authorizationUrl, {
      accountId: 'victim',
      deny: true,
    });
    assert.equal(callbackUrl.searchParams.get('error'), 'access_denied');
    const exchanges = codeExchanges();
    const answer = await h.callback(callbackUrl, flow.cookie);
    assert.equal(answer.status, 303);
    assert.equal(
      answer.location?.href,
      `${APP_ORIGIN}/done?status=error&error=provider_denied&provider=acme&provider_error=access_denied`,
    );
    assert.equal(codeExchanges(), exchanges);
    assert.equal(await linksOf(tenant), 0);
  });

  test('oversized and malformed parameters are invalid_request with zero token requests, and leave the flow usable', async () => {
    const { token, tenant } = await newSession();
    const flow = await h.startFlow('acme', token);
    const callbackUrl = await oidc.completeLogin(flow.authorizationUrl, { accountId: 'victim' });
    const state = callbackUrl.searchParams.get('state')!;
    const code = callbackUrl.searchParams.get('code')!;
    const iss = encodeURIComponent(oidc.issuer);
    const base = `${h.publicUrl}/v1/oauth/callback/acme`;
    const exchanges = codeExchanges();
    const vectors: Record<string, string> = {
      'state over 512 characters': `${base}?state=${'s'.repeat(513)}&code=${code}&iss=${iss}`,
      'code over 4096 characters': `${base}?state=${state}&code=${'c'.repeat(4097)}&iss=${iss}`,
      'duplicated state': `${base}?state=${state}&state=${state}&code=${code}&iss=${iss}`,
      'duplicated code': `${base}?state=${state}&code=${code}&code=${code}&iss=${iss}`,
      'duplicated iss': `${base}?state=${state}&code=${code}&iss=${iss}&iss=${iss}`,
      'state as a qs array': `${base}?state[]=${state}&code=${code}&iss=${iss}`,
      'state as a qs object': `${base}?state[a]=${state}&code=${code}&iss=${iss}`,
      'bad percent-encoding': `${base}?state=${state}&code=%zz&iss=${iss}`,
      'too many parameters': `${base}?state=${state}&code=${code}&iss=${iss}${Array.from({ length: 40 }, (_, i) => `&p${i}=1`).join('')}`,
      'query over the size cap': `${base}?state=${state}&code=${code}&iss=${iss}&x=${'x'.repeat(9000)}`,
    };
    for (const [name, url] of Object.entries(vectors)) {
      const answer = await h.callback(url, flow.cookie, { headers: JSON_ACCEPT });
      assert.equal(answer.status, 400, `${name}: ${answer.text}`);
      assert.equal(answer.json?.code, 'invalid_request', name);
    }
    assert.equal(codeExchanges(), exchanges);
    assert.equal(await linksOf(tenant), 0);
    // None of the refused requests consumed the flow: the genuine response still completes it.
    const genuine = await h.callback(callbackUrl, flow.cookie, { headers: JSON_ACCEPT });
    assert.equal(genuine.status, 200, genuine.text);
    assert.equal(await linksOf(tenant), 1);
  });

  test('in a browser, an untrusted callback ends on the hosted result page with the error code and nothing else', async () => {
    const answer = await h.callback(
      `${h.publicUrl}/v1/oauth/callback/acme?state=%3Cscript%3Ealert(1)%3C%2Fscript%3E&code=x`,
      null,
      { headers: { accept: 'text/html' } },
    );
    assert.equal(answer.status, 303);
    assert.equal(
      answer.location?.href,
      `${h.publicUrl}/connect/result?status=error&error=invalid_state`,
    );
    assert.equal(answer.headers.get('cache-control'), 'no-store');
    const page = await h.request(answer.location!.pathname + answer.location!.search);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-security-policy') ?? '', /script-src 'self'/);
    assert.ok(!page.text.includes('alert(1)'));
    assert.match(page.text, /<code>invalid_state<\/code>/);
  });

  test('a popup flow goes to the hosted result page, never to return_to', async () => {
    const { token, tenant } = await newSession(true);
    const flow = await h.startFlow('acme', token, { display: 'popup' });
    const callbackUrl = await oidc.completeLogin(flow.authorizationUrl, {
      accountId: 'popup-user',
    });
    const answer = await h.callback(callbackUrl, flow.cookie, { headers: { accept: 'text/html' } });
    assert.equal(answer.status, 303);
    const [link] = await h.store.listLinks({ tenantId: tenant });
    assert.equal(
      answer.location?.href,
      `${h.publicUrl}/connect/result?status=connected&link_id=${link!.id}&provider=acme`,
    );
    // A denied popup flow reports the provider's code, so the page can say "cancelled".
    const second = await newSession(true);
    const denied = await h.startFlow('acme', second.token, { display: 'popup' });
    const deniedAnswer = await h.callback(
      await oidc.completeLogin(denied.authorizationUrl, { accountId: 'popup-user', deny: true }),
      denied.cookie,
      { headers: { accept: 'text/html' } },
    );
    assert.equal(
      deniedAnswer.location?.href,
      `${h.publicUrl}/connect/result?status=error&error=provider_denied&provider_error=access_denied&provider=acme`,
    );
  });

  test('a connect start is refused without a valid session, for a provider outside the session, or with unknown or malformed members', async () => {
    const restricted = await h.createSession({
      tenant_id: 'tenant-r',
      user_id: 'u',
      providers: ['other'],
    });
    const token = restricted.session_token;
    const cases: [string, string | null, unknown, number, string][] = [
      ['acme', null, {}, 401, 'session_expired'],
      ['acme', randomBytes(32).toString('base64url'), {}, 401, 'session_expired'],
      ['acme', token, {}, 403, 'provider_not_allowed'],
      ['nope', token, {}, 404, 'provider_not_found'],
      ['other', token, { login_host: 'evil.example' }, 400, 'invalid_request'],
      ['other', token, { display: 'window' }, 400, 'invalid_request'],
      ['other', token, { display: ['page'] }, 400, 'invalid_request'],
      ['other', token, { login_host: 7 }, 400, 'invalid_request'],
      ['other', token, [], 400, 'invalid_request'],
    ];
    for (const [provider, bearer, body, status, code] of cases) {
      const answer = await h.postConnect(provider, bearer, body);
      assertProblem(answer, status, code);
      assert.equal(answer.headers.getSetCookie().length, 0, `${provider} set no cookie`);
    }
    // The session never rides in a URL: the old GET start is gone, whatever it carries.
    for (const path of ['/v1/connect/other', `/v1/connect/other?session=${token}`]) {
      const answer = await h.request(path, { headers: { accept: 'text/html' } });
      assert.equal(answer.status, 405, path);
      assert.equal(answer.headers.getSetCookie().length, 0, `${path} set no cookie`);
    }
  });
});
