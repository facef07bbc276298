import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import {
  signWebhook,
  verifyWebhook,
  WebhookVerificationError,
} from '../../packages/node/src/webhooks.js';

/**
 * verifyWebhook (packages/node) against an independent implementation of the Standard Webhooks
 * scheme written here from the contract's text, on WebCrypto rather than node:crypto's HMAC:
 * `webhook-signature: v1,<base64 HMAC-SHA256 over "<id>.<timestamp>.<body>">`, keyed by the
 * base64-decoded bytes after `whsec_`.
 */

async function independentSign(
  secret: string,
  id: string,
  ts: number,
  body: string,
): Promise<string> {
  const keyBytes = Uint8Array.from(atob(secret.replace(/^whsec_/, '')), (c) => c.charCodeAt(0));
  const key = await crypto.subtle.importKey(
    'raw',
    keyBytes,
    { name: 'HMAC', hash: 'SHA-256' },
    false,
    ['sign'],
  );
  const mac = await crypto.subtle.sign(
    'HMAC',
    key,
    new TextEncoder().encode(`${id}.${ts}.${body}`),
  );
  return `v1,${btoa(String.fromCharCode(...new Uint8Array(mac)))}`;
}

async function independentVerify(
  secret: string,
  headers: Record<string, string>,
  body: string,
): Promise<boolean> {
  const expected = await independentSign(
    secret,
    headers['webhook-id']!,
    Number(headers['webhook-timestamp']),
    body,
  );
  return headers['webhook-signature']!.split(' ').includes(expected);
}

const secret = `whsec_${randomBytes(32).toString('base64')}`;
const nowMs = 1_765_000_000_000;
const ts = nowMs / 1000;
const body = JSON.stringify({
  type: 'link.revoked',
  timestamp: new Date(nowMs).toISOString(),
  data: { link_id: 'lnk_1', tenant_id: 't', user_id: 'u', provider_id: 'acme', revoked_by: 'user' },
});

describe('verifyWebhook', () => {
  test('when a delivery is signed by the independent implementation, then verifyWebhook accepts it and returns the event', async () => {
    const headers = {
      'Webhook-Id': 'evt_1',
      'Webhook-Timestamp': String(ts),
      'Webhook-Signature': await independentSign(secret, 'evt_1', ts, body),
    };
    const event = verifyWebhook(headers, Buffer.from(body), secret, { now: () => nowMs });
    assert.deepEqual(event, {
      id: 'evt_1',
      type: 'link.revoked',
      timestamp: new Date(nowMs).toISOString(),
      data: {
        link_id: 'lnk_1',
        tenant_id: 't',
        user_id: 'u',
        provider_id: 'acme',
        revoked_by: 'user',
      },
    });
    // A Fetch Headers object works too.
    assert.equal(
      verifyWebhook(new Headers(headers), body, secret, { now: () => nowMs }).id,
      'evt_1',
    );
  });

  test('when the SDK signs, then the independent implementation verifies it', async () => {
    const headers = {
      'webhook-id': 'evt_2',
      'webhook-timestamp': String(ts),
      'webhook-signature': signWebhook(secret, 'evt_2', ts, body),
    };
    assert.equal(await independentVerify(secret, headers, body), true);
  });

  test('when the published Standard Webhooks example is checked, then its signature matches', () => {
    const example = {
      secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
      id: 'msg_p5jXN8AQM9LWM0D4loKWxJek',
      timestamp: 1614265330,
      body: '{"test": 2432232314}',
      signature: 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
    };
    assert.equal(
      signWebhook(example.secret, example.id, example.timestamp, example.body),
      example.signature,
    );
  });

  test('when the body, id, timestamp or secret differ, or the timestamp is stale, then it throws WebhookVerificationError', async () => {
    const good = {
      'webhook-id': 'evt_3',
      'webhook-timestamp': String(ts),
      'webhook-signature': await independentSign(secret, 'evt_3', ts, body),
    };
    const at = { now: () => nowMs };
    const refused = [
      () => verifyWebhook(good, body.replace('lnk_1', 'lnk_2'), secret, at),
      () => verifyWebhook({ ...good, 'webhook-id': 'evt_4' }, body, secret, at),
      () => verifyWebhook({ ...good, 'webhook-timestamp': String(ts + 1) }, body, secret, at),
      () => verifyWebhook(good, body, `whsec_${randomBytes(32).toString('base64')}`, at),
      () => verifyWebhook(good, body, secret, { now: () => nowMs + 301_000 }),
      () => verifyWebhook({ ...good, 'webhook-signature': 'v2,AAAA' }, body, secret, at),
      () => verifyWebhook({ 'webhook-id': 'evt_3' }, body, secret, at),
    ];
    for (const [i, attempt] of refused.entries())
      assert.throws(attempt, WebhookVerificationError, `case ${i}`);
    // The control: the same delivery, untouched, verifies.
    assert.equal(verifyWebhook(good, body, secret, at).id, 'evt_3');
  });

  test('when several signatures are sent (a secret being rotated), then one valid signature suffices', async () => {
    const other = `whsec_${randomBytes(32).toString('base64')}`;
    const headers = {
      'webhook-id': 'evt_5',
      'webhook-timestamp': String(ts),
      'webhook-signature': `${await independentSign(other, 'evt_5', ts, body)} ${await independentSign(secret, 'evt_5', ts, body)}`,
    };
    assert.equal(verifyWebhook(headers, body, secret, { now: () => nowMs }).id, 'evt_5');
  });
});
