import type { Config } from '../config.js';
import { html } from '../web/safe-html.js';
import { createStrictRouter } from './strict-router.js';
import type { Router } from 'express';

/**
 * GET / : a small landing page for whoever opens linkvault's address in a browser (it used to be a
 * JSON 404), saying what this is and where to go: the documentation in the repository, the live
 * endpoints, and outside production the sandbox walkthrough. Static HTML: no script, no inline
 * style, only the pages' own stylesheet and icon (CSP `default-src 'none'`, style and image from
 * 'self'). It shows nothing about the configuration beyond whether the sandbox is on.
 * GET /favicon.ico : 204 with a day's caching, so browsers that ask for it (on the JSON routes)
 * stop asking; the pages declare /assets/favicon.svg.
 */

const LANDING_CSP =
  "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

export function renderLandingPage(options: { basePath: string; sandbox: boolean }): string {
  const base = options.basePath;
  const sandbox = options.sandbox
    ? html`<section aria-labelledby="try">
<h2 id="try">Try it with the Sandbox CRM</h2>
<p>This is a development setup: the built-in Sandbox CRM provider is on, and any username signs in there. Follow the sandbox walkthrough in <code>README.md</code> ("Connecting an account"): create a service token with <code>npx linkvault dev-token</code>, create a session, open its <code>connect_url</code>, then fetch a token and call the sandbox's API with it.</p>
<ul>
<li><a href="${base}/sandbox/.well-known/openid-configuration">Sandbox CRM discovery document</a></li>
<li><a href="${base}/v1/providers">Enabled providers</a></li>
</ul>
</section>
`
    : html``;
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<meta name="robots" content="noindex, nofollow">
<title>linkvault</title>
<link rel="icon" href="${base}/assets/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="${base}/assets/styles.css">
</head>
<body>
<header class="site-header"><span class="brand"><span class="brand-mark" aria-hidden="true"></span>linkvault</span></header>
<main id="main" class="page">
<h1>linkvault is running</h1>
<p>An OAuth broker and token vault. Its API is for your backend services (<code>/v1/…</code>, with a service JWT); people reach it through the connect and "My linked accounts" pages your application opens for them.</p>
${sandbox}<section aria-labelledby="docs">
<h2 id="docs">Documentation</h2>
<p>In the repository: <code>README.md</code> (start here), <code>docs/api.md</code> (the API), <code>docs/configuration.md</code>, <code>docs/operations.md</code>, <code>docs/monitoring.md</code> and <code>docs/deploy.md</code>.</p>
</section>
<section aria-labelledby="status">
<h2 id="status">Status</h2>
<ul>
<li><a href="${base}/healthz">Liveness</a> (<code>/healthz</code>)</li>
<li><a href="${base}/readyz">Readiness</a> (<code>/readyz</code>)</li>
</ul>
</section>
</main>
</body>
</html>
`.toString();
}

export function createLandingRouter(deps: {
  config: Pick<Config, 'publicUrl' | 'sandbox'>;
}): Router {
  const basePath = new URL(deps.config.publicUrl).pathname.replace(/\/$/, '');
  const page = renderLandingPage({ basePath, sandbox: deps.config.sandbox });
  const router = createStrictRouter();
  router.get('/', (_req, res) => {
    res.setHeader('Content-Security-Policy', LANDING_CSP);
    res.setHeader('Cache-Control', 'no-store');
    res.status(200).type('text/html; charset=utf-8').send(page);
  });
  router.get('/favicon.ico', (_req, res) => {
    res.setHeader('Cache-Control', 'public, max-age=86400');
    res.status(204).end();
  });
  return router;
}
