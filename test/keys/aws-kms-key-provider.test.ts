import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { isLinkvaultError } from '../../src/errors.js';
import { AwsKmsKeyProvider, translateKmsError } from '../../src/keys/aws-kms-key-provider.js';
import { Metrics } from '../../src/metrics.js';
import {
  startKmsStandIn,
  type KmsFault,
  type KmsOperation,
  type KmsStandIn,
} from '../support/kms-stand-in.js';
import { IDENTITY, rejectsWith, runKeyProviderContract } from './key-provider-contract.js';

const CREDENTIALS = {
  accessKeyId: 'AKIDSTANDIN0000000000',
  secretAccessKey: 'stand-in-secret-not-a-real-one',
};

function providerFor(
  kms: KmsStandIn,
  keyId: string,
  extra: { maxAttempts?: number; requestTimeoutMs?: number; metrics?: Metrics } = {},
): AwsKmsKeyProvider {
  // Breaker and ping cache off: these tests look at each call on its own (kms-faults.test.ts covers both).
  return new AwsKmsKeyProvider({
    keyId,
    region: kms.region,
    endpoint: kms.endpoint,
    credentials: CREDENTIALS,
    maxAttempts: extra.maxAttempts ?? 2,
    requestTimeoutMs: extra.requestTimeoutMs ?? 300,
    breakerOpenMs: 0,
    pingCacheMs: 0,
    metrics: extra.metrics ?? new Metrics(),
  });
}

runKeyProviderContract('aws-kms (real SDK against the KMS stand-in)', async () => {
  const kms = await startKmsStandIn();
  const arn = kms.createKey();
  const metrics = new Metrics();
  const provider = providerFor(kms, arn, { metrics });
  return {
    provider,
    metrics,
    label: 'aws-kms',
    unknownKid: `arn:aws:kms:${kms.region}:${kms.accountId}:key/00000000-0000-4000-8000-000000000000`,
    close: async () => {
      provider.destroy();
      await kms.close();
    },
  };
});

