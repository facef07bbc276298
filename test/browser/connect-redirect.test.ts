import assert from 'node:assert/strict';
import { after, afterEach, before, beforeEach, test } from 'node:test';
import { chromiumSkipReason, launchChromium, type Browser } from '../support/browser.js';
import { startBrowserStack, type BrowserStack } from '../support/browser-stack.js';
import { signInToSandbox } from '../support/sandbox-consent.js';

const skip = chromiumSkipReason();
let stack: BrowserStack;
let browser: Browser;

before(async () => {
  if (skip) return;
  stack = await startBrowserStack();
});
beforeEach(async () => {
  if (skip) return;
  // A fresh profile per test (the sandbox remembers a sign-in). Chromium's own popup blocker stays
  // on: a connect() without a user gesture gets no popup.
  browser = await launchChromium({ popupBlocking: true });
});
afterEach(async () => {
  await browser?.close();
});
after(async () => {
  await stack?.close();
});

test('when the browser blocks the popup, then the SDK falls back to a full-page redirect and the return_to page receives the link id', { skip }, async () => {
  const session = await stack.createSession({ tenant_id: 'acme', user_id: 'u-redirect', providers: ['sandbox'], return_to: stack.returnTo });
  const page = browser.page;
  // The host page calls connect() on load, with no click: no user activation, so window.open is blocked.
  await page.goto(stack.hostAppUrl(session.session_token, { auto: true }));
  await page.waitForURL(`${stack.lvUrl}/connect?origin=${encodeURIComponent(stack.hostOrigin)}`);
  assert.equal(browser.context.pages().length, 1, 'no popup was opened');
  await page.getByRole('heading', { level: 1, name: 'Connect Sandbox CRM' }).waitFor();
  // Page mode: no Cancel button (there is no opener to tell), and the fragment is gone.
  assert.equal(await page.getByRole('button', { name: 'Cancel' }).isVisible(), false);
  await browser.screenshot(page, 'connect-page-redirect');

  await page.getByRole('button', { name: 'Continue to Sandbox CRM' }).click();
  await signInToSandbox(page, 'bob');
  await page.getByRole('button', { name: 'Allow' }).click();

  await browser.explain(page.waitForURL(`${stack.hostOrigin}/return`, { timeout: 10_000 }));
  const result = page.locator('#result');
  await result.filter({ hasText: 'link_id' }).waitFor();
  const link = JSON.parse(await result.innerText()) as { link_id: string; provider: string };
  assert.match(link.link_id, /^lnk_[A-Za-z0-9_-]+$/);
  assert.equal(link.provider, 'sandbox');
  // completeRedirect() removed the result from the address bar.
  assert.equal(page.url(), `${stack.hostOrigin}/return`);

  const stored = await stack.serviceGet(`/v1/links/${link.link_id}`);
  assert.equal(stored.body.user_id, 'u-redirect');
  assert.equal(stored.body.status, 'active');
  assert.deepEqual(browser.problems, []);
});

test('when the user denies consent after a redirect, then the return_to page gets a cancelled LinkvaultConnectError', { skip }, async () => {
  const session = await stack.createSession({ tenant_id: 'acme', user_id: 'u-redirect-deny', providers: ['sandbox'], return_to: stack.returnTo });
  const page = browser.page;
  await page.goto(stack.hostAppUrl(session.session_token, { auto: true }));
  await page.getByRole('button', { name: 'Continue to Sandbox CRM' }).click();
  await signInToSandbox(page, 'carol');
  await page.getByRole('button', { name: 'Deny' }).click();

  await browser.explain(page.waitForURL(`${stack.hostOrigin}/return`, { timeout: 10_000 }));
  const error = page.locator('#error');
  await error.filter({ hasText: 'code' }).waitFor();
  assert.deepEqual(JSON.parse(await error.innerText()), { name: 'LinkvaultConnectError', code: 'cancelled', detail: 'provider_denied', typed: true });
  assert.deepEqual(browser.problems, []);
});
