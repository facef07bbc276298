import type { Page } from 'playwright-core';

/** Signs in on the built-in Sandbox CRM's login form (any username works) and waits for its consent page. */
export async function signInToSandbox(page: Page, username: string): Promise<void> {
  await page.getByLabel('Username').fill(username);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Allow access?' }).waitFor();
}

/**
 * Connects the Sandbox CRM through the hosted connect page (a session's connect_url, without
 * return_to, so the flow ends on the result page) and returns the new link's id.
 */
export async function connectOnHostedPage(
  page: Page,
  connectUrl: string,
  username: string,
): Promise<string> {
  await page.goto(connectUrl);
  await page.getByRole('button', { name: 'Connect Sandbox CRM' }).click();
  await signInToSandbox(page, username);
  await page.getByRole('button', { name: 'Allow' }).click();
  await page.getByRole('heading', { name: 'Sandbox CRM is connected' }).waitFor();
  const linkId = new URL(page.url()).searchParams.get('link_id');
  if (!linkId) throw new Error(`no link_id on the result page ${page.url()}`);
  return linkId;
}
