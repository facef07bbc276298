import type { Page } from 'playwright-core';

/** Signs in on the built-in Sandbox CRM's login form (any username works) and waits for its consent page. */
export async function signInToSandbox(page: Page, username: string): Promise<void> {
  await page.getByLabel('Username').fill(username);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Allow access?' }).waitFor();
}
