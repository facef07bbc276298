import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { isLinkvaultError } from '../../src/errors.js';
import type { KeyProvider, SealIdentity } from '../../src/keys/key-provider.js';
import type { Metrics } from '../../src/metrics.js';

/**
 * The KeyProvider contract, run against every adapter (local-key-provider.test.ts,
 * aws-kms-key-provider.test.ts). Each adapter test supplies a live provider on real peers.
 */
export interface KeyProviderSubject {
  readonly provider: KeyProvider;
  readonly metrics: Metrics;
  /** The `provider` label of its metrics. */
  readonly label: 'local' | 'aws-kms';
  /** A well-formed key id this provider has never seen. */
  readonly unknownKid: string;
  readonly close: () => Promise<void>;
}

export const IDENTITY: SealIdentity = Object.freeze({
  tenant: 'acme',
  link: 'lnk_1',
  provider: 'hubspot',
  field: 'token_set',
});

/** Rejects with a LinkvaultError of exactly this code. */
export async function rejectsWith(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isLinkvaultError(err), `expected a LinkvaultError, got ${String(err)}`);
    assert.equal(err.code, code);
    return true;
  });
}

export function flipBit(bytes: Buffer, index: number, bit = 0): Buffer {
  const copy = Buffer.from(bytes);
  copy[index] = copy[index]! ^ (1 << bit);
  return copy;
}

export function runKeyProviderContract(
  name: string,
  setup: () => Promise<KeyProviderSubject>,
): void {
  describe(`KeyProvider contract: ${name}`, () => {
    let subject: KeyProviderSubject;
    before(async () => {
      subject = await setup();
    });
    after(async () => {
      await subject.close();
    });

    it('when a data key is generated, then it is 32 bytes under the current kid and its wrapped form unwraps to it', async () => {
      const { provider } = subject;
      const generated = await provider.generateDataKey(IDENTITY);
      assert.equal(generated.plaintext.length, 32);
      assert.equal(generated.kid, provider.currentKeyId());
      assert.ok(generated.wrapped.length > 32);
      assert.equal(
        generated.wrapped.includes(generated.plaintext),
        false,
        'the wrapped key does not contain the key',
      );
      const unwrapped = await provider.unwrapDataKey(generated.kid, generated.wrapped, IDENTITY);
      assert.deepEqual(unwrapped, generated.plaintext);
    });

    it('when two data keys are generated, then both the keys and their wrapped forms differ', async () => {
      const a = await subject.provider.generateDataKey(IDENTITY);
      const b = await subject.provider.generateDataKey(IDENTITY);
      assert.notDeepEqual(a.plaintext, b.plaintext);
      assert.notDeepEqual(a.wrapped, b.wrapped);
    });

    it('when a wrapped key is unwrapped under an identity differing in any one member, then sealed_record_invalid', async () => {
      const generated = await subject.provider.generateDataKey(IDENTITY);
      for (const member of ['tenant', 'link', 'provider', 'field'] as const) {
        const other = { ...IDENTITY, [member]: `${IDENTITY[member]}x` };
        await rejectsWith(
          subject.provider.unwrapDataKey(generated.kid, generated.wrapped, other),
          'sealed_record_invalid',
        );
      }
    });

    it('when one bit of the wrapped key is flipped (first, middle, last byte), then sealed_record_invalid', async () => {
      const generated = await subject.provider.generateDataKey(IDENTITY);
      const n = generated.wrapped.length;
      for (const index of [0, Math.floor(n / 2), n - 1]) {
        await rejectsWith(
          subject.provider.unwrapDataKey(
            generated.kid,
            flipBit(generated.wrapped, index),
            IDENTITY,
          ),
          'sealed_record_invalid',
        );
      }
      await rejectsWith(
        subject.provider.unwrapDataKey(
          generated.kid,
          generated.wrapped.subarray(0, n - 1),
          IDENTITY,
        ),
        'sealed_record_invalid',
      );
    });

    it('when the kid is unknown, then sealed_record_invalid', async () => {
      const generated = await subject.provider.generateDataKey(IDENTITY);
      await rejectsWith(
        subject.provider.unwrapDataKey(subject.unknownKid, generated.wrapped, IDENTITY),
        'sealed_record_invalid',
      );
    });

    it('when a wrapped key is rewrapped, then it is under the current kid and unwraps to the same data key', async () => {
      const { provider } = subject;
      const generated = await provider.generateDataKey(IDENTITY);
      const rewrapped = await provider.rewrapDataKey(generated.kid, generated.wrapped, IDENTITY);
      assert.equal(rewrapped.kid, provider.currentKeyId());
      assert.notDeepEqual(rewrapped.wrapped, generated.wrapped);
      assert.deepEqual(
        await provider.unwrapDataKey(rewrapped.kid, rewrapped.wrapped, IDENTITY),
        generated.plaintext,
      );
      await rejectsWith(
        provider.rewrapDataKey(generated.kid, generated.wrapped, { ...IDENTITY, link: 'lnk_2' }),
        'sealed_record_invalid',
      );
    });

    it('when pinged, then it resolves', async () => {
      await subject.provider.ping();
    });

    it('when operations run, then each is counted by provider, operation and outcome', async () => {
      const { provider, metrics, label } = subject;
      const count = (operation: string, outcome: string) =>
        metrics.keyServiceCalls.get({ provider: label, operation, outcome });
      const before = {
        gen: count('generate', 'ok'),
        unwrap: count('unwrap', 'ok'),
        bad: count('unwrap', 'invalid'),
        rewrap: count('rewrap', 'ok'),
        ping: count('ping', 'ok'),
      };
      const generated = await provider.generateDataKey(IDENTITY);
      await provider.unwrapDataKey(generated.kid, generated.wrapped, IDENTITY);
      await provider
        .unwrapDataKey(
          generated.kid,
          flipBit(generated.wrapped, generated.wrapped.length - 1),
          IDENTITY,
        )
        .catch(() => undefined);
      await provider.rewrapDataKey(generated.kid, generated.wrapped, IDENTITY);
      await provider.ping();
      assert.deepEqual(
        {
          gen: count('generate', 'ok'),
          unwrap: count('unwrap', 'ok'),
          bad: count('unwrap', 'invalid'),
          rewrap: count('rewrap', 'ok'),
          ping: count('ping', 'ok'),
        },
        {
          gen: before.gen + 1,
          unwrap: before.unwrap + 1,
          bad: before.bad + 1,
          rewrap: before.rewrap + 1,
          ping: before.ping + 1,
        },
      );
    });
  });
}
