import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Page } from 'playwright-core';
import { useBrowserStack } from '../../support/browser-stack.js';
import { signInToSandbox } from '../../support/sandbox-consent.js';

// A fresh profile per test: no sandbox sign-in carried over.
const lv = useBrowserStack({ browserPerTest: true });
const { skip } = lv;

/** Opens the host app for a new session and clicks Connect; resolves with the host page and the popup. */
async function openPopup(userId: string): Promise<{ page: Page; popup: Page }> {
  const session = await lv.stack.createSession({
    tenant_id: 'acme',
    user_id: userId,
    providers: ['sandbox'],
  });
  const page = lv.browser.page;
  await page.goto(lv.stack.hostAppUrl(session.session_token));
  const popupOpened = lv.browser.context.waitForEvent('page');
  await page.getByRole('button', { name: 'Connect Sandbox CRM' }).click();
  const popup = await popupOpened;
  await popup.getByRole('heading', { level: 1, name: 'Connect Sandbox CRM' }).waitFor();
  return { page, popup };
}

async function hostError(page: Page): Promise<unknown> {
  const error = page.locator('#error');
  await error.filter({ hasText: 'code' }).waitFor();
  assert.equal(await page.locator('#result').innerText(), '');
  return JSON.parse(await error.innerText());
}

async function linksOf(userId: string): Promise<unknown[]> {
  const res = await lv.stack.serviceGet(`/v1/links?tenant_id=acme&user_id=${userId}`);
  assert.equal(res.status, 200);
  return res.body.links as unknown[];
}

test(
  'when the user presses Cancel on the connect page, then the popup closes and connect() rejects with code cancelled',
  { skip },
  async () => {
    const { page, popup } = await openPopup('u-cancel');
    const closed = popup.waitForEvent('close');
    // The click closes the popup itself: Playwright may then report the page gone while it
    // finishes the click. That is the expected outcome, not a failure; any other error is.
    await popup
      .getByRole('button', { name: 'Cancel' })
      .click({ noWaitAfter: true })
      .catch((err: unknown) => {
        if (!popup.isClosed()) throw err;
      });
    await closed;
    assert.deepEqual(await hostError(page), {
      name: 'LinkvaultConnectError',
      code: 'cancelled',
      detail: null,
      typed: true,
    });
    assert.deepEqual(await linksOf('u-cancel'), []);
    assert.deepEqual(lv.browser.problems, []);
  },
);

test(
  'when the user denies consent at the provider, then the popup closes and connect() rejects with code cancelled',
  { skip },
  async () => {
    const { page, popup } = await openPopup('u-deny');
    await popup.getByRole('button', { name: 'Continue to Sandbox CRM' }).click();
    await signInToSandbox(popup, 'dave');
    const closed = popup.waitForEvent('close');
    await popup.getByRole('button', { name: 'Deny' }).click();
    await closed;
    assert.deepEqual(await hostError(page), {
      name: 'LinkvaultConnectError',
      code: 'cancelled',
      detail: null,
      typed: true,
    });
    assert.deepEqual(await linksOf('u-deny'), []);
    assert.deepEqual(lv.browser.problems, []);
  },
);

test(
  "when the user closes the popup at the provider's sign-in, then connect() rejects with code popup_closed",
  { skip },
  async () => {
    const { page, popup } = await openPopup('u-close');
    await popup.getByRole('button', { name: 'Continue to Sandbox CRM' }).click();
    await popup.getByLabel('Username').waitFor();
    await popup.close();
    assert.deepEqual(await hostError(page), {
      name: 'LinkvaultConnectError',
      code: 'popup_closed',
      detail: null,
      typed: true,
    });
    assert.deepEqual(lv.browser.problems, []);
  },
);

test(
  'when the session has expired, then the popup says so and connect() rejects with code session_expired',
  { skip },
  async () => {
    const page = lv.browser.page;
    // A token of the right shape that no session has.
    await page.goto(lv.stack.hostAppUrl('A'.repeat(43)));
    const popupOpened = lv.browser.context.waitForEvent('page');
    await page.getByRole('button', { name: 'Connect Sandbox CRM' }).click();
    const popup = await popupOpened;
    await popup.getByRole('heading', { name: 'This link has expired' }).waitFor();
    assert.deepEqual(await hostError(page), {
      name: 'LinkvaultConnectError',
      code: 'session_expired',
      detail: 'session_expired',
      typed: true,
    });
    await lv.browser.screenshot(popup, 'connect-page-expired');
    // The 401 itself is logged by Chromium as a failed resource load; nothing else may be.
    assert.deepEqual(
      lv.browser.problems.filter(
        (p) => !/Failed to load resource: the server responded with a status of 401/.test(p),
      ),
      [],
    );
  },
);
