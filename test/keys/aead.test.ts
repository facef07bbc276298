import assert from 'node:assert/strict';
import { createSecretKey, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { AeadError, openAead, sealAead, type AeadFailure } from '../../src/keys/aead.js';

const KEY = randomBytes(32);
const AAD = '{"field":"token_set","link":"lnk_a","provider":"hubspot","tenant":"acme"}';
const SECRET = Buffer.from('rt-canary-aead-7e1a');

function failsWith(failure: AeadFailure): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof AeadError, `expected AeadError, got ${String(err)}`);
    assert.equal(err.failure, failure);
    return true;
  };
}

describe('aead', () => {
  it('when a key of the wrong size is given, then sealing and opening fail with key_length', () => {
    assert.throws(() => sealAead(randomBytes(16), SECRET, AAD), failsWith('key_length'));
    const sealed = sealAead(KEY, SECRET, AAD);
    assert.throws(() => openAead(randomBytes(31), sealed, AAD), failsWith('key_length'));
    assert.throws(
      () => openAead(createSecretKey(randomBytes(24)), sealed, AAD),
      failsWith('key_length'),
    );
  });

  it('when the iv or tag has the wrong length, then opening fails naming which', () => {
    const sealed = sealAead(KEY, SECRET, AAD);
    assert.throws(
      () => openAead(KEY, { ...sealed, iv: sealed.iv.subarray(0, 8) }, AAD),
      failsWith('iv_length'),
    );
    assert.throws(
      () => openAead(KEY, { ...sealed, iv: Buffer.concat([sealed.iv, Buffer.alloc(4)]) }, AAD),
      failsWith('iv_length'),
    );
    assert.throws(
      () => openAead(KEY, { ...sealed, tag: sealed.tag.subarray(0, 12) }, AAD),
      failsWith('tag_length'),
    );
  });

  it('when the key, the aad or any byte differs, then opening fails with not_authentic', () => {
    const sealed = sealAead(KEY, SECRET, AAD);
    const flipped = (b: Buffer, i: number): Buffer => {
      const copy = Buffer.from(b);
      copy[i] = copy[i]! ^ 0x01;
      return copy;
    };
    assert.throws(() => openAead(randomBytes(32), sealed, AAD), failsWith('not_authentic'));
    assert.throws(
      () => openAead(KEY, sealed, AAD.replace('lnk_a', 'lnk_b')),
      failsWith('not_authentic'),
    );
    assert.throws(
      () => openAead(KEY, { ...sealed, iv: flipped(sealed.iv, 0) }, AAD),
      failsWith('not_authentic'),
    );
    assert.throws(
      () => openAead(KEY, { ...sealed, ct: flipped(sealed.ct, sealed.ct.length - 1) }, AAD),
      failsWith('not_authentic'),
    );
    assert.throws(
      () => openAead(KEY, { ...sealed, tag: flipped(sealed.tag, 15) }, AAD),
      failsWith('not_authentic'),
    );
  });

  it('when sealed, then it opens under the same key and aad (Buffer or KeyObject), with a 12-byte iv, a 16-byte tag and a fresh iv each time', () => {
    const a = sealAead(KEY, SECRET, AAD);
    const b = sealAead(createSecretKey(KEY), SECRET, Buffer.from(AAD, 'utf8'));
    assert.equal(a.iv.length, 12);
    assert.equal(a.tag.length, 16);
    assert.equal(a.ct.length, SECRET.length);
    assert.notDeepEqual(a.iv, b.iv);
    assert.deepEqual(openAead(KEY, a, AAD), SECRET);
    assert.deepEqual(openAead(createSecretKey(KEY), b, AAD), SECRET);
    assert.deepEqual(openAead(KEY, sealAead(KEY, Buffer.alloc(0), AAD), AAD), Buffer.alloc(0));
  });
});
