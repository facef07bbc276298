import assert from 'node:assert/strict';
import { createCipheriv, createDecipheriv, createHash, hkdfSync } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { SealIdentity } from '../../src/keys/key-provider.js';
import { LocalKeyProvider } from '../../src/keys/local-key-provider.js';
import { createVault } from '../../src/keys/vault.js';
import { flowStateKey, openFlowState, sealFlowState } from '../../src/links/connect/connect.js';
import { Metrics } from '../../src/metrics.js';

// The byte formats already on disk and in stores, written here with node:crypto alone so that a
// change to the sealing code cannot move both sides of the check at once.
const MASTER = Buffer.from(
  '000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f',
  'hex',
);
const DATA_KEY = Buffer.from(
  '202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f',
  'hex',
);
const IDENTITY: SealIdentity = {
  tenant: 'acme',
  link: 'lnk_fixture',
  provider: 'hubspot',
  field: 'token_set',
};
const IDENTITY_AAD =
  '{"field":"token_set","link":"lnk_fixture","provider":"hubspot","tenant":"acme"}';
const SECRET = Buffer.from(
  '{"access_token":"at-canary-fixture","refresh_token":"rt-canary-fixture"}',
);
const KID = 'local:' + createHash('sha256').update(MASTER).digest('hex').slice(0, 16);

function gcmSeal(
  key: Buffer,
  iv: Buffer,
  plaintext: Buffer,
  aad: string,
): { ct: Buffer; tag: Buffer } {
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(aad, 'utf8'));
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return { ct, tag: cipher.getAuthTag() };
}

function gcmOpen(key: Buffer, iv: Buffer, ct: Buffer, tag: Buffer, aad: string): Buffer {
  const decipher = createDecipheriv('aes-256-gcm', key, iv);
  decipher.setAAD(Buffer.from(aad, 'utf8'));
  decipher.setAuthTag(tag);
  return Buffer.concat([decipher.update(ct), decipher.final()]);
}

const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

async function loadLocal(): Promise<LocalKeyProvider> {
  const dir = mkdtempSync(join(tmpdir(), 'lv-sealed-formats-'));
  dirs.push(dir);
  const keyFile = join(dir, 'master.key');
  writeFileSync(keyFile, MASTER, { mode: 0o600 });
  chmodSync(keyFile, 0o600);
  return LocalKeyProvider.load({ keyFile, mayGenerate: false, metrics: new Metrics() });
}

describe('sealed formats already in use', () => {
  it('when a record was sealed as {v,alg,kid,edk,iv,ct,tag} with a local edk of iv||ct||tag, then the vault opens it', async () => {
    const wrapIv = Buffer.from('a0a1a2a3a4a5a6a7a8a9aaab', 'hex');
    const wrapped = gcmSeal(MASTER, wrapIv, DATA_KEY, IDENTITY_AAD);
    const iv = Buffer.from('b0b1b2b3b4b5b6b7b8b9babb', 'hex');
    const sealed = gcmSeal(DATA_KEY, iv, SECRET, IDENTITY_AAD);
    const record = {
      v: 1 as const,
      alg: 'A256GCM' as const,
      kid: KID,
      edk: Buffer.concat([wrapIv, wrapped.ct, wrapped.tag]).toString('base64url'),
      iv: iv.toString('base64url'),
      ct: sealed.ct.toString('base64url'),
      tag: sealed.tag.toString('base64url'),
    };
    const vault = createVault({
      keys: await loadLocal(),
      metrics: new Metrics(),
      maxEntries: 0,
      maxAgeMs: 0,
    });
    assert.deepEqual(await vault.open(IDENTITY, record), SECRET);
  });

  it('when the vault seals a record, then node:crypto alone opens it in the same format', async () => {
    const keys = await loadLocal();
    const vault = createVault({ keys, metrics: new Metrics(), maxEntries: 0, maxAgeMs: 0 });
    const record = await vault.seal(IDENTITY, SECRET);
    assert.deepEqual(Object.keys(record).sort(), ['alg', 'ct', 'edk', 'iv', 'kid', 'tag', 'v']);
    assert.deepEqual(
      { v: record.v, alg: record.alg, kid: record.kid },
      { v: 1, alg: 'A256GCM', kid: KID },
    );
    const edk = Buffer.from(record.edk, 'base64url');
    assert.equal(edk.length, 12 + 32 + 16);
    const dataKey = gcmOpen(
      MASTER,
      edk.subarray(0, 12),
      edk.subarray(12, 44),
      edk.subarray(44),
      IDENTITY_AAD,
    );
    const plaintext = gcmOpen(
      dataKey,
      Buffer.from(record.iv, 'base64url'),
      Buffer.from(record.ct, 'base64url'),
      Buffer.from(record.tag, 'base64url'),
      IDENTITY_AAD,
    );
    assert.deepEqual(plaintext, SECRET);
  });

  it('when a flow state was sealed as {v,iv,ct,tag} under HKDF(state) with the store key as AAD, then it opens, and what is sealed now opens the same way', () => {
    const state = 'state-fixture-3QmZ8yR1vT6wK0pL9sXc2bNf';
    const storeKey = flowStateKey(state);
    assert.equal(storeKey, createHash('sha256').update(state, 'utf8').digest('base64url'));
    const key = Buffer.from(
      hkdfSync(
        'sha256',
        Buffer.from(state, 'utf8'),
        Buffer.alloc(0),
        'linkvault/flow-state/v1',
        32,
      ),
    );
    const flow = {
      v: 1,
      tenantId: 'acme',
      userId: 'u-1',
      providerId: 'hubspot',
      createdAtMs: 1_700_000_000_000,
    };
    const iv = Buffer.from('c0c1c2c3c4c5c6c7c8c9cacb', 'hex');
    const sealed = gcmSeal(key, iv, Buffer.from(JSON.stringify(flow), 'utf8'), storeKey);
    const record = {
      v: 1,
      iv: iv.toString('base64url'),
      ct: sealed.ct.toString('base64url'),
      tag: sealed.tag.toString('base64url'),
    };
    assert.deepEqual(openFlowState(state, storeKey, record), flow);
    assert.equal(openFlowState(state, flowStateKey('another-state'), record), null);

    const fresh = sealFlowState(
      state,
      storeKey,
      flow as unknown as Parameters<typeof sealFlowState>[2],
    );
    assert.deepEqual(Object.keys(fresh).sort(), ['ct', 'iv', 'tag', 'v']);
    const opened = gcmOpen(
      key,
      Buffer.from(fresh.iv as string, 'base64url'),
      Buffer.from(fresh.ct as string, 'base64url'),
      Buffer.from(fresh.tag as string, 'base64url'),
      storeKey,
    );
    assert.deepEqual(JSON.parse(opened.toString('utf8')), flow);
  });
});
