import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { SqliteStore } from '../../../src/store/sqlite/sqlite-store.js';
import { useBrowserStack } from '../../support/browser-stack.js';
import { connectOnHostedPage } from '../../support/sandbox-consent.js';

const lv = useBrowserStack();
const { skip } = lv;

/** Puts the link in needs_reauth through the Store port, as a refused refresh would (compare-and-set on its version). */
async function markNeedsReauth(linkId: string): Promise<void> {
  const store = new SqliteStore({ path: lv.stack.sqlitePath, log: pino({ level: 'silent' }) });
  try {
    const link = await store.getLink(linkId);
    assert.ok(link);
    assert.ok(await store.saveLink({ ...link, status: 'needs_reauth' }, link.version));
  } finally {
    await store.close();
  }
}

test(
  'when a link needs reconnecting, then the manage page offers Reconnect, which reconnects it in a popup and shows it active again',
  { skip },
  async () => {
    const page = lv.browser.page;
    const linkId = await connectOnHostedPage(
      page,
      (await lv.stack.createSession({ tenant_id: 'acme', user_id: 'u-reauth' })).connect_url,
      'frank',
    );
    await markNeedsReauth(linkId);

    await page.goto(
      (await lv.stack.createSession({ tenant_id: 'acme', user_id: 'u-reauth' })).manage_url,
    );
    const card = page.locator('#links > li');
    await card.first().waitFor();
    assert.equal(await card.locator('.status').innerText(), 'Needs reconnecting');
    assert.match(await card.locator('.attention').innerText(), /asked to be connected again/);
    await lv.browser.screenshot(page, 'manage-needs-reauth');

    // Reconnect runs the connect SDK from the manage page itself (its own origin is an allowed opener).
    const popupOpened = lv.browser.context.waitForEvent('page');
    await card.getByRole('button', { name: 'Reconnect Sandbox CRM' }).click();
    const popup = await popupOpened;
    const closed = popup.waitForEvent('close');
    await popup.getByRole('button', { name: 'Continue to Sandbox CRM' }).click();
    // The sandbox remembers this browser's sign-in and grant, so it answers at once.
    await closed;

    await page.getByRole('heading', { name: 'Sandbox CRM is connected again' }).waitFor();
    assert.equal(await card.locator('.status').innerText(), 'Active');
    const stored = await lv.stack.serviceGet(`/v1/links/${linkId}`);
    assert.equal(stored.body.status, 'active', 'the same link (same account) is active again');
    assert.deepEqual(lv.browser.problems, []);
  },
);
