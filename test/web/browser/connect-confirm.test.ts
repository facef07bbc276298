import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { SqliteStore } from '../../../src/store/sqlite/sqlite-store.js';
import { HOST_APP_NAME, useBrowserStack } from '../../support/browser-stack.js';
import { signInToSandbox } from '../../support/sandbox-consent.js';

/**
 * Host confirmation end to end in Chromium (issue 11 item 1): a session minted with
 * require_confirmation and user_display; the connect page names whom the connection is for; the
 * provider's answer leaves the link pending_confirmation; the host page gets
 * {status: 'confirm', confirmation_id, provider} (from the SDK popup, or from completeRedirect()
 * after the hosted page) and its backend confirms it, which makes the link active.
 */

// A fresh profile per test: the sandbox remembers a sign-in.
const lv = useBrowserStack({ browserPerTest: true });
const { skip } = lv;

interface ConfirmOutcome {
  status: string;
  confirmation_id: string;
  provider: string;
}

async function confirmAsHostBackend(
  confirmationId: string,
  tenantId: string,
  userId: string,
): Promise<Record<string, unknown>> {
  const confirmed = await lv.stack.servicePost(`/v1/confirmations/${confirmationId}`, {
    tenant_id: tenantId,
    user_id: userId,
  });
  assert.equal(confirmed.status, 200, JSON.stringify(confirmed.body));
  return confirmed.body;
}

test(
  'when a session requires confirmation and the SDK popup connects, then the host page gets status confirm and its backend confirms the link',
  { skip },
  async () => {
    const session = await lv.stack.createSession({
      tenant_id: 'acme',
      user_id: 'u-confirm-popup',
      user_display: 'ana@acme.example',
      providers: ['sandbox'],
      return_to: lv.stack.returnTo,
      require_confirmation: true,
    });
    const page = await lv.browser.context.newPage();
    const confirmEvents: unknown[] = [];
    await page.exposeFunction('recordConfirmEvent', (detail: unknown) => {
      confirmEvents.push(detail);
    });
    await page.goto(lv.stack.hostAppUrl(session.session_token));
    // In the page (a string: this file is compiled without the DOM library).
    await page.evaluate(
      "window.addEventListener('linkvault:confirm', (event) => window.recordConfirmEvent(event.detail))",
    );

    const popupOpened = lv.browser.context.waitForEvent('page');
    await page.getByRole('button', { name: 'Connect Sandbox CRM' }).click();
    const popup = await popupOpened;
    // Whom the connection is for, before anything happens at the provider.
    const forWhom = popup.locator('#for-whom');
    await forWhom.waitFor();
    assert.equal(
      await forWhom.innerText(),
      `You are connecting an account for ana@acme.example in ${HOST_APP_NAME}. If that is not you, close this page and do not continue.`,
    );
    await popup.getByRole('button', { name: 'Continue to Sandbox CRM' }).click();
    await signInToSandbox(popup, 'ana');
    const closed = popup.waitForEvent('close');
    await popup.getByRole('button', { name: 'Allow' }).click();
    await closed;

    const result = page.locator('#result');
    await result.filter({ hasText: 'confirmation_id' }).waitFor();
    const outcome = JSON.parse(await result.innerText()) as ConfirmOutcome;
    assert.equal(outcome.status, 'confirm');
    assert.equal(outcome.provider, 'sandbox');
    assert.match(outcome.confirmation_id, /^lnk_[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}$/);
    assert.deepEqual(confirmEvents, [outcome]);
    assert.equal(await page.locator('#error').innerText(), '');

    const linkId = outcome.confirmation_id.split('.')[0]!;
    const held = await lv.stack.serviceGet(`/v1/links/${linkId}`);
    assert.equal(held.body.status, 'pending_confirmation');
    const link = await confirmAsHostBackend(outcome.confirmation_id, 'acme', 'u-confirm-popup');
    assert.equal(link.id, linkId);
    assert.equal(link.status, 'active');
    assert.equal((await lv.stack.serviceGet(`/v1/links/${linkId}`)).body.status, 'active');
  },
);

