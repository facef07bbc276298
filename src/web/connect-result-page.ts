/**
 * The page the OAuth callback shows when the session has no return_to (or the flow could not be
 * trusted with it). Static text plus one catalogue code: everything interpolated is escaped, there
 * is no script and no style, and the Content-Security-Policy forbids both, so the page works
 * the same under any CSP the operator adds in front.
 */

/** CSP for the page: nothing may load, nothing may frame it, no form may post from it. */
export const RESULT_PAGE_CSP = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"'`=/]/g, (c) => `&#${c.charCodeAt(0)};`);
}

export interface ResultPage {
  readonly title: string;
  readonly message: string;
  /** Catalogue error code, shown for support; null on success. */
  readonly code: string | null;
}

export function renderResultPage(page: ResultPage): string {
  const code = page.code === null ? '' : `\n<p>Error code: <code>${escapeHtml(page.code)}</code></p>`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${escapeHtml(page.title)}</title>
</head>
<body>
<main>
<h1>${escapeHtml(page.title)}</h1>
<p>${escapeHtml(page.message)}</p>${code}
<p>You can close this window.</p>
</main>
</body>
</html>
`;
}
