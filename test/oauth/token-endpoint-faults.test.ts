import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { LinkvaultError } from '../../src/errors.js';
import { createOAuthClient, type OAuthLog } from '../../src/oauth/openid-oauth-client.js';
import { parseRetryAfter } from '../../src/oauth/provider-fetch.js';
import type { OAuthClient } from '../../src/oauth/oauth-client.js';
import { Secret } from '../../src/secret.js';
import {
  startTokenEndpointStandIn,
  type TokenEndpointStandIn,
} from '../support/provider-stand-ins.js';
import { errorWithCode } from '../support/error-with-code.js';
import { freePort } from '../support/free-port.js';
import { createTestCatalogue, testProviderEntry } from '../support/test-catalogue.js';

const REDIRECT = 'http://127.0.0.1:1/v1/oauth/callback/faulty';
const TIMEOUT_MS = 400;

describe('when the token endpoint misbehaves, then every failure is classified by the port contract and nothing is retried', () => {
  let standIn: TokenEndpointStandIn;
  let oauth: OAuthClient;
  const logLines: string[] = [];
  const log: OAuthLog = {
    debug: (obj, msg) => logLines.push(JSON.stringify({ msg, ...obj })),
    warn: (obj, msg) => logLines.push(JSON.stringify({ msg, ...obj })),
  };
  let refreshToken: Secret;

  before(async () => {
    standIn = await startTokenEndpointStandIn();
    oauth = createOAuthClient({
      catalogue: createTestCatalogue([testProviderEntry('faulty', standIn.url)], standIn.client),
      config: { providerTimeoutMs: TIMEOUT_MS, allowInsecureProviderUrls: true },
      log,
    });
  });
  after(() => standIn.close());
  beforeEach(() => {
    refreshToken = new Secret(`rt_seed_${Math.random().toString(36).slice(2)}`);
    standIn.addRefreshToken(refreshToken.reveal());
  });

  const refresh = () =>
    oauth.refresh({ providerId: 'faulty', endpointVariables: {}, refreshToken });
  const refreshCount = () => standIn.tokenRequests().refresh_token ?? 0;

  it('refreshes normally and rotates', async () => {
    const before = refreshCount();
    const tokens = await refresh();
    assert.ok(tokens.refreshToken);
    assert.equal(standIn.isActive(refreshToken.reveal()), false);
    assert.equal(standIn.isActive(tokens.refreshToken.reveal()), true);
    assert.equal(refreshCount(), before + 1);
  });

  it('a timeout → provider_unavailable, maybe_delivered (the request was sent)', async () => {
    standIn.queue({ kind: 'hang' });
    const before = refreshCount();
    const startedAt = Date.now();
    await assert.rejects(
      refresh(),
      errorWithCode('provider_unavailable', (err) =>
        assert.equal(err.extra?.maybe_delivered, true),
      ),
    );
    assert.ok(Date.now() - startedAt < TIMEOUT_MS + 1500, 'bounded by the provider timeout');
    assert.equal(refreshCount(), before + 1, 'never retried');
  });

  it('a 500 → provider_unavailable, maybe_delivered', async () => {
    standIn.queue({ kind: 'status', status: 500, body: '<html>oops</html>' });
    const before = refreshCount();
    await assert.rejects(
      refresh(),
      errorWithCode('provider_unavailable', (err) =>
        assert.equal(err.extra?.maybe_delivered, true),
      ),
    );
    assert.equal(refreshCount(), before + 1);
  });

  it('a 503 with an HTTP-date Retry-After → provider_unavailable with retryAfterSeconds, not delivered', async () => {
    standIn.queue({
      kind: 'status',
      status: 503,
      retryAfter: new Date(Date.now() + 120_000).toUTCString(),
    });
    await assert.rejects(
      refresh(),
      errorWithCode('provider_unavailable', (err) => {
        assert.ok(
          err.retryAfterSeconds !== undefined &&
            err.retryAfterSeconds >= 118 &&
            err.retryAfterSeconds <= 121,
          String(err.retryAfterSeconds),
        );
        assert.equal(err.extra?.maybe_delivered, false);
      }),
    );
  });

  it('a 429 with Retry-After seconds → provider_unavailable with retryAfterSeconds', async () => {
    standIn.queue({ kind: 'status', status: 429, retryAfter: '17' });
    const before = refreshCount();
    await assert.rejects(
      refresh(),
      errorWithCode('provider_unavailable', (err) => {
        assert.equal(err.retryAfterSeconds, 17);
        assert.equal(err.extra?.maybe_delivered, false);
      }),
    );
    assert.equal(refreshCount(), before + 1);
  });

  it('invalid_grant → reauth_required', async () => {
    standIn.queue({ kind: 'error', error: 'invalid_grant' });
    await assert.rejects(refresh(), errorWithCode('reauth_required'));
  });

  it('invalid_client → provider_misconfigured', async () => {
    standIn.queue({ kind: 'error', error: 'invalid_client' });
    await assert.rejects(refresh(), errorWithCode('provider_misconfigured'));
  });

  it('unauthorized_client → provider_misconfigured', async () => {
    standIn.queue({ kind: 'error', error: 'unauthorized_client' });
    await assert.rejects(refresh(), errorWithCode('provider_misconfigured'));
  });

  it('another RFC 6749 error → provider_error naming the code', async () => {
    standIn.queue({ kind: 'error', error: 'invalid_scope' });
    await assert.rejects(
      refresh(),
      errorWithCode('provider_error', (err) =>
        assert.equal(err.extra?.provider_error, 'invalid_scope'),
      ),
    );
  });

  it('rotated then the connection dropped → provider_unavailable, maybe_delivered, and the provider did rotate', async () => {
    standIn.queue({ kind: 'rotate_then_drop' });
    const live = standIn.liveRefreshTokens().length;
    await assert.rejects(
      refresh(),
      errorWithCode('provider_unavailable', (err) =>
        assert.equal(err.extra?.maybe_delivered, true),
      ),
    );
    assert.equal(
      standIn.isActive(refreshToken.reveal()),
      false,
      'the old refresh token is gone at the provider',
    );
    assert.equal(standIn.liveRefreshTokens().length, live, 'a new one exists that nobody received');
  });

  it('an oversized answer → invalid_token_response', async () => {
    standIn.queue({ kind: 'oversized' });
    await assert.rejects(refresh(), errorWithCode('invalid_token_response'));
  });

  it('a 2xx answer without access_token → invalid_token_response', async () => {
    standIn.queue({ kind: 'status', status: 200, body: '{"token_type":"Bearer"}' });
    await assert.rejects(refresh(), errorWithCode('invalid_token_response'));
  });

  it('the code exchange is never retried either', async () => {
    standIn.queue({ kind: 'status', status: 502 });
    const start = await oauth.startAuthorization({
      providerId: 'faulty',
      endpointVariables: {},
      redirectUri: REDIRECT,
    });
    const callback = new URL(REDIRECT);
    callback.searchParams.set('code', 'code-1');
    callback.searchParams.set('state', start.checks.state.reveal());
    const before = standIn.tokenRequests().authorization_code ?? 0;
    await assert.rejects(
      oauth.completeAuthorization({
        providerId: 'faulty',
        endpointVariables: {},
        callbackUrl: callback,
        checks: start.checks,
      }),
      errorWithCode('provider_unavailable', (err) =>
        assert.equal(err.extra?.maybe_delivered, true),
      ),
    );
    assert.equal(standIn.tokenRequests().authorization_code, before + 1);
  });

  it('no token value ever reaches an error or a log line', async () => {
    standIn.queue({
      kind: 'status',
      status: 200,
      body: JSON.stringify({
        token_type: 'mac',
        access_token: 'at_canary_value',
        refresh_token: 'rt_canary_value',
      }),
    });
    let caught: unknown;
    await refresh().catch((err: unknown) => {
      caught = err;
    });
    assert.ok(caught instanceof LinkvaultError && caught.code === 'invalid_token_response');
    const everything = [
      JSON.stringify(caught),
      String(caught),
      (caught as Error).stack ?? '',
      String((caught as Error).cause),
      ((caught as Error).cause as Error | undefined)?.stack ?? '',
      ...logLines,
    ].join('\n');
    for (const secret of [
      'at_canary_value',
      'rt_canary_value',
      refreshToken.reveal(),
      standIn.client.clientSecret,
    ]) {
      assert.equal(everything.includes(secret), false, `leaked ${secret}`);
    }
  });
});

