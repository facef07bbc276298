import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { AwsKmsKeyProvider } from '../../src/keys/aws-kms-key-provider.js';
import type { GeneratedDataKey, KeyProvider, SealIdentity } from '../../src/keys/key-provider.js';
import { LocalKeyProvider } from '../../src/keys/local-key-provider.js';
import { createVault, type Vault } from '../../src/keys/vault.js';
import { Metrics } from '../../src/metrics.js';
import type { SealedRecord } from '../../src/keys/sealed-record.js';
import { startKmsStandIn, type KmsStandIn } from '../support/kms-stand-in.js';
import { flipBit, rejectsWith } from './key-provider-contract.js';

const LINK_A: SealIdentity = Object.freeze({
  tenant: 'acme',
  link: 'lnk_a',
  provider: 'hubspot',
  field: 'token_set',
});
const LINK_B: SealIdentity = Object.freeze({
  tenant: 'acme',
  link: 'lnk_b',
  provider: 'hubspot',
  field: 'token_set',
});
const SECRET = Buffer.from('{"access_token":"at-canary-5f2b","refresh_token":"rt-canary-9c1d"}');

interface Subject {
  readonly keys: KeyProvider;
  readonly metrics: Metrics;
  /** Key-service calls as the service itself saw them (stand-in requests for KMS, the provider's counter for local). */
  readonly serviceCalls: () => number;
  /** Makes the key service fail every call (KMS: a 500 on every operation); returns the undo. */
  readonly breakService: (() => () => void) | null;
}

function vaultOn(
  subject: Subject,
  options: { maxEntries?: number; maxAgeMs?: number; now?: () => number } = {},
): Vault {
  return createVault({
    keys: subject.keys,
    metrics: subject.metrics,
    maxEntries: options.maxEntries ?? 1000,
    maxAgeMs: options.maxAgeMs ?? 300_000,
    ...(options.now ? { now: options.now } : {}),
  });
}

function tamper(
  record: SealedRecord,
  member: 'kid' | 'edk' | 'iv' | 'ct' | 'tag',
  where: 'first' | 'last',
): SealedRecord {
  if (member === 'kid') {
    const i = where === 'first' ? 0 : record.kid.length - 1;
    const flipped = String.fromCharCode(record.kid.charCodeAt(i) ^ 1);
    return { ...record, kid: record.kid.slice(0, i) + flipped + record.kid.slice(i + 1) };
  }
  const bytes = Buffer.from(record[member], 'base64url');
  return {
    ...record,
    [member]: flipBit(
      bytes,
      where === 'first' ? 0 : bytes.length - 1,
      where === 'first' ? 0 : 7,
    ).toString('base64url'),
  };
}

