import { strict as assert } from 'node:assert';
import { after, before, describe, it } from 'node:test';
import { openTokenSet } from '../../src/links/sealing/token-vault.js';
import { rawRequest, startProxyHarness, type ProxyHarness } from '../links/proxy/proxy-harness.js';

/**
 * After the provider has answered: the `proxy.completed` record is not awaited by the caller, so
 * a failure to store it cannot refuse the call; it is counted and logged instead. A small answer
 * (declared length up to 64 KiB) is read whole before anything is relayed, so one the provider
 * cuts short is a clean 502, recorded as `provider_aborted`.
 */

const RULES = {
  allow: [
    { method: 'GET', path: '/crm/**' },
    { method: 'GET', path: '/cut/*' },
  ],
};

describe('proxy completion', () => {
  let h: ProxyHarness;
  let failCompletion = false;

  before(async () => {
    h = await startProxyHarness({
      wrapStore: (store) => ({
        ...store,
        appendAudit: (event) =>
          failCompletion && event.type === 'proxy.completed'
            ? Promise.reject(new Error('disk full'))
            : store.appendAudit(event),
      }),
    });
  });
  after(() => h.close());

  const proxyLink = async (id: string) => {
    const link = await h.connect(id);
    await h.stack.addGrant({
      serviceId: 'worker',
      linkId: link.id,
      tokenRelease: false,
      proxy: RULES as never,
    });
    return link;
  };

  it('when the proxy.completed record cannot be stored, then the caller gets the answer and the failure is counted and logged', async () => {
    const link = await proxyLink('lnk_proxy_completion_1');
    const stored = (await h.stack.store.getLink(link.id))!;
    const token = (await openTokenSet(h.stack.vault, stored, stored.tokens!)).accessToken.reveal();
    const scrape = async () => (await rawRequest(h.stack.publicUrl, 'GET', '/metrics')).body;
    failCompletion = true;
    try {
      const res = await rawRequest(h.stack.publicUrl, 'GET', `/v1/links/${link.id}/proxy/crm/x`, {
        authorization: h.services.bearer('worker'),
      });
      assert.equal(res.status, 200, res.body);
      assert.deepEqual(JSON.parse(res.body), { ok: true, path: '/crm/x', bytes: 0 });
      // The record is written after the answer: wait for its failure to be seen.
      for (
        let i = 0;
        i < 100 && !/linkvault_proxy_audit_failures_total\{/.test(await scrape());
        i++
      )
        await new Promise((resolve) => setImmediate(resolve));
    } finally {
      failCompletion = false;
    }
    assert.match(await scrape(), /^linkvault_proxy_audit_failures_total\{provider="acme"\} 1$/m);
    const lines = h.stack
      .logText()
      .split('\n')
      .filter((l) => l.includes('audit of a completed proxied call failed'));
    assert.equal(lines.length, 1);
    assert.equal((JSON.parse(lines[0]!) as { link_id: string }).link_id, link.id);
    assert.ok(!h.stack.logText().includes(token), 'no token in the log');
    const types = (await h.stack.auditEvents())
      .filter((e) => e.data.link_id === link.id && e.type.startsWith('proxy.'))
      .map((e) => e.type);
    assert.deepEqual(types, ['proxy.requested']);
  });

  it('when the provider cuts a small answer short, then 502 provider_error and proxy.completed says provider_aborted', async () => {
    const link = await proxyLink('lnk_proxy_completion_2');
    const res = await rawRequest(h.stack.publicUrl, 'GET', `/v1/links/${link.id}/proxy/cut/1000`, {
      authorization: h.services.bearer('worker'),
    });
    assert.equal(res.status, 502, res.body);
    assert.equal((JSON.parse(res.body) as { code: string }).code, 'provider_error');
    assert.equal(res.headers['linkvault-proxy-request-id'], undefined);
    const isCompleted = (e: { type: string; data: Record<string, unknown> }): boolean =>
      e.type === 'proxy.completed' && e.data.link_id === link.id;
    const completed = (
      await h.stack.auditEventsWhen((all) => all.some(isCompleted), 'proxy.completed')
    ).find(isCompleted)!;
    assert.equal(completed.data.outcome, 'provider_aborted');
    assert.equal(completed.data.status, 200);
    assert.equal(completed.data.response_bytes, 500);
    assert.equal(
      h.stack.metrics.proxyRequests.get({ provider: 'acme', status_class: 'provider_aborted' }),
      1,
    );
  });
});