describe('AwsKmsKeyProvider against the KMS stand-in', () => {
  let kms: KmsStandIn;
  let arn: string;
  before(async () => {
    kms = await startKmsStandIn();
    arn = kms.createKey('alias/linkvault');
  });
  after(async () => {
    await kms.close();
  });

  it('when the key is configured by alias, then kids are the key ARN KMS returns (learnt on ping)', async () => {
    const provider = providerFor(kms, 'alias/linkvault');
    try {
      assert.equal(provider.currentKeyId(), 'alias/linkvault');
      await provider.ping();
      assert.equal(provider.currentKeyId(), arn);
      const generated = await provider.generateDataKey(IDENTITY);
      assert.equal(generated.kid, arn);
    } finally {
      provider.destroy();
    }
  });

  it('when Decrypt is asked with another encryption context, then KMS refuses and the provider says sealed_record_invalid', async () => {
    const provider = providerFor(kms, arn);
    try {
      const generated = await provider.generateDataKey(IDENTITY);
      const before = kms.calls('Decrypt');
      await rejectsWith(
        provider.unwrapDataKey(generated.kid, generated.wrapped, { ...IDENTITY, tenant: 'other' }),
        'sealed_record_invalid',
      );
      assert.equal(
        kms.calls('Decrypt'),
        before + 1,
        'the refusal came from KMS checking the context',
      );
      await rejectsWith(
        provider.rewrapDataKey(generated.kid, generated.wrapped, { ...IDENTITY, field: 'other' }),
        'sealed_record_invalid',
      );
    } finally {
      provider.destroy();
    }
  });

  it('when a wrapped key is presented with the ARN of another existing key, then IncorrectKey → sealed_record_invalid', async () => {
    const other = kms.createKey();
    const provider = providerFor(kms, arn);
    try {
      const generated = await provider.generateDataKey(IDENTITY);
      await rejectsWith(
        provider.unwrapDataKey(other, generated.wrapped, IDENTITY),
        'sealed_record_invalid',
      );
    } finally {
      provider.destroy();
    }
  });

  it('when a record names a kid that is not a KMS key ARN, then sealed_record_invalid without calling KMS', async () => {
    const provider = providerFor(kms, arn);
    try {
      const before = kms.calls();
      await rejectsWith(
        provider.unwrapDataKey('local:0123456789abcdef', Buffer.alloc(60), IDENTITY),
        'sealed_record_invalid',
      );
      assert.equal(kms.calls(), before);
    } finally {
      provider.destroy();
    }
  });

  const FAULTS: readonly KmsFault[] = [
    'throttling',
    'internal',
    'dependency_timeout',
    'non_json',
    'access_denied',
    'timeout',
  ];
  const OPERATIONS: readonly { name: string; op: KmsOperation }[] = [
    { name: 'generate', op: 'GenerateDataKey' },
    { name: 'unwrap', op: 'Decrypt' },
    { name: 'rewrap', op: 'ReEncrypt' },
    { name: 'ping', op: 'DescribeKey' },
  ];

  for (const fault of FAULTS) {
    it(`when KMS answers ${fault} to every operation, then each rejects key_service_unavailable within the attempt budget`, async () => {
      const metrics = new Metrics();
      const provider = providerFor(kms, arn, { maxAttempts: 2, requestTimeoutMs: 250, metrics });
      try {
        const generated = await provider.generateDataKey(IDENTITY);
        kms.setFault('*', fault);
        for (const { name, op } of OPERATIONS) {
          const callsBefore = kms.calls(op);
          const started = performance.now();
          const attempt =
            name === 'generate'
              ? provider.generateDataKey(IDENTITY)
              : name === 'unwrap'
                ? provider.unwrapDataKey(generated.kid, generated.wrapped, IDENTITY)
                : name === 'rewrap'
                  ? provider.rewrapDataKey(generated.kid, generated.wrapped, IDENTITY)
                  : provider.ping();
          await assert.rejects(attempt, (err: unknown) => {
            assert.ok(isLinkvaultError(err, 'key_service_unavailable'), `${name}: ${String(err)}`);
            assert.ok((err.retryAfterSeconds ?? 0) > 0, 'carries Retry-After');
            return true;
          });
          const elapsedMs = performance.now() - started;
          // Two attempts of at most 250 ms each plus SDK back-off; nowhere near a hang.
          assert.ok(elapsedMs < 3000, `${name} took ${Math.round(elapsedMs)} ms`);
          assert.ok(
            kms.calls(op) - callsBefore >= 1 && kms.calls(op) - callsBefore <= 2,
            `${name}: at most maxAttempts calls`,
          );
          assert.equal(
            metrics.keyServiceCalls.get({
              provider: 'aws-kms',
              operation: name,
              outcome: 'unavailable',
            }),
            1,
          );
        }
      } finally {
        kms.setFault('*', null);
        provider.destroy();
      }
    });
  }

  it('when KMS throttles once and maxAttempts is 2, then the SDK retries and the call succeeds', async () => {
    const provider = providerFor(kms, arn, { maxAttempts: 2 });
    try {
      const before = kms.calls('GenerateDataKey');
      kms.setFault('GenerateDataKey', 'throttling', 1);
      const generated = await provider.generateDataKey(IDENTITY);
      assert.equal(generated.plaintext.length, 32);
      assert.equal(kms.calls('GenerateDataKey'), before + 2);
    } finally {
      provider.destroy();
    }
  });

  it('when the key is disabled or pending deletion, then new keys, unwraps and ping fail key_service_unavailable; re-enabled, they work', async () => {
    const key = kms.createKey();
    const provider = providerFor(kms, key);
    try {
      const generated = await provider.generateDataKey(IDENTITY);
      for (const state of ['Disabled', 'PendingDeletion'] as const) {
        kms.setKeyState(key, state);
        await rejectsWith(provider.generateDataKey(IDENTITY), 'key_service_unavailable');
        await rejectsWith(
          provider.unwrapDataKey(generated.kid, generated.wrapped, IDENTITY),
          'key_service_unavailable',
        );
        await rejectsWith(provider.ping(), 'key_service_unavailable');
      }
      kms.setKeyState(key, 'Enabled');
      await provider.ping();
      assert.deepEqual(
        await provider.unwrapDataKey(generated.kid, generated.wrapped, IDENTITY),
        generated.plaintext,
      );
    } finally {
      provider.destroy();
    }
  });

  it('when the configured key does not exist, then generate and ping fail key_service_unavailable (configuration, not the record)', async () => {
    const provider = providerFor(kms, 'alias/nowhere');
    try {
      await rejectsWith(provider.generateDataKey(IDENTITY), 'key_service_unavailable');
      await rejectsWith(provider.ping(), 'key_service_unavailable');
    } finally {
      provider.destroy();
    }
  });

  it('when nothing listens at the endpoint, then key_service_unavailable quickly', async () => {
    const gone = await startKmsStandIn();
    const goneArn = gone.createKey();
    await gone.close();
    const provider = providerFor(gone, goneArn, { maxAttempts: 1 });
    try {
      const started = performance.now();
      await rejectsWith(provider.generateDataKey(IDENTITY), 'key_service_unavailable');
      await rejectsWith(provider.ping(), 'key_service_unavailable');
      assert.ok(performance.now() - started < 2000);
    } finally {
      provider.destroy();
    }
  });
});

describe('translateKmsError', () => {
  it('when an error carries a type, then it is classified by the type and never by the message', () => {
    const typed = (name: string, message: string) =>
      Object.assign(new Error(message), { name, __type: name });
    assert.equal(
      translateKmsError(typed('InvalidCiphertextException', ''), 'unwrap').code,
      'sealed_record_invalid',
    );
    assert.equal(
      translateKmsError(typed('IncorrectKeyException', 'x'), 'rewrap').code,
      'sealed_record_invalid',
    );
    assert.equal(
      translateKmsError(
        { __type: 'com.amazonaws.kms#InvalidCiphertextException', message: '' },
        'unwrap',
      ).code,
      'sealed_record_invalid',
    );
    assert.equal(
      translateKmsError(typed('NotFoundException', ''), 'unwrap').code,
      'sealed_record_invalid',
    );
    assert.equal(
      translateKmsError(typed('NotFoundException', ''), 'generate').code,
      'key_service_unavailable',
    );
    assert.equal(
      translateKmsError(typed('NotFoundException', ''), 'rewrap').code,
      'key_service_unavailable',
    );
    assert.equal(
      translateKmsError(typed('ThrottlingException', 'InvalidCiphertextException'), 'unwrap').code,
      'key_service_unavailable',
    );
    assert.equal(
      translateKmsError(new SyntaxError('Unexpected token <'), 'unwrap').code,
      'key_service_unavailable',
    );
    assert.equal(
      translateKmsError(new Error('InvalidCiphertextException'), 'unwrap').code,
      'key_service_unavailable',
    );
    assert.equal(
      translateKmsError(typed('AccessDeniedException', ''), 'generate').retryAfterSeconds,
      30,
    );
    assert.equal(
      translateKmsError(typed('ThrottlingException', ''), 'generate').retryAfterSeconds,
      1,
    );
  });
});
