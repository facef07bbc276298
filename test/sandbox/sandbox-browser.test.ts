import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { chromium, type Browser } from 'playwright-core';
import { startConnectHarness, type ConnectHarness } from '../support/connect-harness.js';

/**
 * A person in a real browser (Chromium through playwright-core) connects the Sandbox CRM: the
 * pages work under their own CSP (no script, form-action 'self' across the redirect chain back
 * to linkvault), and the result page says the account is connected. Every request outside the
 * service is aborted, so the test cannot reach the internet.
 */

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'].find(
  (p) => existsSync(p),
);

describe(
  'when a person connects the Sandbox CRM in a real browser',
  { skip: CHROMIUM ? false : 'no Chromium installed' },
  () => {
    let h: ConnectHarness;
    let browser: Browser;
    before(async () => {
      h = await startConnectHarness({ sandbox: true });
      browser = await chromium.launch({ executablePath: CHROMIUM!, headless: true });
    });
    after(async () => {
      await browser?.close();
      await h?.close();
    });

    test('then the login and consent pages work under their CSP and the result page confirms the link', async () => {
      const session = await h.createSession({ tenant_id: 'tenant-browser', user_id: 'person' });
      const context = await browser.newContext();
      const page = await context.newPage();
      const violations: string[] = [];
      page.on('console', (message) => {
        if (/Content Security Policy|Refused to/i.test(message.text()))
          violations.push(message.text());
      });
      await context.route('**/*', (route) =>
        new URL(route.request().url()).origin === h.publicUrl ? route.continue() : route.abort(),
      );

      await page.goto(session.connect_url);
      await Promise.all([
        page.waitForURL(/\/sandbox\//),
        page.getByRole('button', { name: 'Connect Sandbox CRM' }).click(),
      ]);
      assert.equal(await page.textContent('h2'), 'Sign in');
      await page.fill('#username', 'grace');
      await Promise.all([
        page.waitForURL(/\/sandbox\/interaction\//),
        page.click('button:has-text("Sign in")'),
      ]);
      assert.equal(await page.textContent('h2'), 'Allow access?');
      await Promise.all([
        page.waitForURL(/\/connect\/result\?status=connected/),
        page.click('button:has-text("Allow")'),
      ]);
      assert.equal(await page.textContent('h1'), 'Sandbox CRM is connected');
      assert.deepEqual(violations, []);

      const links = await h.store.listLinks({ tenantId: 'tenant-browser', userId: 'person' });
      assert.equal(links.length, 1);
      assert.equal(links[0]!.providerAccountId, 'grace');
      // The binding cookie was cleared after the callback.
      assert.ok(!(await context.cookies()).some((c) => c.name === 'lv_flow'));
      await context.close();
    });
  },
);
