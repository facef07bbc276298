import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { flowStateKey } from '../../../src/links/connect/connect.js';
import {
  startConnectHarnessWithOidc,
  type OidcConnectHarness,
} from '../../support/connect-harness.js';

describe('when the flow state sits in the store between the redirect and the callback', () => {
  let h: OidcConnectHarness;
  before(async () => {
    h = await startConnectHarnessWithOidc({ mode: 'oidc' });
  });
  after(async () => {
    await h.close();
  });

  test('then it is kept under SHA-256(state), sealed, and opens only under the key of its own state', async () => {
    const session = await h.createSession({
      tenant_id: 'tenant-flow-state',
      user_id: 'user-flow-state',
      return_to: 'https://app.example.com/x',
    });
    const flow = await h.startFlow('acme', session.session_token);
    const state = flow.authorizationUrl.searchParams.get('state')!;
    const nonce = flow.authorizationUrl.searchParams.get('nonce')!;
    const key = flowStateKey(state);

    const record = await h.store.takeFlowState(key);
    assert.ok(record);
    assert.deepEqual(Object.keys(record).sort(), ['ct', 'iv', 'tag', 'v']);
    const raw = JSON.stringify(record);
    for (const plain of [
      state,
      nonce,
      'tenant-flow-state',
      'user-flow-state',
      'app.example.com',
      flow.cookie.split('=')[1]!,
    ]) {
      assert.ok(!raw.includes(plain), 'the flow state is sealed');
    }
    assert.equal(await h.store.takeFlowState(key), null, 'taken once');

    // Moved under another state's key, the sealed record does not open: invalid_state, no exchange.
    const otherState = randomBytes(32).toString('base64url');
    await h.store.putFlowState(flowStateKey(otherState), record, 60);
    const callbackUrl = await h.oidc.completeLogin(flow.authorizationUrl, {
      accountId: 'flow-state',
    });
    const exchanges = h.oidc.tokenRequests().authorization_code ?? 0;
    const moved = new URL(callbackUrl);
    moved.searchParams.set('state', otherState);
    const refused = await h.callback(moved, flow.cookie, {
      headers: { accept: 'application/json' },
    });
    assert.equal(refused.status, 400);
    assert.equal(refused.json?.code, 'invalid_state');
    assert.equal(h.oidc.tokenRequests().authorization_code ?? 0, exchanges);

    // Put back under its own key, the same record completes the flow.
    await h.store.putFlowState(key, record, 60);
    const done = await h.callback(callbackUrl, flow.cookie);
    assert.equal(done.status, 303);
    assert.equal(done.location?.searchParams.get('status'), 'connected');
  });
});