test(
  'when a session requires confirmation and the hosted page connects, then the return_to page gets status confirm from completeRedirect and the backend confirms it',
  { skip },
  async () => {
    const session = await lv.stack.createSession({
      tenant_id: 'acme',
      user_id: 'u-confirm-page',
      user_display: 'ben@acme.example',
      providers: ['sandbox'],
      return_to: lv.stack.returnTo,
      require_confirmation: true,
    });
    const page = await lv.browser.context.newPage();
    const requested: string[] = [];
    page.on('request', (request) => requested.push(request.url()));
    await page.goto(session.connect_url);
    await page.locator('#for-whom').filter({ hasText: 'ben@acme.example' }).waitFor();
    await page.getByRole('button', { name: 'Connect Sandbox CRM' }).click();
    await signInToSandbox(page, 'ben');
    await page.getByRole('button', { name: 'Allow' }).click();
    await page.waitForURL((url) => url.href.startsWith(lv.stack.returnTo));

    const result = page.locator('#result');
    await result.filter({ hasText: 'confirmation_id' }).waitFor();
    const outcome = JSON.parse(await result.innerText()) as ConfirmOutcome;
    assert.equal(outcome.status, 'confirm');
    assert.equal(outcome.provider, 'sandbox');
    // completeRedirect() took the result out of the address bar.
    assert.equal(page.url(), lv.stack.returnTo);
    // The session token never travelled in any URL the browser requested.
    assert.deepEqual(
      requested.filter((url) => url.includes(session.session_token)),
      [],
    );

    const link = await confirmAsHostBackend(outcome.confirmation_id, 'acme', 'u-confirm-page');
    assert.equal(link.status, 'active');
  },
);

test(
  'when a session requires confirmation and has no return_to, then the hosted result page says the connection waits for confirmation',
  { skip },
  async () => {
    const session = await lv.stack.createSession({
      tenant_id: 'acme',
      user_id: 'u-confirm-result',
      providers: ['sandbox'],
      require_confirmation: true,
    });
    const page = await lv.browser.context.newPage();
    await page.goto(session.connect_url);
    await page.getByRole('button', { name: 'Connect Sandbox CRM' }).click();
    await signInToSandbox(page, 'cy');
    await page.getByRole('button', { name: 'Allow' }).click();
    await page.getByRole('heading', { name: 'Waiting for confirmation' }).waitFor();
    assert.match(
      await page.locator('.result').innerText(),
      new RegExp(`held until ${HOST_APP_NAME} confirms that it is yours`),
    );
  },
);

test(
  'when a session requires confirmation, then the manage page offers no reconnect it could not finish, and a held link shows as waiting',
  { skip },
  async () => {
    const page = await lv.browser.context.newPage();
    // One active link, then a reconnect of the same account held for confirmation.
    const plain = await lv.stack.createSession({ tenant_id: 'acme', user_id: 'u-confirm-manage' });
    await page.goto(plain.connect_url);
    await page.getByRole('button', { name: 'Connect Sandbox CRM' }).click();
    await signInToSandbox(page, 'dora');
    await page.getByRole('button', { name: 'Allow' }).click();
    await page.getByRole('heading', { name: 'Sandbox CRM is connected' }).waitFor();
    const activeId = new URL(page.url()).searchParams.get('link_id')!;
    const store = new SqliteStore({ path: lv.stack.sqlitePath, log: pino({ level: 'silent' }) });
    try {
      const link = (await store.getLink(activeId))!;
      assert.ok(await store.saveLink({ ...link, status: 'needs_reauth' }, link.version));
    } finally {
      await store.close();
    }
    const held = await lv.stack.createSession({
      tenant_id: 'acme',
      user_id: 'u-confirm-manage',
      require_confirmation: true,
    });
    await page.goto(held.connect_url);
    await page.getByRole('button', { name: 'Connect Sandbox CRM' }).click();
    // The sandbox remembers this browser's sign-in and grant, so it answers at once.
    await page.getByRole('heading', { name: 'Waiting for confirmation' }).waitFor();

    await page.goto(held.manage_url);
    const cards = page.locator('#links > li');
    await cards.nth(1).waitFor();
    assert.deepEqual(await cards.locator('.status').allInnerTexts(), [
      'Needs reconnecting',
      'Waiting for confirmation',
    ]);
    assert.equal(await page.getByRole('button', { name: /^Reconnect/ }).count(), 0);
    assert.match(
      await cards.first().locator('.attention').innerText(),
      /Reconnect it from the app/,
    );
    // The existing link was not touched by the held reconnect.
    assert.equal((await lv.stack.serviceGet(`/v1/links/${activeId}`)).body.status, 'needs_reauth');
  },
);
