import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, beforeEach } from 'node:test';
import { chromiumSkipReason, launchChromium, type Browser, type LaunchOptions } from './browser.js';
import { freePort } from './free-port.js';
import { makeTestServices, type TestServices } from './service-jwt.js';
import { startServiceProcess, type ServiceProcess } from './service-process.js';

/**
 * What the browser tests run against: the real service (`bin/linkvault.js serve`, SQLite, local
 * keys, the built-in Sandbox CRM provider) on one loopback origin, and a host application on
 * another (`http://localhost:<port>`: a different site from `http://127.0.0.1:<port>`, as a real
 * customer's app is), whose origin is the only entry of LINKVAULT_RETURN_URL_ALLOWLIST.
 *
 * The host app uses the connect SDK exactly as docs/api.md ("In the browser") tells customers to: it loads
 * /sdk/connect.v1.js, calls linkvault.connect() from a click handler, and on its return_to page
 * calls linkvault.completeRedirect(). It has a strict CSP of its own (script-src 'self' + linkvault),
 * so the snippet is shown to need nothing more.
 */

/** The host application's name (LINKVAULT_APP_NAME of the stack's service). */
export const HOST_APP_NAME = 'Acme CRM sync';

export interface CreatedSession {
  readonly session_token: string;
  readonly expires_at: string;
  readonly connect_url: string;
  readonly manage_url: string;
}

export interface BrowserStack {
  /** linkvault's public URL (http://127.0.0.1:<port>). */
  readonly lvUrl: string;
  /** The host app's origin (http://localhost:<port>). */
  readonly hostOrigin: string;
  readonly service: ServiceProcess;
  readonly services: TestServices;
  /** The service's SQLite file (tests may open it with SqliteStore to set up a hard-to-reach state). */
  readonly sqlitePath: string;
  /**
   * The host app's connect page, handed the session as its backend would (here: in the fragment).
   * `auto` makes it call connect() as soon as it loads, with no click (so with no user activation).
   */
  hostAppUrl(sessionToken: string, options?: { provider?: string; auto?: boolean }): string;
  /** The host app's return_to page. */
  readonly returnTo: string;
  /** POST /v1/sessions as the `crm-sync` service. */
  createSession(body: Record<string, unknown>): Promise<CreatedSession>;
  /** A service call (as `crm-sync`, every role): status and parsed body. */
  serviceGet(path: string): Promise<{ status: number; body: Record<string, unknown> }>;
  /** A service POST with a JSON body (as `crm-sync`): what a host's backend sends, e.g. a confirmation. */
  servicePost(
    path: string,
    body: unknown,
  ): Promise<{ status: number; body: Record<string, unknown> }>;
  close(): Promise<void>;
}

const HOST_APP_SCRIPT = `
const params = new URLSearchParams(location.hash.slice(1));
const sessionToken = params.get('session');
const provider = params.get('provider') || 'sandbox';
history.replaceState(null, '', location.pathname);
const result = document.getElementById('result');
const failure = document.getElementById('error');
function show(error) {
  failure.textContent = JSON.stringify({ name: error.name, code: error.code, detail: error.detail, typed: error instanceof linkvault.LinkvaultConnectError });
}
function connect() {
  result.textContent = '';
  failure.textContent = '';
  linkvault.connect({ sessionToken, provider }).then((link) => { result.textContent = JSON.stringify(link); }, show);
}
document.getElementById('connect').addEventListener('click', connect);
// Without a click there is no user activation: browsers block the popup (the redirect fallback's case).
if (params.get('auto') === '1') connect();
`;

const HOST_RETURN_SCRIPT = `
const result = document.getElementById('result');
const failure = document.getElementById('error');
try {
  const link = linkvault.completeRedirect();
  result.textContent = JSON.stringify(link);
} catch (error) {
  failure.textContent = JSON.stringify({ name: error.name, code: error.code, detail: error.detail, typed: error instanceof linkvault.LinkvaultConnectError });
}
`;

