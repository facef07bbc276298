import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { isLinkvaultError } from '../../src/errors.js';
import { AwsKmsKeyProvider } from '../../src/keys/aws-kms-key-provider.js';
import { Metrics } from '../../src/metrics.js';
import { startKmsStandIn, type KmsStandIn } from '../support/kms-stand-in.js';
import { IDENTITY } from './key-provider-contract.js';

/**
 * The AWS KMS provider's breaker, through the real SDK against the KMS stand-in: what trips it
 * (KMS down: no answer, 5xx) and what does not (KMS up and refusing), and that an open breaker lets
 * exactly one probe through once its period is over.
 */

const BREAKER_OPEN_MS = 30_000;

describe('AwsKmsKeyProvider breaker', () => {
  let kms: KmsStandIn;
  let arn: string;
  let clockOffsetMs = 0;
  before(async () => {
    kms = await startKmsStandIn();
    arn = kms.createKey();
  });
  after(async () => {
    await kms.close();
  });

  function provider(metrics = new Metrics()): AwsKmsKeyProvider {
    return new AwsKmsKeyProvider({
      keyId: arn,
      region: kms.region,
      endpoint: kms.endpoint,
      credentials: { accessKeyId: 'AKIDSTANDIN0000000000', secretAccessKey: 'stand-in-secret' },
      maxAttempts: 1,
      callBudgetMs: 500,
      breakerOpenMs: BREAKER_OPEN_MS,
      pingCacheMs: 0,
      now: () => Date.now() + clockOffsetMs,
      metrics,
    });
  }

  const unavailable = (err: unknown) => isLinkvaultError(err, 'key_service_unavailable');

  it('when KMS is up but refuses (access denied, throttling), then the breaker stays closed and the next call reaches KMS', async () => {
    const keys = provider();
    try {
      const generated = await keys.generateDataKey(IDENTITY);
      for (const fault of ['access_denied', 'throttling'] as const) {
        kms.setFault('Decrypt', fault, 1);
        await assert.rejects(
          keys.unwrapDataKey(generated.kid, generated.wrapped, IDENTITY),
          unavailable,
        );
        const before = kms.calls('Decrypt');
        const key = await keys.unwrapDataKey(generated.kid, generated.wrapped, IDENTITY);
        assert.deepEqual(key, generated.plaintext);
        assert.equal(kms.calls('Decrypt'), before + 1, `${fault}: the next call reached KMS`);
      }
    } finally {
      kms.setFault('Decrypt', null);
      keys.destroy();
    }
  });

  it('when KMS answers 5xx, then the breaker opens: calls fail at once with Retry-After, counted as breaker_open, and KMS sees none', async () => {
    const metrics = new Metrics();
    const keys = provider(metrics);
    try {
      const generated = await keys.generateDataKey(IDENTITY);
      kms.setFault('*', 'internal', 1);
      await assert.rejects(
        keys.unwrapDataKey(generated.kid, generated.wrapped, IDENTITY),
        unavailable,
      );
      const before = kms.calls();
      for (const call of [
        () => keys.unwrapDataKey(generated.kid, generated.wrapped, IDENTITY),
        () => keys.generateDataKey(IDENTITY),
        () => keys.rewrapDataKey(generated.kid, generated.wrapped, IDENTITY),
        () => keys.ping(),
      ]) {
        await assert.rejects(call(), (err: unknown) => {
          assert.ok(unavailable(err));
          assert.equal(err.retryAfterSeconds, BREAKER_OPEN_MS / 1000);
          return true;
        });
      }
      assert.equal(kms.calls(), before, 'no call while open');
      assert.equal(
        metrics.keyServiceCalls.get({
          provider: 'aws-kms',
          operation: 'unwrap',
          outcome: 'breaker_open',
        }),
        1,
      );
    } finally {
      kms.setFault('*', null);
      clockOffsetMs += BREAKER_OPEN_MS;
      keys.destroy();
    }
  });

  it('when the open period is over, then one probe reaches KMS while the others fail at once; a probe that hangs opens the breaker again, one that answers closes it', async () => {
    const keys = provider();
    try {
      const generated = await keys.generateDataKey(IDENTITY);
      kms.setFault('Decrypt', 'timeout');
      const unwrap = () => keys.unwrapDataKey(generated.kid, generated.wrapped, IDENTITY);
      const before = kms.calls('Decrypt');
      await assert.rejects(unwrap(), unavailable);

      clockOffsetMs += BREAKER_OPEN_MS;
      const probe = unwrap();
      await Promise.all([1, 2, 3].map(() => assert.rejects(unwrap(), unavailable)));
      await assert.rejects(probe, unavailable);
      await assert.rejects(unwrap(), unavailable);
      // The first call and the probe: the three callers beside the probe and the one after it made none.
      assert.equal(kms.calls('Decrypt'), before + 2, 'only the probe reached KMS');

      kms.setFault('Decrypt', null);
      clockOffsetMs += BREAKER_OPEN_MS;
      assert.deepEqual(await unwrap(), generated.plaintext);
      assert.deepEqual(await unwrap(), generated.plaintext);
      assert.equal(kms.calls('Decrypt'), before + 4, 'closed: every call reaches KMS again');
    } finally {
      kms.setFault('Decrypt', null);
      keys.destroy();
    }
  });

  it('when the probe is answered with a refusal (access denied), then KMS is up and the breaker closes', async () => {
    const keys = provider();
    try {
      const generated = await keys.generateDataKey(IDENTITY);
      const unwrap = () => keys.unwrapDataKey(generated.kid, generated.wrapped, IDENTITY);
      kms.setFault('Decrypt', 'internal', 1);
      await assert.rejects(unwrap(), unavailable);
      await assert.rejects(unwrap(), unavailable);
      const before = kms.calls('Decrypt');
      clockOffsetMs += BREAKER_OPEN_MS;
      kms.setFault('Decrypt', 'access_denied', 1);
      await assert.rejects(unwrap(), unavailable);
      // Closed, not half-open: concurrent callers all reach KMS, none is refused at once.
      const keysAfter = await Promise.all([unwrap(), unwrap(), unwrap()]);
      for (const key of keysAfter) assert.deepEqual(key, generated.plaintext);
      assert.equal(kms.calls('Decrypt'), before + 4, 'the probe and the three calls after it');
    } finally {
      kms.setFault('Decrypt', null);
      keys.destroy();
    }
  });
});