const tempDirs: string[] = [];
let kms: KmsStandIn;
before(async () => {
  kms = await startKmsStandIn();
});
after(async () => {
  await kms.close();
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

const PROVIDERS: Record<'local' | 'aws-kms', () => Promise<Subject & { close: () => void }>> = {
  async local() {
    const dir = mkdtempSync(join(tmpdir(), 'lv-vault-'));
    tempDirs.push(dir);
    const metrics = new Metrics();
    const keys = await LocalKeyProvider.load({
      keyFile: join(dir, 'master.key'),
      mayGenerate: true,
      metrics,
    });
    return {
      keys,
      metrics,
      serviceCalls: () => metrics.keyServiceCalls.total(),
      breakService: null,
      close: () => undefined,
    };
  },
  async 'aws-kms'() {
    const metrics = new Metrics();
    const keys = new AwsKmsKeyProvider({
      keyId: kms.createKey(),
      region: kms.region,
      endpoint: kms.endpoint,
      credentials: { accessKeyId: 'AKIDSTANDIN', secretAccessKey: 'stand-in' },
      maxAttempts: 1,
      requestTimeoutMs: 500,
      metrics,
    });
    const base = kms.calls();
    return {
      keys,
      metrics,
      serviceCalls: () => kms.calls() - base,
      breakService: () => {
        kms.setFault('*', 'internal');
        return () => kms.setFault('*', null);
      },
      close: () => keys.destroy(),
    };
  },
};

for (const [kind, make] of Object.entries(PROVIDERS)) {
  describe(`vault on ${kind}`, () => {
    let subject: Subject & { close: () => void };
    before(async () => {
      subject = await make();
    });
    after(() => subject.close());

    it('when a secret is sealed and opened under the same identity, then it round-trips and the record describes itself', async () => {
      const vault = vaultOn(subject);
      const record = await vault.seal(LINK_A, SECRET);
      assert.deepEqual(Object.keys(record).sort(), ['alg', 'ct', 'edk', 'iv', 'kid', 'tag', 'v']);
      assert.equal(record.v, 1);
      assert.equal(record.alg, 'A256GCM');
      assert.equal(record.kid, subject.keys.currentKeyId());
      assert.equal(Buffer.from(record.iv, 'base64url').length, 12);
      assert.equal(Buffer.from(record.tag, 'base64url').length, 16);
      assert.equal(JSON.stringify(record).includes('canary'), false, 'no plaintext in the record');
      assert.deepEqual(await vault.open(LINK_A, record), SECRET);
      assert.deepEqual(
        await vaultOn(subject).open(LINK_A, record),
        SECRET,
        'a cold vault opens it through the key service',
      );
    });

    it('when the same plaintext is sealed twice with the reused data key, then IVs and ciphertexts differ', async () => {
      const vault = vaultOn(subject);
      const first = await vault.seal(LINK_A, SECRET);
      const second = await vault.seal(LINK_A, SECRET, first);
      assert.equal(second.edk, first.edk, 'one data key per link');
      assert.notEqual(second.iv, first.iv);
      assert.notEqual(second.ct, first.ct);
    });

    for (const member of ['kid', 'edk', 'iv', 'ct', 'tag'] as const) {
      it(`when one bit of ${member} is flipped, then opening fails sealed_record_invalid (warm and cold cache)`, async () => {
        const vault = vaultOn(subject);
        const record = await vault.seal(LINK_A, SECRET);
        for (const where of ['first', 'last'] as const) {
          const bad = tamper(record, member, where);
          assert.notDeepEqual(bad, record);
          await rejectsWith(vault.open(LINK_A, bad), 'sealed_record_invalid');
          await rejectsWith(vaultOn(subject).open(LINK_A, bad), 'sealed_record_invalid');
        }
        assert.deepEqual(
          await vault.open(LINK_A, record),
          SECRET,
          'the genuine record still opens',
        );
      });
    }

    it("when a record is copied under another link's identity (or any other member), then it does not open", async () => {
      const vault = vaultOn(subject);
      const record = await vault.seal(LINK_A, SECRET);
      await rejectsWith(vault.open(LINK_B, record), 'sealed_record_invalid');
      await rejectsWith(vaultOn(subject).open(LINK_B, record), 'sealed_record_invalid');
      for (const member of ['tenant', 'provider', 'field'] as const) {
        await rejectsWith(
          vault.open({ ...LINK_A, [member]: 'other' }, record),
          'sealed_record_invalid',
        );
      }
      // Nor can its data key be borrowed by sealing link B "reusing" link A's record.
      // Neither from a warm cache (the entry serves only the identity it was unwrapped for) nor a cold one.
      await rejectsWith(vault.seal(LINK_B, SECRET, record), 'sealed_record_invalid');
      await rejectsWith(vaultOn(subject).seal(LINK_B, SECRET, record), 'sealed_record_invalid');
      assert.deepEqual(await vault.open(LINK_A, record), SECRET);
    });

    it('when a record has an unknown shape, then sealed_record_invalid before any key-service call', async () => {
      const vault = vaultOn(subject);
      const record = await vault.seal(LINK_A, SECRET);
      const iv = Buffer.from(record.iv, 'base64url');
      const tag = Buffer.from(record.tag, 'base64url');
      const bad: unknown[] = [
        { ...record, v: 2 },
        { ...record, alg: 'A128GCM' },
        { ...record, iv: iv.subarray(0, 11).toString('base64url') },
        { ...record, iv: Buffer.concat([iv, Buffer.alloc(1)]).toString('base64url') },
        { ...record, tag: tag.subarray(0, 15).toString('base64url') },
        { ...record, tag: `${record.tag}=` },
        { ...record, ct: record.ct.replace(/.$/, '+') },
        { ...record, edk: '' },
        { ...record, kid: '' },
        { ...record, extra: 'x' },
        {
          v: record.v,
          alg: record.alg,
          kid: record.kid,
          edk: record.edk,
          iv: record.iv,
          ct: record.ct,
        },
        null,
        'record',
      ];
      const calls = subject.serviceCalls();
      for (const candidate of bad)
        await rejectsWith(
          vaultOn(subject).open(LINK_A, candidate as SealedRecord),
          'sealed_record_invalid',
        );
      assert.equal(subject.serviceCalls(), calls);
    });

    it('when 10,000 seal/open operations run on one link, then the key service is called exactly once', async (t: TestContext) => {
      const vault = vaultOn(subject);
      const calls = subject.serviceCalls();
      let record: SealedRecord | null = null;
      for (let i = 0; i < 10_000; i++) {
        if (i % 2 === 0) record = await vault.seal(LINK_A, SECRET, record);
        else assert.equal((await vault.open(LINK_A, record!)).length, SECRET.length);
      }
      const used = subject.serviceCalls() - calls;
      t.diagnostic(
        `${kind}: 10,000 seal/open operations on one link made ${used} key-service call(s)`,
      );
      console.log(
        `[vault] ${kind}: 10,000 seal/open operations on one link made ${used} key-service call(s)`,
      );
      assert.equal(used, 1);
    });

    it('when many opens of one record start together on a cold cache, then they share one key-service call', async () => {
      const record = await vaultOn(subject).seal(LINK_A, SECRET);
      const vault = vaultOn(subject);
      const calls = subject.serviceCalls();
      const opened = await Promise.all(
        Array.from({ length: 25 }, () => vault.open(LINK_A, record)),
      );
      for (const plaintext of opened) assert.deepEqual(plaintext, SECRET);
      assert.equal(subject.serviceCalls() - calls, 1);
    });

    it('when a record is forgotten, then the next open goes back to the key service', async () => {
      const vault = vaultOn(subject);
      const record = await vault.seal(LINK_A, SECRET);
      const calls = subject.serviceCalls();
      await vault.open(LINK_A, record);
      assert.equal(subject.serviceCalls(), calls);
      vault.forget(record);
      await vault.open(LINK_A, record);
      assert.equal(subject.serviceCalls(), calls + 1);
    });

    it('when a record is rewrapped, then iv/ct/tag are untouched, it opens, and its cached key moves with it', async () => {
      const vault = vaultOn(subject);
      const record = await vault.seal(LINK_A, SECRET);
      const rewrapped = await vault.rewrap(LINK_A, record);
      assert.deepEqual(
        { iv: rewrapped.iv, ct: rewrapped.ct, tag: rewrapped.tag },
        { iv: record.iv, ct: record.ct, tag: record.tag },
      );
      assert.notEqual(rewrapped.edk, record.edk);
      const calls = subject.serviceCalls();
      assert.deepEqual(await vault.open(LINK_A, rewrapped), SECRET);
      assert.equal(subject.serviceCalls(), calls, 'no unwrap needed after a rewrap');
      assert.deepEqual(await vaultOn(subject).open(LINK_A, rewrapped), SECRET);
      await rejectsWith(vault.rewrap(LINK_B, record), 'sealed_record_invalid');
    });

    if (kind === 'aws-kms') {
      it('when the key service is down, then seal and a cold open reject key_service_unavailable and nothing is produced', async () => {
        const warm = vaultOn(subject);
        const existing = await warm.seal(LINK_A, SECRET);
        const restore = subject.breakService!();
        try {
          let produced: SealedRecord | null = null;
          await rejectsWith(
            vaultOn(subject)
              .seal(LINK_B, SECRET)
              .then((r) => {
                produced = r;
              }),
            'key_service_unavailable',
          );
          assert.equal(produced, null);
          await rejectsWith(
            vaultOn(subject).seal(LINK_A, SECRET, existing),
            'key_service_unavailable',
          );
          await rejectsWith(vaultOn(subject).open(LINK_A, existing), 'key_service_unavailable');
          await rejectsWith(warm.rewrap(LINK_A, existing), 'key_service_unavailable');
          // A key unwrapped before the outage still serves its own link from the cache.
          assert.deepEqual(await warm.open(LINK_A, existing), SECRET);
        } finally {
          restore();
        }
      });
    }
  });
}

describe('vault data-key cache bounds', () => {
  /** Observes the real local provider: remembers every data-key buffer it hands to the vault. */
  async function observedLocal(): Promise<Subject & { handedOut: Buffer[] }> {
    const dir = mkdtempSync(join(tmpdir(), 'lv-vault-cache-'));
    tempDirs.push(dir);
    const metrics = new Metrics();
    const local = await LocalKeyProvider.load({
      keyFile: join(dir, 'master.key'),
      mayGenerate: true,
      metrics,
    });
    const handedOut: Buffer[] = [];
    const keys: KeyProvider = {
      kind: 'local',
      currentKeyId: () => local.currentKeyId(),
      async generateDataKey(context): Promise<GeneratedDataKey> {
        const generated = await local.generateDataKey(context);
        handedOut.push(generated.plaintext);
        return generated;
      },
      async unwrapDataKey(kid, wrapped, context) {
        const key = await local.unwrapDataKey(kid, wrapped, context);
        handedOut.push(key);
        return key;
      },
      rewrapDataKey: (kid, wrapped, context) => local.rewrapDataKey(kid, wrapped, context),
      ping: () => local.ping(),
    };
    return {
      keys,
      metrics,
      serviceCalls: () => metrics.keyServiceCalls.total(),
      breakService: null,
      handedOut,
    };
  }
  const link = (n: number): SealIdentity => ({
    tenant: 'acme',
    link: `lnk_${n}`,
    provider: 'hubspot',
    field: 'token_set',
  });
  const isZero = (b: Buffer) => b.every((x) => x === 0);

  it('when more links are used than maxEntries, then the least recently used key is evicted and zeroed', async () => {
    const subject = await observedLocal();
    const vault = vaultOn(subject, { maxEntries: 3 });
    const records: SealedRecord[] = [];
    for (let n = 1; n <= 3; n++) records.push(await vault.seal(link(n), SECRET));
    await vault.open(link(1), records[0]!); // link 1 is now the most recent; link 2 the least
    records.push(await vault.seal(link(4), SECRET));
    assert.deepEqual(
      subject.handedOut.map(isZero),
      [false, true, false, false],
      "link 2's key was evicted and zeroed",
    );

    const calls = subject.serviceCalls();
    const hits = subject.metrics.dataKeyCache.get({ result: 'hit' });
    for (const n of [1, 3, 4]) await vault.open(link(n), records[n - 1]!);
    assert.equal(subject.serviceCalls(), calls, 'links 1, 3, 4 are cached');
    assert.equal(subject.metrics.dataKeyCache.get({ result: 'hit' }), hits + 3);
    const misses = subject.metrics.dataKeyCache.get({ result: 'miss' });
    await vault.open(link(2), records[1]!);
    assert.equal(subject.serviceCalls(), calls + 1, 'link 2 needed the key service again');
    assert.equal(subject.metrics.dataKeyCache.get({ result: 'miss' }), misses + 1);
  });

  it('when a cached key reaches maxAgeMs, then it is dropped, zeroed and unwrapped again', async () => {
    const subject = await observedLocal();
    let nowMs = 1_000_000;
    const vault = vaultOn(subject, { maxAgeMs: 60_000, now: () => nowMs });
    const record = await vault.seal(LINK_A, SECRET);
    const calls = subject.serviceCalls();
    nowMs += 59_999;
    await vault.open(LINK_A, record);
    assert.equal(subject.serviceCalls(), calls, 'still fresh');
    nowMs += 1;
    await vault.open(LINK_A, record);
    assert.equal(subject.serviceCalls(), calls + 1, 'expired: unwrapped again');
    assert.equal(isZero(subject.handedOut[0]!), true, 'the expired key was zeroed');
  });

  it('when time passes without lookups, then a sweep drops expired keys of idle links', async () => {
    const subject = await observedLocal();
    let nowMs = 0;
    const vault = vaultOn(subject, { maxAgeMs: 10_000, now: () => nowMs });
    await vault.seal(LINK_A, SECRET);
    nowMs += 10_000;
    await vault.seal(LINK_B, SECRET); // any operation sweeps
    assert.deepEqual(subject.handedOut.map(isZero), [true, false]);
  });

  it('when forgotten, then the cached key is zeroed', async () => {
    const subject = await observedLocal();
    const vault = vaultOn(subject);
    const record = await vault.seal(LINK_A, SECRET);
    vault.forget(record);
    assert.equal(isZero(subject.handedOut[0]!), true);
  });

  it('when the cache is off (maxEntries 0), then every open calls the key service and no key is kept', async () => {
    const subject = await observedLocal();
    const vault = vaultOn(subject, { maxEntries: 0 });
    const record = await vault.seal(LINK_A, SECRET);
    const calls = subject.serviceCalls();
    await vault.open(LINK_A, record);
    await vault.open(LINK_A, record);
    assert.equal(subject.serviceCalls(), calls + 2);
    assert.equal(subject.handedOut.every(isZero), true);
  });
});
