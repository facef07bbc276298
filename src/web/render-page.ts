import { html, type SafeHtml } from './safe-html.js';

/**
 * Server-side HTML of the three pages. The server knows nothing about the session when it
 * renders them (the token is in the URL fragment, which never reaches it): it renders the shell,
 * the fixed text and whatever it validated from the request (the opener origin, the connect
 * result), all escaped by `html`. The page modules fill in the session's data with DOM calls.
 * No inline script, no inline style, no third-party asset: the CSP forbids all three.
 */

export interface ShellOptions {
  /** Path prefix of LINKVAULT_PUBLIC_URL ('' at the root), for asset and API paths. */
  readonly basePath: string;
  readonly title: string;
  /** data-* attributes of <body>, names in kebab-case; values are escaped. */
  readonly data: Readonly<Record<string, string>>;
  readonly main: SafeHtml;
  /** Classic scripts first (the SDK), then the page module. */
  readonly classicScripts?: readonly string[];
  readonly moduleScript: string;
}

function renderShell(options: ShellOptions): string {
  const base = options.basePath;
  const data = Object.entries({ 'base-path': base, ...options.data }).map(
    ([name, value]) => html` data-${name}="${value}"`,
  );
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<meta name="robots" content="noindex, nofollow">
<title>${options.title}</title>
<link rel="icon" href="${base}/assets/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="${base}/assets/styles.css">
</head>
<body${data}>
<header class="site-header"><span class="brand"><span class="brand-mark" aria-hidden="true"></span>linkvault</span></header>
<main id="main" class="page">
${options.main}
</main>
${(options.classicScripts ?? []).map((src) => html`<script src="${base}${src}"></script>\n`)}<script type="module" src="${base}${options.moduleScript}"></script>
</body>
</html>
`.toString();
}

const NOSCRIPT = html`<noscript><p class="notice notice-error">This page needs JavaScript. Turn it on and open the link from the app again.</p></noscript>`;

export interface ConnectPageOptions {
  readonly basePath: string;
  /** LINKVAULT_APP_NAME: the host application the account is connected to; null when unset. */
  readonly appName: string | null;
  /** The opener's origin, already checked against the allowlist; null when none was given. */
  readonly openerOrigin: string | null;
  /** True when an origin was given and refused. */
  readonly originRejected: boolean;
}

export function renderConnectPage(options: ConnectPageOptions): string {
  const data: Record<string, string> = { page: 'connect' };
  if (options.openerOrigin !== null) data['opener-origin'] = options.openerOrigin;
  if (options.originRejected) data['origin-rejected'] = 'true';
  if (options.appName !== null) data['app-name'] = options.appName;
  return renderShell({
    basePath: options.basePath,
    title: 'Connect an account \u2013 linkvault',
    data,
    moduleScript: '/assets/connect-page.js',
    main: html`<h1 id="page-title">${options.appName === null ? 'Connect an account' : `Connect an account to ${options.appName}`}</h1>
<p id="for-whom" class="for-whom" hidden></p>
<p id="page-lead" class="lead">Choose the account to connect. You sign in on the provider\u2019s own site; linkvault never sees your password.</p>
<div id="notice" class="notice" role="status" aria-live="polite" hidden></div>
<p id="loading" class="loading">Loading\u2026</p>
<ul id="providers" class="card-list" aria-labelledby="page-title" hidden></ul>
<section id="privacy-note" class="privacy-note" aria-labelledby="privacy-title">
<h2 id="privacy-title">Your privacy</h2>
<p>When you connect, the provider gives this app a key to use your account with the access listed above, and nothing more. linkvault keeps that key encrypted, releases it only to the parts of the app you approved, and never shows it to this page.</p>
<p>You can revoke access at any time from your linked accounts page in the app, or in the provider\u2019s own settings. The provider\u2019s privacy policy applies to the data it holds.</p>
</section>
${NOSCRIPT}`,
  });
}

export function renderManagePage(options: { readonly basePath: string }): string {
  return renderShell({
    basePath: options.basePath,
    title: 'Your linked accounts \u2013 linkvault',
    data: { page: 'manage' },
    classicScripts: ['/sdk/connect.v1.js'],
    moduleScript: '/assets/manage-page.js',
    main: html`<h1 id="page-title">Your linked accounts</h1>
<p class="lead">Accounts you connected to this app. Revoking one stops the app from using it.</p>
<div id="notice" class="notice" role="status" aria-live="polite" hidden></div>
<p id="loading" class="loading">Loading your linked accounts\u2026</p>
<ul id="links" class="card-list" aria-labelledby="page-title" hidden></ul>
<dialog id="confirm" class="dialog" aria-labelledby="confirm-title" aria-describedby="confirm-text">
<h2 id="confirm-title" class="dialog-title">Revoke access?</h2>
<p id="confirm-text"></p>
<div class="dialog-actions">
<button type="button" id="confirm-cancel" class="button button-secondary">Keep it</button>
<button type="button" id="confirm-revoke" class="button button-danger">Revoke access</button>
</div>
</dialog>
${NOSCRIPT}`,
  });
}

/** A connect outcome as the result page accepts it (validated by the router). */
export type ConnectResult =
  | { readonly status: 'connected'; readonly linkId: string; readonly providerId: string | null }
  | {
      readonly status: 'confirm';
      readonly confirmationId: string;
      readonly providerId: string | null;
    }
  | { readonly status: 'cancelled'; readonly providerId: string | null }
  | { readonly status: 'error'; readonly error: string; readonly providerId: string | null };

/** Linkvault error codes (and the provider's access_denied) that mean the user said no. */
const CANCEL_CODES = new Set(['access_denied', 'cancelled']);

function errorSentence(code: string, name: string): string {
  switch (code) {
    case 'session_expired':
    case 'unauthorized':
      return 'The connect link has expired. Go back to the app and start again.';
    case 'invalid_state':
    case 'flow_binding_mismatch':
      return 'This sign-in attempt expired or was finished in a different browser. Go back to the app and start again.';
    case 'provider_denied':
      return `${name} did not grant access. Go back to the app and try again.`;
    case 'provider_unavailable':
    case 'provider_error':
      return `${name} could not be reached. Try again in a few minutes.`;
    case 'provider_not_allowed':
    case 'provider_not_found':
      return 'This app cannot connect that provider.';
    default:
      return 'Something went wrong. Go back to the app and try again.';
  }
}

export function renderResultPage(options: {
  readonly basePath: string;
  readonly result: ConnectResult;
  readonly providerName: string | null;
  readonly appName?: string | null;
}): string {
  const { result } = options;
  const name = options.providerName ?? 'The provider';
  const accountName = options.providerName
    ? `your ${options.providerName} account`
    : 'your account';
  const cancelled =
    result.status === 'cancelled' || (result.status === 'error' && CANCEL_CODES.has(result.error));
  const data: Record<string, string> = {
    page: 'result',
    status: cancelled ? 'cancelled' : result.status,
  };
  if (result.providerId !== null) data.provider = result.providerId;
  if (result.status === 'connected') data['link-id'] = result.linkId;
  if (result.status === 'confirm') data['confirmation-id'] = result.confirmationId;
  if (result.status === 'error') data.error = result.error;

  let main: SafeHtml;
  if (result.status === 'connected') {
    main = html`<div class="result result-success">
<h1 id="result-title" tabindex="-1">${options.providerName ? `${options.providerName} is connected` : 'Account connected'}</h1>
<p>The app can now use ${accountName} with the access you approved.</p>
<p id="result-hint" class="hint">You can close this window and go back to the app.</p>
</div>`;
  } else if (result.status === 'confirm') {
    // Held until the app confirms it is the signed-in person's: the app (not this page) finishes it.
    const app = options.appName ?? 'the app';
    main = html`<div class="result result-neutral">
<h1 id="result-title" tabindex="-1">Waiting for confirmation</h1>
<p>${name} gave access. The connection is held until ${app} confirms that it is yours; it is not usable before, and it is discarded if ${app} does not confirm it within 10 minutes.</p>
<p id="result-hint" class="hint">Go back to ${app} to finish.</p>
</div>`;
  } else if (cancelled) {
    main = html`<div class="result result-neutral">
<h1 id="result-title" tabindex="-1">Connection cancelled</h1>
<p>Nothing was connected. You can start again from the app whenever you like.</p>
<p id="result-hint" class="hint">You can close this window and go back to the app.</p>
</div>`;
  } else {
    main = html`<div class="result result-error">
<h1 id="result-title" tabindex="-1">The connection did not finish</h1>
<p>${errorSentence(result.error, name)}</p>
<p class="hint">Error code for support: <code>${result.error}</code></p>
<p id="result-hint" class="hint">You can close this window and go back to the app.</p>
</div>`;
  }
  return renderShell({
    basePath: options.basePath,
    title: 'Connection result \u2013 linkvault',
    data,
    moduleScript: '/assets/result-page.js',
    main,
  });
}
