import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connectScriptIntegrity } from '../../packages/connect/sri.js';
import { chromiumSkipReason, launchChromium, type Browser } from '../support/browser.js';
import { startStack, type Stack } from '../support/stack.js';

/**
 * @linkvault/connect's loader in real Chromium, on a host page of another origin: it loads the
 * script from a running linkvault, with the SRI hash the package computes, and the browser refuses
 * the script when the hash is wrong.
 */

const ROOT = join(import.meta.dirname, '../..');
const LOADER = readFileSync(join(ROOT, 'packages/connect/index.js'), 'utf8');
const SERVED = readFileSync(join(ROOT, 'src/web/connect.js'), 'utf8');
const skip = chromiumSkipReason();

describe('loadConnect in a browser', { skip }, () => {
  let stack: Stack;
  let host: Server;
  let hostUrl: string;
  let browser: Browser;

  before(async () => {
    stack = await startStack({ listen: true });
    host = createServer((req, res) => {
      if (req.url === '/loader.js') {
        res.writeHead(200, { 'content-type': 'text/javascript' }).end(LOADER);
        return;
      }
      const params = new URL(req.url ?? '/', 'http://host').searchParams;
      // The page's script, written as the host app would (browser code, hence a string).
      res.writeHead(200, { 'content-type': 'text/html' }).end(`<!doctype html>
<script type="module">
  import { loadConnect } from '/loader.js';
  const options = ${JSON.stringify({ baseUrl: params.get('base'), integrity: params.get('integrity') })};
  window.outcome = loadConnect(options).then(
    (api) => ({ version: api.version, origin: api.origin, connect: typeof api.connect }),
    (err) => ({ error: err.message }),
  );
</script>`);
    });
    await new Promise<void>((resolve) => host.listen(0, '127.0.0.1', () => resolve()));
    hostUrl = `http://localhost:${(host.address() as AddressInfo).port}`;
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await new Promise<void>((resolve) => host?.close(() => resolve()));
    await stack?.close();
  });

  async function load(integrity: string): Promise<unknown> {
    const query = new URLSearchParams({ base: stack.publicUrl, integrity });
    await browser.page.goto(`${hostUrl}/?${query}`);
    return browser.explain(browser.page.evaluate('window.outcome'));
  }

  test('when the host page loads the script with the integrity the package computes, then window.linkvault is ready and knows its origin', async () => {
    const outcome = await load(connectScriptIntegrity(stack.publicUrl, SERVED));
    assert.deepEqual(outcome, {
      version: '1.0.0',
      origin: new URL(stack.publicUrl).origin,
      connect: 'function',
    });
  });

  test('when the integrity is not the served script\u2019s, then the browser refuses it and loadConnect rejects', async () => {
    const outcome = await load(connectScriptIntegrity('https://other.example', SERVED));
    assert.deepEqual(outcome, {
      error: `linkvault: could not load ${stack.publicUrl}/sdk/connect.v1.js`,
    });
  });
});
