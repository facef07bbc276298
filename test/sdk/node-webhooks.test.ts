import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { LinkvaultClient, verifyWebhook } from '../../packages/node/src/client.js';
import { eventually } from '../links/revoke/revocation-harness.js';
import { startStack, type Stack } from '../support/stack.js';

/**
 * The Node SDK's webhook endpoint calls and verifyWebhook against a running linkvault whose job
 * worker delivers the real lifecycle events to a receiver on loopback.
 */

describe('@linkvault/node webhooks against a running linkvault', () => {
  let stack: Stack;
  const deliveries: { headers: IncomingHttpHeaders; body: Buffer }[] = [];
  let delivered: (value?: unknown) => void = () => undefined;
  const firstDelivery = new Promise((resolve) => (delivered = resolve));
  const receiver = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      deliveries.push({ headers: req.headers, body: Buffer.concat(chunks) });
      res.writeHead(204).end();
      delivered();
    });
  });

  before(async () => {
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', () => resolve()));
    stack = await startStack({ listen: true, startWorker: true });
  });
  after(async () => {
    await stack.close();
    await new Promise<void>((resolve) => {
      receiver.close(() => resolve());
      receiver.closeAllConnections();
    });
  });

  test('when a service registers an endpoint and revokes a link through the SDK, then the delivery verifies with verifyWebhook and shows as delivered', async () => {
    const lv = new LinkvaultClient({
      baseUrl: stack.publicUrl,
      serviceId: 'crm-sync',
      kid: 'crm-hs',
      key: stack.services.env.LV_TEST_CRM_SECRET!,
    });
    const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks`;
    const endpoint = await lv.createWebhookEndpoint({ url, events: ['link.revoked'] });
    assert.match(endpoint.secret, /^whsec_/);
    assert.deepEqual(
      (await lv.listWebhookEndpoints()).map((e) => [e.id, e.url, 'secret' in e]),
      [[endpoint.id, url, false]],
    );

    const link = await stack.seedLink();
    await lv.revokeLink(link.id);
    await firstDelivery;
    const [delivery] = deliveries;
    const event = verifyWebhook(delivery!.headers, delivery!.body, endpoint.secret);
    assert.equal(event.type, 'link.revoked');
    assert.equal(event.data.link_id, link.id);
    assert.equal(event.data.revoked_by, 'service');
    assert.equal(event.id, delivery!.headers['webhook-id']);
    assert.throws(() =>
      verifyWebhook(
        delivery!.headers,
        Buffer.concat([delivery!.body, Buffer.from(' ')]),
        endpoint.secret,
      ),
    );

    const row = await eventually(async () => {
      const [first] = await lv.listWebhookDeliveries(endpoint.id);
      return first?.status === 'delivered' ? first : null;
    });
    assert.deepEqual([row.event_id, row.type, row.attempts], [event.id, 'link.revoked', 1]);
    await lv.deleteWebhookEndpoint(endpoint.id);
    assert.deepEqual(await lv.listWebhookEndpoints(), []);
  });
});
