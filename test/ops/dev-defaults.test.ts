import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { signDevToken } from '../../src/auth/dev-service.js';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { startService } from '../../src/main.js';
import { freePort } from '../support/free-port.js';

/**
 * Development defaults: loopback only unless asked, and a landing page at `/` instead of a JSON 404.
 */

const dir = mkdtempSync(join(tmpdir(), 'linkvault-dev-defaults-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('when LINKVAULT_HOST is not set', () => {
  test('then development listens on 127.0.0.1 and production on every interface', () => {
    assert.equal(loadConfig({}, dir).host, '127.0.0.1');
    const keyFile = join(dir, 'prod.key');
    writeFileSync(keyFile, Buffer.alloc(32, 7), { mode: 0o600 });
    const production = loadConfig(
      {
        NODE_ENV: 'production',
        LINKVAULT_PUBLIC_URL: 'https://linkvault.example.com',
        LINKVAULT_LOCAL_KEY_FILE: keyFile,
      },
      dir,
    );
    assert.equal(production.host, null);
    assert.equal(loadConfig({ LINKVAULT_HOST: '0.0.0.0' }, dir).host, '0.0.0.0');
    assert.equal(loadConfig({ LINKVAULT_HOST: '::' }, dir).host, '::');
  });

  test('then the development service binds loopback only, and the sandbox still reaches itself through the default public URL', async () => {
    const port = await freePort();
    // No LINKVAULT_HOST and no LINKVAULT_PUBLIC_URL: http://localhost:<port>, as `npm start` runs.
    const config = loadConfig({ LINKVAULT_PORT: String(port) }, dir);
    const service = await startService(config, { log: createLogger({ level: 'silent' }) });
    try {
      assert.equal((service.server.address() as AddressInfo).address, '127.0.0.1');
      const session = await fetch(`${service.url}/v1/sessions`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${signDevToken(config)}`,
          'content-type': 'application/json',
        },
        body: JSON.stringify({ tenant_id: 'acme', user_id: 'ada' }),
      });
      assert.equal(session.status, 201);
      const { session_token } = (await session.json()) as { session_token: string };
      // Starting a connect flow makes linkvault fetch the sandbox's discovery from its public URL.
      const start = await fetch(`${service.url}/v1/connect/sandbox`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${session_token}`,
          'content-type': 'application/json',
          origin: `http://localhost:${port}`,
          'sec-fetch-site': 'same-origin',
        },
        body: '{}',
      });
      assert.equal(start.status, 200, await start.clone().text());
      const { authorization_url } = (await start.json()) as { authorization_url: string };
      const location = new URL(authorization_url);
      assert.equal(location.origin, `http://localhost:${port}`);
      assert.equal(location.pathname, '/sandbox/auth');
    } finally {
      await service.close();
    }
  });
});

describe('when a browser opens /', () => {
  test('then it gets a small landing page, CSP-safe, with links to the docs, the status routes and the sandbox', async () => {
    const config = loadConfig({ LINKVAULT_PORT: '0' }, dir);
    const service = await startService(config, { log: createLogger({ level: 'silent' }) });
    try {
      const res = await fetch(`${service.url}/`);
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('content-type'), 'text/html; charset=utf-8');
      const csp = res.headers.get('content-security-policy') ?? '';
      assert.match(csp, /default-src 'none'/);
      assert.doesNotMatch(csp, /unsafe-inline|script-src/);
      assert.equal(res.headers.get('x-frame-options'), 'DENY');
      const page = await res.text();
      assert.doesNotMatch(page, /<script|\sstyle=|<style/i);
      assert.match(page, /<h1>linkvault is running<\/h1>/);
      assert.match(page, /README\.md/);
      assert.match(page, /docs\/api\.md/);
      assert.match(page, /href="\/healthz"/);
      assert.match(page, /href="\/sandbox\/\.well-known\/openid-configuration"/);
      // Every stylesheet and icon it names is served.
      for (const m of page.matchAll(/href="(\/assets\/[^"]+)"/g))
        assert.equal((await fetch(`${service.url}${m[1]}`)).status, 200, m[1]);
      const favicon = await fetch(`${service.url}/favicon.ico`);
      assert.equal(favicon.status, 204);
      // Still JSON problems elsewhere.
      const unknown = await fetch(`${service.url}/nope`);
      assert.equal(unknown.status, 404);
      assert.match(unknown.headers.get('content-type') ?? '', /^application\/problem\+json/);
    } finally {
      await service.close();
    }
  });

  test('then without the sandbox the page does not mention it', async () => {
    const config = loadConfig({ LINKVAULT_PORT: '0', LINKVAULT_SANDBOX: 'false' }, dir);
    const service = await startService(config, { log: createLogger({ level: 'silent' }) });
    try {
      const page = await (await fetch(`${service.url}/`)).text();
      assert.doesNotMatch(page, /sandbox/i);
    } finally {
      await service.close();
    }
  });
});