function hostPage(lvUrl: string, title: string, script: string, body: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${title}</title>
<script src="${lvUrl}/sdk/connect.v1.js"></script>
<script src="${script}" defer></script>
</head>
<body>
<h1>${title}</h1>
${body}
<p>Result: <output id="result"></output></p>
<p>Error: <output id="error"></output></p>
</body>
</html>
`;
}

function startHostApp(port: number, lvUrl: string): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const send = (type: string, text: string): void => {
      res.writeHead(200, {
        'content-type': type,
        'cache-control': 'no-store',
        'content-security-policy': `default-src 'none'; script-src 'self' ${lvUrl}; base-uri 'none'; form-action 'none'`,
      });
      res.end(text);
    };
    if (path === '/app')
      return send(
        'text/html; charset=utf-8',
        hostPage(
          lvUrl,
          'Acme CRM sync',
          '/host.js',
          '<button type="button" id="connect">Connect Sandbox CRM</button>',
        ),
      );
    if (path === '/return')
      return send(
        'text/html; charset=utf-8',
        hostPage(lvUrl, 'Acme CRM sync: back from linkvault', '/return.js', ''),
      );
    if (path === '/host.js') return send('text/javascript; charset=utf-8', HOST_APP_SCRIPT);
    if (path === '/return.js') return send('text/javascript; charset=utf-8', HOST_RETURN_SCRIPT);
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found');
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server)));
}

export async function startBrowserStack(): Promise<BrowserStack> {
  const dir = mkdtempSync(join(tmpdir(), 'lv-browser-'));
  const services = makeTestServices();
  const servicesFile = join(dir, 'services.json');
  writeFileSync(servicesFile, JSON.stringify(services.servicesFile));
  const [lvPort, hostPort] = [await freePort(), await freePort()];
  const lvUrl = `http://127.0.0.1:${lvPort}`;
  const hostOrigin = `http://localhost:${hostPort}`;
  const host = await startHostApp(hostPort, lvUrl);
  let service: ServiceProcess;
  try {
    service = await startServiceProcess({
      cwd: dir,
      env: {
        ...services.env,
        NODE_ENV: 'test',
        LINKVAULT_PORT: String(lvPort),
        LINKVAULT_HOST: '127.0.0.1',
        LINKVAULT_PUBLIC_URL: lvUrl,
        LINKVAULT_RETURN_URL_ALLOWLIST: hostOrigin,
        LINKVAULT_SERVICES_FILE: servicesFile,
        LINKVAULT_SANDBOX: 'true',
        LINKVAULT_BACKGROUND_REFRESH: 'false',
        LINKVAULT_LOG_LEVEL: 'info',
        LINKVAULT_APP_NAME: HOST_APP_NAME,
      },
    });
  } catch (err) {
    host.closeAllConnections();
    host.close();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }

  const call = async (
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; body: Record<string, unknown> }> => {
    const res = await fetch(`${lvUrl}${path}`, {
      method,
      headers: {
        authorization: services.bearer('crm-hs'),
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };

  return {
    lvUrl,
    hostOrigin,
    service,
    services,
    sqlitePath: join(dir, 'data/linkvault.db'),
    returnTo: `${hostOrigin}/return`,
    hostAppUrl: (sessionToken, options = {}) =>
      `${hostOrigin}/app#${new URLSearchParams({ session: sessionToken, provider: options.provider ?? 'sandbox', ...(options.auto ? { auto: '1' } : {}) })}`,
    async createSession(body) {
      const res = await call('POST', '/v1/sessions', body);
      if (res.status !== 201)
        throw new Error(`POST /v1/sessions answered ${res.status}: ${JSON.stringify(res.body)}`);
      return res.body as unknown as CreatedSession;
    },
    serviceGet: (path) => call('GET', path),
    servicePost: (path, body) => call('POST', path, body),
    async close() {
      service.child.kill('SIGTERM');
      const exited = await Promise.race([
        service.exited.then(() => true),
        new Promise<boolean>((r) => setTimeout(() => r(false), 5000).unref()),
      ]);
      if (!exited) service.kill();
      host.closeAllConnections();
      await new Promise<void>((resolve) => host.close(() => resolve()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface BrowserTestSetup {
  /** The skip reason for every test of the file (see chromiumSkipReason). */
  readonly skip: string | false;
  /** Set by the file's `before` hook. */
  readonly stack: BrowserStack;
  /** Set by `before` (one browser for the file) or by `beforeEach` (with browserPerTest). */
  readonly browser: Browser;
}

/**
 * Registers a browser test file's hooks: one stack for the file, and one Chromium for the file or,
 * with `browserPerTest`, a fresh profile per test (the sandbox remembers a sign-in). Call at top level.
 */
export function useBrowserStack(
  options: { browserPerTest?: boolean; launch?: LaunchOptions } = {},
): BrowserTestSetup {
  const skip = chromiumSkipReason();
  let stack: BrowserStack | undefined;
  let browser: Browser | undefined;
  before(async () => {
    if (skip) return;
    stack = await startBrowserStack();
    if (!options.browserPerTest) browser = await launchChromium(options.launch);
  });
  if (options.browserPerTest) {
    beforeEach(async () => {
      if (skip) return;
      browser = await launchChromium(options.launch);
    });
    afterEach(async () => {
      await browser?.close();
    });
  }
  after(async () => {
    if (!options.browserPerTest) await browser?.close();
    await stack?.close();
  });
  return {
    skip,
    get stack() {
      if (!stack) throw new Error('the browser stack is not started (used outside a test?)');
      return stack;
    },
    get browser() {
      if (!browser) throw new Error('Chromium is not launched (used outside a test?)');
      return browser;
    },
  };
}
