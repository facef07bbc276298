import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { AwsKmsKeyProvider } from '../../src/keys/aws-kms-key-provider.js';
import { LocalKeyProvider } from '../../src/keys/local-key-provider.js';
import { rewrapAll } from '../../src/links/sealing/rewrap.js';
import { createVault, type Vault } from '../../src/keys/vault.js';
import type { KeyProvider } from '../../src/keys/key-provider.js';
import {
  createRevocation,
  PROVIDER_REVOCATION_JOB_KIND,
} from '../../src/links/revoke/revocation.js';
import { createRevocationWorker } from '../../src/links/revoke/revocation-worker.js';
import {
  openTokenSet,
  sealTokenSet,
  tokenSetIdentity,
} from '../../src/links/sealing/token-vault.js';
import { Metrics } from '../../src/metrics.js';
import type { TokenSet } from '../../src/oauth/oauth-client.js';
import { Secret } from '../../src/secret.js';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';
import type { Store } from '../../src/store/store.js';
import type { LinkRecord } from '../../src/links/link.js';
import type { SealedRecord } from '../../src/keys/sealed-record.js';
import { startKmsStandIn, type KmsStandIn } from '../support/kms-stand-in.js';
import { startOidcServer } from '../support/oidc-server.js';
import { obtainTokens, startStack } from '../links/revoke/revocation-harness.js';
import { rejectsWith } from './key-provider-contract.js';

const LINKS = 12;
const dirs: string[] = [];
let kms: KmsStandIn;
before(async () => {
  kms = await startKmsStandIn();
});
after(async () => {
  await kms.close();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'lv-rotation-'));
  dirs.push(dir);
  return dir;
}

function tokensFor(n: number, generation = 1): TokenSet {
  return {
    accessToken: new Secret(`at-${n}-${generation}`),
    refreshToken: new Secret(`rt-${n}-${generation}`),
    idToken: null,
    tokenType: 'bearer',
    expiresAtMs: 1_700_000_000_000 + n,
    scopes: ['crm.read'],
    extra: {},
  };
}

function linkFor(n: number): LinkRecord {
  return {
    id: `lnk_${String(n).padStart(3, '0')}`,
    tenantId: 'acme',
    userId: `user_${n}`,
    providerId: 'hubspot',
    status: 'active',
    version: 0,
    providerAccountId: null,
    grantedScopes: ['crm.read'],
    metadata: {},
    endpointVariables: {},
    tokens: null,
    accessTokenExpiresAtMs: null,
    createdAtMs: 1_700_000_000_000,
    updatedAtMs: 1_700_000_000_000,
    lastRefreshedAtMs: null,
    lastUsedAtMs: null,
  };
}

function vaultOn(keys: KeyProvider, metrics = new Metrics()): Vault {
  return createVault({ keys, metrics, maxEntries: 1000, maxAgeMs: 300_000 });
}

/** Stores LINKS links sealed with `vault`, plus one link without tokens. Returns the sealed records by link id. */
async function populate(store: Store, vault: Vault): Promise<Map<string, SealedRecord>> {
  const sealed = new Map<string, SealedRecord>();
  for (let n = 1; n <= LINKS; n++) {
    const link = linkFor(n);
    const tokens = await sealTokenSet(vault, link, tokensFor(n), null);
    assert.ok(await store.saveLink({ ...link, tokens }, null));
    sealed.set(link.id, tokens);
  }
  assert.ok(await store.saveLink(linkFor(0), null)); // never obtained tokens: nothing to rewrap
  return sealed;
}

async function assertAllOpen(store: Store, vault: Vault): Promise<void> {
  for (let n = 1; n <= LINKS; n++) {
    const link = (await store.getLink(linkFor(n).id))!;
    const tokens = await openTokenSet(vault, link, link.tokens!);
    assert.equal(tokens.accessToken.reveal(), `at-${n}-1`);
    assert.equal(tokens.refreshToken?.reveal(), `rt-${n}-1`);
  }
}

async function assertMovedUntouched(
  store: Store,
  before: Map<string, SealedRecord>,
  kid: string,
): Promise<void> {
  for (const [id, old] of before) {
    const now = (await store.getLink(id))!.tokens!;
    assert.equal(now.kid, kid);
    assert.notEqual(now.edk, old.edk);
    assert.deepEqual(
      { iv: now.iv, ct: now.ct, tag: now.tag },
      { iv: old.iv, ct: old.ct, tag: old.tag },
      `${id}: ciphertext byte-identical`,
    );
  }
}

