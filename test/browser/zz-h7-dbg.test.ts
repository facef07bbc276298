import { test } from 'node:test';
import { launchChromium } from '/work/main/test/support/browser.js';
import { startBrowserStack } from '/work/main/test/support/browser-stack.js';
import { signInToSandbox } from '/work/main/test/support/sandbox-consent.js';
test('dbg', async () => {
  const stack = await startBrowserStack();
  const browser = await launchChromium({ popupBlocking: true });
  try {
    const session = await stack.createSession({ tenant_id: 'acme', user_id: 'u', providers: ['sandbox'], return_to: stack.returnTo });
    const page = browser.page;
    await page.goto(stack.hostAppUrl(session.session_token, { auto: true }));
    await page.getByRole('button', { name: 'Continue to Sandbox CRM' }).click();
    await signInToSandbox(page, 'bob');
    await page.getByRole('button', { name: 'Allow' }).click();
    await new Promise((r) => setTimeout(r, 2000));
    console.log(page.url(), (await page.textContent('body'))?.slice(0, 300), browser.problems);
  } finally { await browser.close(); await stack.close(); }
});
