import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ERROR_CATALOGUE, problemType } from '../../src/errors.js';
import { startKmsStandIn, type KmsStandIn } from '../support/kms-stand-in.js';
import { startKmsStack, type KmsStack } from './kms-stack.js';

/**
 * A hanging KMS on the token route, through the real AWS SDK against the KMS stand-in: what each
 * caller gets, how long it waits, and how many Decrypt calls KMS sees. The data-key cache is cold,
 * as after its entries expired.
 */

const CALL_BUDGET_MS = 1000;
const BREAKER_OPEN_MS = 30_000;
const CALLERS = 20;

interface Released {
  readonly status: number;
  readonly retryAfter: string | null;
  readonly body: Record<string, unknown>;
  readonly requestId: string | null;
  readonly elapsedMs: number;
}

describe('when KMS hangs on the token route', () => {
  let kms: KmsStandIn;
  let stack: KmsStack;
  let clockOffsetMs = 0;

  before(async () => {
    kms = await startKmsStandIn();
    stack = await startKmsStack(kms, {
      callBudgetMs: CALL_BUDGET_MS,
      breakerOpenMs: BREAKER_OPEN_MS,
      now: () => Date.now() + clockOffsetMs,
    });
  });
  after(async () => {
    await stack.close();
    await kms.close();
  });

  async function release(linkId: string): Promise<Released> {
    const started = performance.now();
    const res = await fetch(`${stack.url}/v1/links/${linkId}/token`, {
      method: 'POST',
      headers: { authorization: stack.services.bearer('crm-hs') },
    });
    const body = (await res.json()) as Record<string, unknown>;
    return {
      status: res.status,
      retryAfter: res.headers.get('retry-after'),
      body,
      requestId: res.headers.get('x-request-id'),
      elapsedMs: performance.now() - started,
    };
  }

  function assertKeyServiceUnavailable(r: Released): void {
    assert.equal(r.status, 503);
    assert.deepEqual(r.body, {
      type: problemType('key_service_unavailable'),
      title: ERROR_CATALOGUE.key_service_unavailable.title,
      status: 503,
      code: 'key_service_unavailable',
      request_id: r.requestId,
    });
    assert.ok(Number(r.retryAfter) >= 1, `Retry-After ${String(r.retryAfter)}`);
  }

  it('then 20 concurrent callers get 503 key_service_unavailable within the budget from ONE Decrypt; while the breaker is open KMS sees no call; once KMS is back, releases work without a restart', async (t) => {
    await stack.seedLink('lnk_kms_hang', 'at-kms-hang');
    kms.setFault('Decrypt', 'timeout');
    const decryptsBefore = kms.calls('Decrypt');

    const first = await Promise.all(Array.from({ length: CALLERS }, () => release('lnk_kms_hang')));
    for (const r of first) {
      assertKeyServiceUnavailable(r);
      // The budget is honoured: a generous bound (twice the budget), not a tight timing.
      assert.ok(r.elapsedMs < 2 * CALL_BUDGET_MS, `answered after ${Math.round(r.elapsedMs)} ms`);
    }
    t.diagnostic(
      `slowest 503 after ${Math.round(Math.max(...first.map((r) => r.elapsedMs)))} ms (budget ${CALL_BUDGET_MS} ms); ${kms.calls('Decrypt') - decryptsBefore} Decrypt for ${CALLERS} callers`,
    );
    assert.equal(kms.calls('Decrypt') - decryptsBefore, 1, 'one Decrypt for 20 callers');

    // Known down: further callers are answered at once, and KMS is not called.
    const whileOpen = await Promise.all(
      Array.from({ length: CALLERS }, () => release('lnk_kms_hang')),
    );
    for (const r of whileOpen) {
      assertKeyServiceUnavailable(r);
      assert.ok(Number(r.retryAfter) <= BREAKER_OPEN_MS / 1000);
    }
    assert.equal(kms.calls('Decrypt') - decryptsBefore, 1, 'no Decrypt while the breaker is open');

    // KMS recovers; once the open period is over, the next release is the probe and succeeds.
    kms.setFault('Decrypt', null);
    clockOffsetMs += BREAKER_OPEN_MS;
    const recovered = await release('lnk_kms_hang');
    assert.equal(recovered.status, 200, JSON.stringify(recovered.body));
    assert.equal(recovered.body.access_token, 'at-kms-hang');
    assert.equal(kms.calls('Decrypt') - decryptsBefore, 2);
    const again = await release('lnk_kms_hang');
    assert.equal(again.status, 200);
    assert.equal(kms.calls('Decrypt') - decryptsBefore, 2, 'then served from the data-key cache');
  });
});
