import { strict as assert } from 'node:assert';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { LinkvaultError } from '../../src/errors.js';
import type { Store } from '../../src/store/store.js';
import { createReleaseHarness, type ReleaseHarness } from '../support/release-harness.js';

/**
 * "5xx bodies say nothing internal" (docs/errors.md): a sealed record that does not open, or a
 * store that times out, answers with the catalogue's code and title only — the adapter's detail
 * (which key, which backend, how long) goes to the log under the request id, never to the caller.
 * Checked on both the Express route and the token fast path, which share problemBody.
 */

const STORE_DETAIL = 'Redis did not answer within 2000 ms';

describe('when a token release fails inside linkvault, then the 5xx body says nothing internal', () => {
  let h: ReleaseHarness;
  let failGetLinkFor: string | null = null;
  let swappedId: string;
  let unreachableId: string;

  before(async () => {
    h = await createReleaseHarness({
      wrapStore: (store: Store): Store =>
        new Proxy(store, {
          get(target, prop, receiver) {
            const value = Reflect.get(target, prop, receiver) as unknown;
            if (prop === 'readForRelease') {
              return (serviceId: string, id: string) =>
                id === failGetLinkFor
                  ? Promise.reject(
                      new LinkvaultError('store_unavailable', {
                        detail: STORE_DETAIL,
                        retryAfterSeconds: 1,
                      }),
                    )
                  : target.readForRelease(serviceId, id);
            }
            if (prop === 'getLink') {
              return (id: string) =>
                id === failGetLinkFor
                  ? Promise.reject(
                      new LinkvaultError('store_unavailable', {
                        detail: STORE_DETAIL,
                        retryAfterSeconds: 1,
                      }),
                    )
                  : target.getLink(id);
            }
            return typeof value === 'function'
              ? (value as (...a: unknown[]) => unknown).bind(target)
              : value;
          },
        }),
    });
    // A link whose sealed record belongs to another link: the wrapped data key does not open under
    // this link's identity (AAD), so the vault rejects sealed_record_invalid with an internal detail.
    const donor = await h.seedLink({ accessToken: 'donor-access-token' });
    const victim = await h.seedLink({ accessToken: 'victim-access-token' });
    const swapped = await h.store.saveLink({ ...victim, tokens: donor.tokens }, victim.version);
    assert.ok(swapped);
    swappedId = victim.id;
    await h.addGrant({ serviceId: 'billing', linkId: swappedId });
    unreachableId = (await h.seedLink()).id;
    await h.addGrant({ serviceId: 'billing', linkId: unreachableId });
  });
  after(() => h.close());

  for (const via of ['express', 'fast path'] as const) {
    const target = (): Parameters<typeof request>[0] => (via === 'express' ? h.app : h.listener);

    it(`(${via}) a sealed record that does not open answers 500 sealed_record_invalid without detail`, async () => {
      const res = await request(target())
        .post(`/v1/links/${swappedId}/token`)
        .set('Authorization', h.services.bearer('billing-hs'))
        .set('Content-Type', 'application/json')
        .send('{}');
      assert.equal(res.status, 500);
      assert.equal(res.body.code, 'sealed_record_invalid');
      assert.equal(res.body.title, 'Internal error');
      assert.equal(res.body.detail, undefined, 'the vault’s detail stays in the log');
      assert.doesNotMatch(res.text, /wrapped|identity|data key|master/i);
      // The operator still finds the cause in the log, under the response's request id.
      assert.match(
        h.logText(),
        new RegExp(`"request_id":"${res.headers['x-request-id']}"[^\\n]*sealed_record_invalid`),
      );
    });

    it(`(${via}) a store timeout answers 503 store_unavailable with Retry-After and without detail`, async () => {
      failGetLinkFor = unreachableId;
      try {
        const res = await request(target())
          .post(`/v1/links/${unreachableId}/token`)
          .set('Authorization', h.services.bearer('billing-hs'))
          .set('Content-Type', 'application/json')
          .send('{}');
        assert.equal(res.status, 503);
        assert.equal(res.body.code, 'store_unavailable');
        assert.equal(res.headers['retry-after'], '1');
        assert.equal(res.body.detail, undefined);
        assert.doesNotMatch(res.text, /redis|2000 ms/i);
      } finally {
        failGetLinkFor = null;
      }
    });
  }

  it('a client error keeps its detail (the caller needs it to fix the request)', async () => {
    const res = await request(h.app)
      .post(`/v1/links/${swappedId}/token`)
      .set('Authorization', h.services.bearer('billing-hs'))
      .send({ min_validity_seconds: -1 });
    assert.equal(res.status, 400);
    assert.match(String(res.body.detail), /min_validity_seconds/);
  });
});