describe('key rotation', () => {
  it('when the local master key is rotated, then new data keys use it, old records open, rewrapAll moves them, and the old key can be dropped', async () => {
    const dir = tempDir();
    const store = new SqliteStore({ path: join(dir, 'linkvault.db') });
    try {
      const keysA = await LocalKeyProvider.load({
        keyFile: join(dir, 'a.key'),
        mayGenerate: true,
        metrics: new Metrics(),
      });
      const sealed = await populate(store, vaultOn(keysA));

      // Rotate: a new current key, the old one kept for unwrapping only.
      await LocalKeyProvider.load({
        keyFile: join(dir, 'b.key'),
        mayGenerate: true,
        metrics: new Metrics(),
      });
      const keysB = await LocalKeyProvider.load({
        keyFile: join(dir, 'b.key'),
        previousKeyFiles: [join(dir, 'a.key')],
        mayGenerate: false,
        metrics: new Metrics(),
      });
      assert.notEqual(keysB.currentKeyId(), keysA.currentKeyId());
      const vaultB = vaultOn(keysB);
      const fresh = await sealTokenSet(vaultB, linkFor(99), tokensFor(99), null);
      assert.equal(fresh.kid, keysB.currentKeyId(), 'new data keys are wrapped under the new key');
      const resealed = await sealTokenSet(
        vaultB,
        linkFor(1),
        tokensFor(1, 2),
        sealed.get(linkFor(1).id)!,
      );
      assert.equal(
        resealed.kid,
        keysB.currentKeyId(),
        'a re-seal after rotation takes a data key under the new key',
      );
      await assertAllOpen(store, vaultB);

      // Without the old key, nothing sealed before the rewrap opens.
      const onlyB = await LocalKeyProvider.load({
        keyFile: join(dir, 'b.key'),
        mayGenerate: false,
        metrics: new Metrics(),
      });
      const link1 = (await store.getLink(linkFor(1).id))!;
      await rejectsWith(
        openTokenSet(vaultOn(onlyB), link1, link1.tokens!),
        'sealed_record_invalid',
      );

      const result = await rewrapAll({ store, vault: vaultB, keys: keysB });
      assert.deepEqual(result, {
        scanned: LINKS + 1,
        rewrapped: LINKS,
        skipped: 1,
        conflicts: 0,
        failed: 0,
        jobsScanned: 0,
        jobsRewrapped: 0,
        jobsSkipped: 0,
        jobConflicts: 0,
        jobsFailed: 0,
        jobsOnOldKey: 0,
      });
      await assertMovedUntouched(store, sealed, keysB.currentKeyId());
      assert.deepEqual(
        await rewrapAll({ store, vault: vaultB, keys: keysB }),
        {
          scanned: LINKS + 1,
          rewrapped: 0,
          skipped: LINKS + 1,
          conflicts: 0,
          failed: 0,
          jobsScanned: 0,
          jobsRewrapped: 0,
          jobsSkipped: 0,
          jobConflicts: 0,
          jobsFailed: 0,
          jobsOnOldKey: 0,
        },
        'a second run has nothing to do',
      );

      // The old key file can now go: the new key alone opens everything.
      await assertAllOpen(store, vaultOn(onlyB));
    } finally {
      await store.close();
    }
  });

  it('when the KMS key is rotated, then new data keys use it, old records open, rewrapAll moves them, and the old key can be disabled', async () => {
    const dir = tempDir();
    const store = new SqliteStore({ path: join(dir, 'linkvault.db') });
    const keyA = kms.createKey();
    const keyB = kms.createKey();
    const kmsProvider = (keyId: string) =>
      new AwsKmsKeyProvider({
        keyId,
        region: kms.region,
        endpoint: kms.endpoint,
        credentials: { accessKeyId: 'AKIDSTANDIN', secretAccessKey: 'stand-in' },
        maxAttempts: 1,
        requestTimeoutMs: 1000,
        metrics: new Metrics(),
      });
    const keysA = kmsProvider(keyA);
    const keysB = kmsProvider(keyB);
    try {
      const sealed = await populate(store, vaultOn(keysA));
      for (const record of sealed.values()) assert.equal(record.kid, keyA);

      const vaultB = vaultOn(keysB);
      assert.equal((await sealTokenSet(vaultB, linkFor(99), tokensFor(99), null)).kid, keyB);
      await assertAllOpen(store, vaultB);

      const reEncryptsBefore = kms.calls('ReEncrypt');
      const decryptsBefore = kms.calls('Decrypt');
      const result = await rewrapAll({ store, vault: vaultOn(keysB), keys: keysB });
      assert.deepEqual(result, {
        scanned: LINKS + 1,
        rewrapped: LINKS,
        skipped: 1,
        conflicts: 0,
        failed: 0,
        jobsScanned: 0,
        jobsRewrapped: 0,
        jobsSkipped: 0,
        jobConflicts: 0,
        jobsFailed: 0,
        jobsOnOldKey: 0,
      });
      assert.equal(kms.calls('ReEncrypt') - reEncryptsBefore, LINKS, 'one ReEncrypt per link');
      assert.equal(
        kms.calls('Decrypt'),
        decryptsBefore,
        'rewrapping never decrypts a data key out of KMS',
      );
      await assertMovedUntouched(store, sealed, keyB);

      kms.setKeyState(keyA, 'Disabled');
      await assertAllOpen(store, vaultOn(keysB));
      // A copy of a record from before the rewrap now needs the disabled key.
      const [firstId, firstOld] = [...sealed][0]!;
      const link = (await store.getLink(firstId))!;
      await rejectsWith(openTokenSet(vaultOn(keysB), link, firstOld), 'key_service_unavailable');
    } finally {
      keysA.destroy();
      keysB.destroy();
      await store.close();
    }
  });

  it('when a link changes while rewrapAll runs, then the write is retried on the fresh version and a concurrent re-seal is never overwritten', async () => {
    const dir = tempDir();
    const store = new SqliteStore({ path: join(dir, 'linkvault.db') });
    try {
      const keysA = await LocalKeyProvider.load({
        keyFile: join(dir, 'a.key'),
        mayGenerate: true,
        metrics: new Metrics(),
      });
      await populate(store, vaultOn(keysA));
      await LocalKeyProvider.load({
        keyFile: join(dir, 'b.key'),
        mayGenerate: true,
        metrics: new Metrics(),
      });
      const keysB = await LocalKeyProvider.load({
        keyFile: join(dir, 'b.key'),
        previousKeyFiles: [join(dir, 'a.key')],
        mayGenerate: false,
        metrics: new Metrics(),
      });
      const vaultB = vaultOn(keysB);

      // A real concurrent writer: just before rewrapAll's first write to each of two links, another
      // write lands on that link (link 1: a touch of metadata; link 2: a refresh that re-seals new tokens).
      const touched = linkFor(1).id;
      const refreshed = linkFor(2).id;
      const raced = new Set<string>();
      const racingStore: Pick<
        Store,
        'scanLinkIds' | 'getLink' | 'saveLink' | 'scanJobs' | 'replaceJobPayload'
      > = {
        scanLinkIds: () => store.scanLinkIds(),
        scanJobs: () => store.scanJobs(),
        replaceJobPayload: (id, expected, payload) =>
          store.replaceJobPayload(id, expected, payload),
        getLink: (id) => store.getLink(id),
        async saveLink(link, expectedVersion) {
          if ((link.id === touched || link.id === refreshed) && !raced.has(link.id)) {
            raced.add(link.id);
            const current = (await store.getLink(link.id))!;
            const change: LinkRecord =
              link.id === touched
                ? { ...current, metadata: { hub_id: '42' } }
                : {
                    ...current,
                    tokens: await sealTokenSet(vaultB, current, tokensFor(2, 2), current.tokens),
                    lastRefreshedAtMs: 1_700_000_100_000,
                  };
            assert.ok(await store.saveLink(change, current.version));
          }
          return store.saveLink(link, expectedVersion);
        },
      };

      const result = await rewrapAll({ store: racingStore, vault: vaultB, keys: keysB });
      assert.deepEqual(result, {
        scanned: LINKS + 1,
        rewrapped: LINKS - 1,
        skipped: 2,
        conflicts: 2,
        failed: 0,
        jobsScanned: 0,
        jobsRewrapped: 0,
        jobsSkipped: 0,
        jobConflicts: 0,
        jobsFailed: 0,
        jobsOnOldKey: 0,
      });

      const link1 = (await store.getLink(touched))!;
      assert.deepEqual(link1.metadata, { hub_id: '42' }, 'the concurrent change survived');
      assert.equal(link1.tokens!.kid, keysB.currentKeyId());
      const link2 = (await store.getLink(refreshed))!;
      assert.equal(
        (await openTokenSet(vaultB, link2, link2.tokens!)).accessToken.reveal(),
        'at-2-2',
        'the refreshed tokens were not replaced by the stale record',
      );
      for (let n = 1; n <= LINKS; n++)
        assert.equal((await store.getLink(linkFor(n).id))!.tokens!.kid, keysB.currentKeyId());
    } finally {
      await store.close();
    }
  });

  it("when a link's record does not open under its identity, then rewrapAll leaves it, counts it failed, and moves the rest", async () => {
    const dir = tempDir();
    const store = new SqliteStore({ path: join(dir, 'linkvault.db') });
    try {
      const keysA = await LocalKeyProvider.load({
        keyFile: join(dir, 'a.key'),
        mayGenerate: true,
        metrics: new Metrics(),
      });
      const sealed = await populate(store, vaultOn(keysA));
      // Link 3 carries link 4's record: bound to another identity.
      const link3 = (await store.getLink(linkFor(3).id))!;
      assert.ok(
        await store.saveLink({ ...link3, tokens: sealed.get(linkFor(4).id)! }, link3.version),
      );
      await LocalKeyProvider.load({
        keyFile: join(dir, 'b.key'),
        mayGenerate: true,
        metrics: new Metrics(),
      });
      const keysB = await LocalKeyProvider.load({
        keyFile: join(dir, 'b.key'),
        previousKeyFiles: [join(dir, 'a.key')],
        mayGenerate: false,
        metrics: new Metrics(),
      });
      const result = await rewrapAll({ store, vault: vaultOn(keysB), keys: keysB });
      assert.deepEqual(result, {
        scanned: LINKS + 1,
        rewrapped: LINKS - 1,
        skipped: 1,
        conflicts: 0,
        failed: 1,
        jobsScanned: 0,
        jobsRewrapped: 0,
        jobsSkipped: 0,
        jobConflicts: 0,
        jobsFailed: 0,
        jobsOnOldKey: 0,
      });
      assert.equal((await store.getLink(linkFor(3).id))!.tokens!.kid, keysA.currentKeyId());
    } finally {
      await store.close();
    }
  });

  it("when a link's wrapped data key is destroyed (record set to null, cache forgotten), then its token set is unrecoverable", async () => {
    const dir = tempDir();
    const store = new SqliteStore({ path: join(dir, 'linkvault.db') });
    try {
      const metrics = new Metrics();
      const keys = await LocalKeyProvider.load({
        keyFile: join(dir, 'a.key'),
        mayGenerate: true,
        metrics,
      });
      const vault = vaultOn(keys, metrics);
      const sealed = await populate(store, vault);
      const victim = (await store.getLink(linkFor(5).id))!;
      const old = victim.tokens!;

      // Shred: the link keeps no sealed record, and the vault drops the unwrapped data key.
      assert.ok(
        await store.saveLink({ ...victim, status: 'revoked', tokens: null }, victim.version),
      );
      vault.forget(old);
      assert.equal((await store.getLink(victim.id))!.tokens, null);

      // The vault no longer holds the data key: even a retained copy of the record needs the key service.
      const calls = metrics.keyServiceCalls.total();
      await vault.open(tokenSetIdentity(victim), old);
      assert.equal(metrics.keyServiceCalls.total(), calls + 1);
      vault.forget(old);

      // Without its edk, the ciphertext opens under no other wrapped key: not another link's,
      // not a fresh one for the same identity (a data key per link, nothing shared).
      const otherEdks = [...sealed.values()].filter((r) => r.edk !== old.edk).map((r) => r.edk);
      otherEdks.push((await vaultOn(keys).seal(tokenSetIdentity(victim), Buffer.from('x'))).edk);
      for (const edk of otherEdks) {
        await rejectsWith(
          openTokenSet(vaultOn(keys), victim, { ...old, edk }),
          'sealed_record_invalid',
        );
      }
    } finally {
      await store.close();
    }
  });

  it('when a provider revocation is pending under the old key, then rewrapAll moves its sealed copy too and, with the old key gone, the worker still revokes at the provider', async () => {
    const redirect = 'http://127.0.0.1:3000/v1/oauth/callback/test-as';
    const oidc = await startOidcServer({
      mode: 'oauth',
      clients: [
        {
          client_id: 'lv-client',
          client_secret: 'lv-secret-0123456789',
          redirect_uris: [redirect],
        },
      ],
    });
    const dir = tempDir();
    const store = new SqliteStore({ path: join(dir, 'linkvault.db') });
    // The harness gives the real catalogue, OAuth adapter and audit on this store; its worker stays off
    // and its own vault is not used: the keys here are the test's, so that they can be rotated.
    const stack = await startStack({
      store,
      providers: [
        {
          entry: oidc.catalogueEntry('test-as'),
          clientId: 'lv-client',
          clientSecret: 'lv-secret-0123456789',
        },
      ],
      startWorker: false,
    });
    const log = pino({ level: 'silent' });
    try {
      const tokens = await obtainTokens(stack, oidc, 'test-as', 'alice', redirect);
      const keysA = await LocalKeyProvider.load({
        keyFile: join(dir, 'a.key'),
        mayGenerate: true,
        metrics: new Metrics(),
      });
      const vaultA = vaultOn(keysA);
      const link = { ...linkFor(1), providerId: 'test-as' };
      assert.ok(
        await store.saveLink(
          { ...link, tokens: await sealTokenSet(vaultA, link, tokens, null) },
          null,
        ),
      );

      // Revoked while the provider step is still to run: the job holds the only sealed copy, under key A.
      const revocationA = createRevocation({
        store,
        vault: vaultA,
        catalogue: stack.catalogue,
        audit: stack.audit,
        log,
      });
      const revoked = await revocationA.revokeLink(link.id, {
        revokedBy: 'service',
        serviceId: 'crm-sync',
        reason: 'service_request',
        requestId: null,
      });
      assert.equal(revoked.record.provider_revocation.status, 'pending');
      assert.equal((await store.getLink(link.id))!.tokens, null);
      const queued: { id: string; kind: string; payload: Readonly<Record<string, unknown>> }[] = [];
      for await (const job of store.scanJobs()) queued.push(job);
      assert.equal(queued.length, 1);
      assert.equal(queued[0]!.kind, PROVIDER_REVOCATION_JOB_KIND);
      const before = queued[0]!.payload.sealed as SealedRecord;
      assert.equal(before.kid, keysA.currentKeyId());

      // Rotate to key B (A still accepted for unwrapping) and rewrap.
      await LocalKeyProvider.load({
        keyFile: join(dir, 'b.key'),
        mayGenerate: true,
        metrics: new Metrics(),
      });
      const keysB = await LocalKeyProvider.load({
        keyFile: join(dir, 'b.key'),
        previousKeyFiles: [join(dir, 'a.key')],
        mayGenerate: false,
        metrics: new Metrics(),
      });
      const result = await rewrapAll({ store, vault: vaultOn(keysB), keys: keysB });
      assert.deepEqual(result, {
        scanned: 1,
        rewrapped: 0,
        skipped: 1,
        conflicts: 0,
        failed: 0,
        jobsScanned: 1,
        jobsRewrapped: 1,
        jobsSkipped: 0,
        jobConflicts: 0,
        jobsFailed: 0,
        jobsOnOldKey: 0,
      });
      const after: Readonly<Record<string, unknown>>[] = [];
      for await (const job of store.scanJobs()) after.push(job.payload);
      const moved = after[0]!.sealed as SealedRecord;
      assert.equal(moved.kid, keysB.currentKeyId());
      assert.deepEqual(
        { iv: moved.iv, ct: moved.ct, tag: moved.tag },
        { iv: before.iv, ct: before.ct, tag: before.tag },
        'ciphertext byte-identical',
      );
      const { sealed: _a, ...restBefore } = queued[0]!.payload;
      const { sealed: _b, ...restAfter } = after[0]!;
      assert.deepEqual(restAfter, restBefore, 'only the sealed record changed');

      // Destroy key A: a process with key B alone. The untouched copy no longer opens; the moved one does.
      rmSync(join(dir, 'a.key'));
      const keysBOnly = await LocalKeyProvider.load({
        keyFile: join(dir, 'b.key'),
        mayGenerate: false,
        metrics: new Metrics(),
      });
      const vaultB = vaultOn(keysBOnly);
      await assert.rejects(openTokenSet(vaultB, link, before));
      assert.equal(
        (await openTokenSet(vaultB, link, moved)).refreshToken?.reveal(),
        tokens.refreshToken!.reveal(),
      );

      // The real worker on key B alone completes the revocation at the provider.
      const revocationB = createRevocation({
        store,
        vault: vaultB,
        catalogue: stack.catalogue,
        audit: stack.audit,
        log,
      });
      const worker = createRevocationWorker({
        store,
        vault: vaultB,
        oauth: stack.oauth,
        catalogue: stack.catalogue,
        revocation: revocationB,
        audit: stack.audit,
        metrics: new Metrics(),
        log,
        options: { takeoverGraceMs: 0 },
      });
      assert.equal(await worker.runOnce(), 1);
      assert.deepEqual((await revocationB.getRecord(link.id)).provider_revocation, {
        status: 'confirmed',
        attempts: 1,
      });
      assert.equal((await oidc.introspect(tokens.refreshToken!.reveal())).active, false);
      assert.equal(await store.countJobs(), 0);
    } finally {
      await stack.close();
      await store.close();
      await oidc.close();
    }
  });
});
