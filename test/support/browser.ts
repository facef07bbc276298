import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { findChromium } from './find-chromium.js';

/**
 * Real Chromium for the page tests: the browser findChromium() finds (CHROMIUM_PATH, else
 * `chromium`, `chromium-browser`, `google-chrome`… on PATH) driven by playwright-core, headless, with
 * a fresh profile per launch and nothing that phones home. Tests skip (with the reason) only when
 * there is no browser and CI is not set; under CI=true a missing browser is a failure.
 */

export const CHROMIUM_PATH = findChromium();

const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

/** The reason to skip the browser tests, or false when they must run. */
export function chromiumSkipReason(): string | false {
  if (CHROMIUM_PATH !== null) return false;
  if (process.env.CI === 'true' || process.env.CI === '1') return false; // must run (and fail) in CI
  return 'Chromium was not found (CHROMIUM_PATH unset, no chromium, chromium-browser, google-chrome or google-chrome-stable on PATH; apt-get install chromium); browser tests skipped. Set CI=true to make this a failure.';
}

export const SCREENSHOT_DIR = resolve('test-output/screenshots');

export interface Browser {
  readonly context: BrowserContext;
  /** The window the browser opened with. */
  readonly page: Page;
  /** Console errors, page errors and CSP violations seen on any page so far (host pages included). */
  readonly problems: string[];
  /** `step`, whose failure also reports what the browser logged (a CSP block is often the real cause). */
  explain<T>(step: Promise<T>): Promise<T>;
  /** Saves a full-page PNG under test-output/screenshots/. */
  screenshot(page: Page, name: string): Promise<string>;
  close(): Promise<void>;
}

export interface LaunchOptions {
  /**
   * Keep Chromium's popup blocker on (playwright turns it off by default): window.open without a
   * user gesture then returns null, exactly as in a user's browser.
   */
  readonly popupBlocking?: boolean;
  readonly viewport?: { width: number; height: number };
}

export async function launchChromium(options: LaunchOptions = {}): Promise<Browser> {
  if (CHROMIUM_PATH === null)
    throw new Error('Chromium was not found: set CHROMIUM_PATH or put chromium on PATH');
  const profile = mkdtempSync(join(tmpdir(), 'lv-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: ARGS,
    ...(options.popupBlocking ? { ignoreDefaultArgs: ['--disable-popup-blocking'] } : {}),
    viewport: options.viewport ?? { width: 1000, height: 800 },
  });
  const problems: string[] = [];
  await context.exposeBinding(
    '__lvReportCspViolation',
    (_source, v: { directive: string; blocked: string; url: string }) => {
      problems.push(`CSP violation on ${v.url}: ${v.directive} blocked ${v.blocked}`);
    },
  );
  // Runs before any page script, in every page and popup of the context (browser code, hence a string:
  // this project compiles without the DOM library).
  await context.addInitScript({
    content: `document.addEventListener('securitypolicyviolation', (e) => {
      window.__lvReportCspViolation({ directive: e.violatedDirective, blocked: e.blockedURI, url: document.URL });
    });`,
  });
  const watch = (page: Page): void => {
    page.on('console', (message) => {
      if (message.type() === 'error')
        problems.push(`console error on ${page.url()}: ${message.text()}`);
    });
    page.on('pageerror', (error) => problems.push(`page error on ${page.url()}: ${error.message}`));
  };
  context.pages().forEach(watch);
  context.on('page', watch);
  return {
    context,
    page: context.pages()[0] ?? (await context.newPage()),
    problems,
    async explain(step) {
      try {
        return await step;
      } catch (err) {
        throw new Error(
          `${(err as Error).message}\nbrowser problems so far:\n${problems.join('\n') || '(none)'}`,
          { cause: err },
        );
      }
    },
    async screenshot(page, name) {
      mkdirSync(SCREENSHOT_DIR, { recursive: true });
      const path = join(SCREENSHOT_DIR, `${name}.png`);
      await page.screenshot({ path, fullPage: true });
      return path;
    },
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
