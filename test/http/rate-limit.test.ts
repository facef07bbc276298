import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { LinkvaultError } from '../../src/errors.js';
import { clientAddressOf, createRateLimit } from '../../src/http/rate-limit.js';
import {
  startConnectHarnessWithOidc,
  type HttpAnswer,
  type OidcConnectHarness,
} from '../support/connect-harness.js';

const PER_MINUTE = 5;

function expectedLimitProblem(answer: HttpAnswer): Record<string, unknown> {
  return {
    type: 'https://linkvault.dev/problems/rate-limited',
    title: 'Too many requests',
    status: 429,
    code: 'rate_limited',
    detail: 'Too many requests from this client; retry later',
    request_id: answer.headers.get('x-request-id'),
  };
}

describe('when one client bursts past the per-client limit, then it gets 429 rate_limited with Retry-After', () => {
  let h: OidcConnectHarness;
  before(async () => {
    h = await startConnectHarnessWithOidc(
      { mode: 'oidc' },
      { env: { LINKVAULT_RATE_LIMIT_PER_MINUTE: String(PER_MINUTE) } },
    );
  });
  after(async () => {
    await h.close();
  });

  test('callbacks and connect starts share one bucket per address; X-Forwarded-For does not open another; the refusal is problem+json even for a browser', async () => {
    const session = await h.createSession({ tenant_id: 'tenant-rl', user_id: 'user-rl' });
    await h.startFlow('acme', session.session_token);
    await h.startFlow('acme', session.session_token);
    for (let i = 0; i < PER_MINUTE - 2; i += 1) {
      const forged = await h.callback('/v1/oauth/callback/acme?state=forged&code=x', null, {
        headers: { accept: 'application/json' },
      });
      assert.equal(forged.status, 400, forged.text);
    }
    const burst = [
      await h.postConnect(
        'acme',
        session.session_token,
        {},
        {
          accept: 'text/html',
          'x-forwarded-for': '203.0.113.7',
        },
      ),
      await h.callback('/v1/oauth/callback/acme?state=forged&code=x', null, {
        headers: { accept: 'application/json', 'x-forwarded-for': '198.51.100.9' },
      }),
    ];
    for (const refused of burst) {
      assert.equal(refused.status, 429, refused.text);
      assert.match(refused.headers.get('content-type') ?? '', /^application\/problem\+json/);
      assert.equal(refused.headers.get('cache-control'), 'no-store');
      // One token every 60/PER_MINUTE = 12 s.
      assert.equal(refused.headers.get('retry-after'), '12');
      assert.deepEqual(refused.json, expectedLimitProblem(refused));
    }
    // Service routes are not behind this limiter: minting sessions still works.
    await h.createSession({ tenant_id: 'tenant-rl', user_id: 'user-rl' });
  });
});

describe('when time passes, then the bucket refills at its rate', () => {
  test('one token per 60/perMinute seconds, never more than perMinute at once, per address', () => {
    let nowMs = 0;
    const limit = createRateLimit({ perMinute: 2, now: () => nowMs });
    const refusal = (key: string): number | null => {
      try {
        limit.take(key);
        return null;
      } catch (err) {
        assert.ok(err instanceof LinkvaultError && err.code === 'rate_limited');
        return err.retryAfterSeconds!;
      }
    };
    assert.equal(refusal('a'), null);
    assert.equal(refusal('a'), null);
    assert.equal(refusal('a'), 30);
    assert.equal(refusal('b'), null, 'another address has its own bucket');
    nowMs += 29_000;
    assert.equal(refusal('a'), 1);
    nowMs += 1_000;
    assert.equal(refusal('a'), null);
    nowMs += 3_600_000;
    assert.equal(refusal('a'), null);
    assert.equal(refusal('a'), null);
    assert.equal(refusal('a'), 30, 'the burst is capped at perMinute');
  });

  test('the table of addresses is bounded: the least recently seen is forgotten', () => {
    const limit = createRateLimit({ perMinute: 1, maxClients: 2, now: () => 0 });
    limit.take('a');
    limit.take('b');
    limit.take('c'); // forgets a
    limit.take('a'); // a starts again full, and b is forgotten
    assert.throws(
      () => limit.take('c'),
      (err) => err instanceof LinkvaultError,
    );
    limit.take('b');
  });
});

describe('when the client address is read, then X-Forwarded-For counts only as far as trusted proxies vouch', () => {
  const req = (peer: string, forwardedFor?: string | string[]) =>
    ({
      socket: { remoteAddress: peer },
      headers: forwardedFor === undefined ? {} : { 'x-forwarded-for': forwardedFor },
    }) as unknown as Parameters<typeof clientAddressOf>[0];

  test('with no trusted proxy, the TCP peer, whatever the header says', () => {
    assert.equal(clientAddressOf(req('192.0.2.1', '203.0.113.7'), 0), '192.0.2.1');
  });

  test('with one trusted proxy, the entry it appended, not what the client wrote before it', () => {
    assert.equal(clientAddressOf(req('10.0.0.2', '203.0.113.7'), 1), '203.0.113.7');
    assert.equal(
      clientAddressOf(req('10.0.0.2', '198.51.100.1, 198.51.100.2,203.0.113.7'), 1),
      '203.0.113.7',
    );
    assert.equal(
      clientAddressOf(req('10.0.0.2', ['198.51.100.1', '203.0.113.7, 10.0.0.1']), 2),
      '203.0.113.7',
    );
  });

  test('a chain shorter than the trusted proxies gives its first entry; no header gives the peer', () => {
    assert.equal(clientAddressOf(req('10.0.0.2', '203.0.113.7'), 3), '203.0.113.7');
    assert.equal(clientAddressOf(req('10.0.0.2'), 1), '10.0.0.2');
  });
});
