import assert from 'node:assert/strict';
import { test } from 'node:test';
import { useBrowserStack } from '../../support/browser-stack.js';
import { signInToSandbox } from '../../support/sandbox-consent.js';

const lv = useBrowserStack();
const { skip } = lv;

const PHONE = { width: 390, height: 844 };
const DESKTOP = { width: 1000, height: 800 };

test(
  'when the user connects on the hosted connect page, then manages the link and revokes it, then the page shows the revocation guidance',
  { skip },
  async () => {
    const page = lv.browser.page;

    // ---- connect through the hosted page (connect_url; no return_to: it ends on the result page) ----
    const connectSession = await lv.stack.createSession({ tenant_id: 'acme', user_id: 'u-manage' });
    await page.goto(connectSession.connect_url);
    await page.getByRole('button', { name: 'Connect Sandbox CRM' }).waitFor();
    assert.equal(page.url(), `${lv.stack.lvUrl}/connect`, 'the session token left the address bar');
    await lv.browser.screenshot(page, 'connect-page');
    await page.setViewportSize(PHONE);
    await lv.browser.screenshot(page, 'connect-page-phone');
    await page.setViewportSize(DESKTOP);
    await page.getByRole('button', { name: 'Connect Sandbox CRM' }).click();
    await signInToSandbox(page, 'erin');
    await page.getByRole('button', { name: 'Allow' }).click();
    await page.getByRole('heading', { name: 'Sandbox CRM is connected' }).waitFor();
    const resultUrl = new URL(page.url());
    assert.equal(resultUrl.pathname, '/connect/result');
    assert.equal(resultUrl.searchParams.get('status'), 'connected');
    const linkId = resultUrl.searchParams.get('link_id')!;
    assert.match(linkId, /^lnk_/);
    await lv.browser.screenshot(page, 'connect-result');

    // ---- "My linked accounts" ----
    const manageSession = await lv.stack.createSession({ tenant_id: 'acme', user_id: 'u-manage' });
    await page.goto(manageSession.manage_url);
    const card = page.locator('#links > li');
    await card.first().waitFor();
    assert.equal(page.url(), `${lv.stack.lvUrl}/manage`, 'the session token left the address bar');
    assert.equal(await card.count(), 1);
    assert.equal(await card.getByRole('heading', { level: 2 }).innerText(), 'Sandbox CRM');
    assert.equal(await card.locator('.status').innerText(), 'Active');
    assert.deepEqual(await card.locator('.scope-list li').allInnerTexts(), [
      'Read your Sandbox CRM contacts contacts.read',
    ]);
    assert.equal(await card.locator('.facts dd').nth(1).innerText(), 'Not used yet');
    const linked = await card.locator('.facts time').first().getAttribute('datetime');
    const stored = await lv.stack.serviceGet(`/v1/links/${linkId}`);
    assert.equal(linked, stored.body.created_at);
    await lv.browser.screenshot(page, 'manage-page');
    await page.setViewportSize(PHONE);
    await lv.browser.screenshot(page, 'manage-page-phone');
    await page.setViewportSize(DESKTOP);
    await page.emulateMedia({ colorScheme: 'dark' });
    await lv.browser.screenshot(page, 'manage-page-dark');
    await page.emulateMedia({ colorScheme: 'light' });

    // ---- keyboard: Tab reaches Revoke with a visible focus ring; Escape backs out of the confirmation ----
    await page.keyboard.press('Tab');
    const revoke = page.getByRole('button', { name: 'Revoke access to Sandbox CRM' });
    assert.equal(
      await page.evaluate('document.activeElement.textContent'),
      'Revoke access to Sandbox CRM',
    );
    // :focus-visible draws a 3px outline (styles.css); keyboard focus must be seen (WCAG 2.4.7).
    assert.equal(
      await page.evaluate('getComputedStyle(document.activeElement).outlineStyle'),
      'solid',
    );
    assert.equal(
      await page.evaluate('getComputedStyle(document.activeElement).outlineWidth'),
      '3px',
    );
    await page.keyboard.press('Enter');
    const dialog = page.getByRole('dialog', { name: 'Revoke Sandbox CRM access?' });
    await dialog.waitFor();
    assert.equal(await page.evaluate('document.activeElement.textContent'), 'Keep it');
    await lv.browser.screenshot(page, 'revoke-confirm');
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'hidden' });
    assert.equal(
      (await lv.stack.serviceGet(`/v1/links/${linkId}`)).body.status,
      'active',
      'Escape revoked nothing',
    );

    // ---- revoke, confirmed ----
    await revoke.click();
    await dialog.getByRole('button', { name: 'Revoke access' }).click();
    const guidance = card.locator('.guidance');
    await guidance.waitFor();
    assert.equal(await card.locator('.status').innerText(), 'Revoked');
    assert.equal(
      await page.evaluate('document.activeElement.textContent'),
      'Sandbox CRM access revoked',
      'focus moved to the outcome',
    );

    const revocation = await lv.stack.serviceGet(`/v1/links/${linkId}/revocation`);
    assert.equal(revocation.status, 200);
    const record = revocation.body as {
      revoked_by: string;
      guidance: { settings_url: string; instructions: string; privacy_policy_url: string };
    };
    assert.equal(record.revoked_by, 'user');
    assert.match(
      await guidance.innerText(),
      new RegExp(record.guidance.instructions.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')),
    );
    const settings = guidance.getByRole('link', { name: /Open your Sandbox CRM settings/ });
    assert.equal(await settings.getAttribute('href'), record.guidance.settings_url);
    assert.equal(await settings.getAttribute('rel'), 'noopener noreferrer');
    assert.equal(
      await guidance.getByRole('link', { name: /Sandbox CRM privacy policy/ }).getAttribute('href'),
      record.guidance.privacy_policy_url,
    );
    assert.match(await guidance.locator('.provider-status').innerText(), /Sandbox CRM/);
    assert.equal((await lv.stack.serviceGet(`/v1/links/${linkId}`)).body.status, 'revoked');
    await lv.browser.screenshot(page, 'revoked');
    await page.setViewportSize(PHONE);
    await lv.browser.screenshot(page, 'revoked-phone');
    await page.setViewportSize(DESKTOP);

    assert.deepEqual(lv.browser.problems, []);

    // ---- the token lived in memory only: a reload cannot act on the session any more ----
    await page.reload();
    await page.getByRole('heading', { name: 'This page has expired' }).waitFor();
    assert.equal(await page.locator('#links').isVisible(), false);
  },
);
