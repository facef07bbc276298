import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { describe, it } from 'node:test';
import {
  generateWebhookSecret,
  signWebhook,
  verifyWebhookSignature,
} from '../../../src/links/webhooks/standard-webhooks.js';
import {
  nextAttemptAtMs,
  WEBHOOK_RETRY_DELAYS_MS,
} from '../../../src/links/webhooks/webhook-delivery-job.js';
import { lifecycleEventsOf } from '../../../src/links/webhooks/lifecycle-webhooks.js';

describe('Standard Webhooks signing', () => {
  it('when a delivery is signed, then an independent implementation of the scheme computes the same signature', () => {
    // The scheme's published test vector (standard-webhooks spec, "Verifying webhook signatures").
    const secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
    const id = 'msg_p5jXN8AQM9LWM0D4loKWxJek';
    const body = '{"test": 2432232314}';
    assert.equal(
      signWebhook(secret, id, 1614265330, body),
      'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
    );
    const generated = generateWebhookSecret();
    assert.match(generated, /^whsec_[A-Za-z0-9+/]{43}=$/);
    const independent = `v1,${createHmac('sha256', Buffer.from(generated.slice(6), 'base64'))
      .update(`evt_1.1700000000.{}`)
      .digest('base64')}`;
    assert.equal(signWebhook(generated, 'evt_1', 1700000000, '{}'), independent);
  });

  it('when a signature is verified, then a changed body, id, stale timestamp or other secret fails', () => {
    const secret = generateWebhookSecret();
    const sig = signWebhook(secret, 'evt_1', 1000, '{"a":1}');
    const ok = { id: 'evt_1', timestamp: '1000', signature: `v1,bogus ${sig}` };
    assert.equal(verifyWebhookSignature(secret, ok, '{"a":1}', 1100), true);
    assert.equal(verifyWebhookSignature(secret, ok, '{"a":2}', 1100), false);
    assert.equal(verifyWebhookSignature(secret, { ...ok, id: 'evt_2' }, '{"a":1}', 1100), false);
    assert.equal(verifyWebhookSignature(secret, ok, '{"a":1}', 1000 + 301), false);
    assert.equal(verifyWebhookSignature(generateWebhookSecret(), ok, '{"a":1}', 1100), false);
    assert.equal(
      verifyWebhookSignature(secret, { ...ok, timestamp: '1e3' }, '{"a":1}', 1100),
      false,
    );
  });
});

describe('the retry schedule', () => {
  it('when attempts keep failing, then the first three fall within a minute and retries last at least 24 hours', () => {
    const first = 1_000_000;
    let now = first;
    const times = [now];
    for (let attempts = 1; ; attempts++) {
      const next = nextAttemptAtMs(first, attempts, now, null);
      if (next === null) break;
      now = next;
      times.push(now);
    }
    assert.ok(times[2]! - first < 60_000, 'third attempt within a minute');
    assert.ok(
      times.at(-1)! - first >= 24 * 3_600_000,
      'last attempt at least 24 h after the first',
    );
    assert.ok(times.length < 20);
    assert.equal(times[1]! - first, WEBHOOK_RETRY_DELAYS_MS[0]);
  });

  it('when the receiver sends Retry-After, then it moves the attempt later, never earlier', () => {
    assert.equal(nextAttemptAtMs(0, 1, 0, 60), 60_000);
    assert.equal(nextAttemptAtMs(0, 1, 0, 1), WEBHOOK_RETRY_DELAYS_MS[0]);
    assert.equal(nextAttemptAtMs(0, 1, 0, 10 ** 9), 12 * 3_600_000, 'capped');
  });
});

describe('audit records as lifecycle events', () => {
  it('when records are projected, then exactly the lifecycle ones become events', () => {
    assert.deepEqual(lifecycleEventsOf('token.released', {}), []);
    assert.deepEqual(lifecycleEventsOf('link.connected', {}), [
      { type: 'link.connected', extra: {} },
    ]);
    assert.deepEqual(
      lifecycleEventsOf('link.needs_reauth', { reason: 'refresh_token_rejected' }).map(
        (e) => e.type,
      ),
      ['link.refresh_failed', 'link.needs_reauth'],
    );
    assert.deepEqual(lifecycleEventsOf('link.revocation_requested', { revoked_by: 'user' }), [
      { type: 'link.revoked', extra: { revoked_by: 'user' } },
    ]);
    assert.deepEqual(
      lifecycleEventsOf('link.provider_revocation', { final: false, outcome: 'retry' }),
      [],
    );
    assert.deepEqual(
      lifecycleEventsOf('link.provider_revocation', {
        final: true,
        outcome: 'failed',
        job_role: 'primary',
        error_code: 'provider_unavailable',
      }),
      [{ type: 'link.revocation_failed', extra: { error_code: 'provider_unavailable' } }],
    );
    assert.deepEqual(lifecycleEventsOf('link.refreshed', { recovered: true }), [
      { type: 'link.recovered', extra: {} },
    ]);
    assert.deepEqual(lifecycleEventsOf('link.refreshed', {}), []);
  });
});
