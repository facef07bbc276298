import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { checkWebhookUrl } from '../../src/net/check-webhook-url.js';
import { isPublicAddress } from '../../src/net/public-address.js';
import { createWebhookSender, WebhookSendError } from '../../src/net/webhook-sender.js';

describe('outbound targets (SSRF)', () => {
  it('when addresses are classified, then only public unicast ones pass', () => {
    const refused = [
      '127.0.0.1',
      '10.1.2.3',
      '172.16.0.1',
      '172.31.255.255',
      '192.168.1.1',
      '169.254.169.254',
      '100.64.0.1',
      '0.0.0.0',
      '224.0.0.1',
      '255.255.255.255',
      '::1',
      '::',
      'fe80::1',
      'fc00::1',
      'fd12:3456::1',
      '::ffff:127.0.0.1',
      '::ffff:10.0.0.1',
      '64:ff9b::a00:1',
      '2001:db8::1',
      'ff02::1',
      'not-an-ip',
    ];
    const allowed = ['8.8.8.8', '1.1.1.1', '172.32.0.1', '2606:4700:4700::1111', '::ffff:8.8.8.8'];
    for (const a of refused) assert.equal(isPublicAddress(a), false, a);
    for (const a of allowed) assert.equal(isPublicAddress(a), true, a);
  });

  it('when production checks a webhook URL, then http, loopback names and private literals are refused', async () => {
    for (const url of [
      'http://example.com/x',
      'https://127.0.0.1/x',
      'https://localhost/x',
      'https://[::1]/x',
      'https://10.0.0.8/x',
    ]) {
      await assert.rejects(checkWebhookUrl(new URL(url), true), (err: { code?: string }) => {
        assert.equal(err.code, 'invalid_webhook_url', url);
        return true;
      });
    }
    await checkWebhookUrl(new URL('http://127.0.0.1:9/x'), false);
  });

  it('when the sender is public-only, then a loopback receiver is never contacted; otherwise a redirect is not followed', async () => {
    let hits = 0;
    const server = createServer((_req, res) => {
      hits++;
      res.writeHead(302, { location: 'http://169.254.169.254/latest/meta-data/' }).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as AddressInfo).port;
    try {
      const strict = createWebhookSender({ publicOnly: true, timeoutMs: 2000 });
      await assert.rejects(
        strict.send({ url: `https://localhost:${port}/x`, headers: {}, body: '{}' }),
        (err) => err instanceof WebhookSendError && err.reason === 'target_refused',
      );
      await assert.rejects(
        strict.send({ url: `http://8.8.8.8/x`, headers: {}, body: '{}' }),
        (err) => err instanceof WebhookSendError && err.reason === 'target_refused',
        'http is refused in production',
      );
      assert.equal(hits, 0);
      const dev = createWebhookSender({ publicOnly: false, timeoutMs: 2000 });
      const answer = await dev.send({ url: `http://127.0.0.1:${port}/x`, headers: {}, body: '{}' });
      assert.equal(answer.status, 302);
      assert.equal(hits, 1, 'the redirect was not followed');
    } finally {
      server.close();
      server.closeAllConnections();
    }
  });

  it('when the receiver hangs, then the attempt ends at the time limit', async () => {
    const server = createServer(() => undefined);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as AddressInfo).port;
    try {
      const sender = createWebhookSender({ publicOnly: false, timeoutMs: 300 });
      const started = Date.now();
      await assert.rejects(
        sender.send({ url: `http://127.0.0.1:${port}/x`, headers: {}, body: '{}' }),
        (err) => err instanceof WebhookSendError && err.reason === 'timeout',
      );
      assert.ok(Date.now() - started < 5000);
    } finally {
      server.close();
      server.closeAllConnections();
    }
  });
});
