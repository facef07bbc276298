import assert from 'node:assert/strict';
import { test } from 'node:test';
import { useBrowserStack } from '../../support/browser-stack.js';
import { signInToSandbox } from '../../support/sandbox-consent.js';

// A fresh profile per test (the sandbox remembers a sign-in). Chromium's own popup blocker stays
// on: a connect() without a user gesture gets no popup.
const lv = useBrowserStack({ browserPerTest: true, launch: { popupBlocking: true } });
const { skip } = lv;

test(
  'when the browser blocks the popup, then the SDK falls back to a full-page redirect and the return_to page receives the link id',
  { skip },
  async () => {
    const session = await lv.stack.createSession({
      tenant_id: 'acme',
      user_id: 'u-redirect',
      providers: ['sandbox'],
      return_to: lv.stack.returnTo,
    });
    const page = lv.browser.page;
    // The host page calls connect() on load, with no click: no user activation, so window.open is blocked.
    await page.goto(lv.stack.hostAppUrl(session.session_token, { auto: true }));
    await page.waitForURL(
      `${lv.stack.lvUrl}/connect?origin=${encodeURIComponent(lv.stack.hostOrigin)}`,
    );
    assert.equal(lv.browser.context.pages().length, 1, 'no popup was opened');
    await page.getByRole('heading', { level: 1, name: 'Connect Sandbox CRM' }).waitFor();
    // Page mode: no Cancel button (there is no opener to tell), and the fragment is gone.
    assert.equal(await page.getByRole('button', { name: 'Cancel' }).isVisible(), false);
    await lv.browser.screenshot(page, 'connect-page-redirect');

    await page.getByRole('button', { name: 'Continue to Sandbox CRM' }).click();
    await signInToSandbox(page, 'bob');
    await page.getByRole('button', { name: 'Allow' }).click();

    await lv.browser.explain(page.waitForURL(`${lv.stack.hostOrigin}/return`, { timeout: 10_000 }));
    const result = page.locator('#result');
    await result.filter({ hasText: 'link_id' }).waitFor();
    const link = JSON.parse(await result.innerText()) as { link_id: string; provider: string };
    assert.match(link.link_id, /^lnk_[A-Za-z0-9_-]+$/);
    assert.equal(link.provider, 'sandbox');
    // completeRedirect() removed the result from the address bar.
    assert.equal(page.url(), `${lv.stack.hostOrigin}/return`);

    const stored = await lv.stack.serviceGet(`/v1/links/${link.link_id}`);
    assert.equal(stored.body.user_id, 'u-redirect');
    assert.equal(stored.body.status, 'active');
    assert.deepEqual(lv.browser.problems, []);
  },
);

test(
  'when the user denies consent after a redirect, then the return_to page gets a cancelled LinkvaultConnectError',
  { skip },
  async () => {
    const session = await lv.stack.createSession({
      tenant_id: 'acme',
      user_id: 'u-redirect-deny',
      providers: ['sandbox'],
      return_to: lv.stack.returnTo,
    });
    const page = lv.browser.page;
    await page.goto(lv.stack.hostAppUrl(session.session_token, { auto: true }));
    await page.getByRole('button', { name: 'Continue to Sandbox CRM' }).click();
    await signInToSandbox(page, 'carol');
    await page.getByRole('button', { name: 'Deny' }).click();

    await lv.browser.explain(page.waitForURL(`${lv.stack.hostOrigin}/return`, { timeout: 10_000 }));
    const error = page.locator('#error');
    await error.filter({ hasText: 'code' }).waitFor();
    assert.deepEqual(JSON.parse(await error.innerText()), {
      name: 'LinkvaultConnectError',
      code: 'cancelled',
      detail: 'provider_denied',
      typed: true,
    });
    assert.deepEqual(lv.browser.problems, []);
  },
);