describe('when the provider cannot be reached at all, then the request is known not delivered', () => {
  it('connection refused → provider_unavailable, maybe_delivered false', async () => {
    const port = await freePort();
    const oauth = createOAuthClient({
      catalogue: createTestCatalogue([testProviderEntry('faulty', `http://127.0.0.1:${port}`)]),
      config: { providerTimeoutMs: TIMEOUT_MS, allowInsecureProviderUrls: true },
    });
    await assert.rejects(
      oauth.refresh({
        providerId: 'faulty',
        endpointVariables: {},
        refreshToken: new Secret('rt'),
      }),
      errorWithCode('provider_unavailable', (err) =>
        assert.equal(err.extra?.maybe_delivered, false),
      ),
    );
  });
});

describe('when Retry-After is parsed, then seconds and HTTP dates both work', () => {
  it('parses delta-seconds, HTTP dates, and ignores junk', () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    assert.equal(parseRetryAfter('120', now), 120);
    assert.equal(parseRetryAfter('Thu, 01 Jan 2026 00:01:30 GMT', now), 90);
    assert.equal(parseRetryAfter('Wed, 31 Dec 2025 23:00:00 GMT', now), 0);
    assert.equal(parseRetryAfter('soon', now), undefined);
    assert.equal(parseRetryAfter(null, now), undefined);
  });
});
