import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type express from 'express';
import { pino } from 'pino';
import { createApp } from '../../src/app.js';
import { loadConfig, type Config } from '../../src/config.js';
import { createWebRouter } from '../../src/http/web-routes.js';
import { LocalKeyProvider } from '../../src/keys/local-key-provider.js';
import { loadCatalogue, type Catalogue } from '../../src/providers/catalogue.js';
import { createSessions, type Sessions } from '../../src/links/connect/sessions.js';
import { Metrics } from '../../src/metrics.js';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';

/**
 * The HTTP shell with the web router mounted, over a real SQLite store, the real built-in
 * catalogue (config/providers.json, with HubSpot, Google and Salesforce enabled) and real sessions.
 * For the supertest suites of test/web/.
 */
export interface WebApp {
  readonly app: express.Express;
  readonly config: Config;
  readonly sessions: Sessions;
  readonly catalogue: Catalogue;
  close(): Promise<void>;
}

export async function startWebApp(env: Readonly<Record<string, string>> = {}): Promise<WebApp> {
  const dir = mkdtempSync(join(tmpdir(), 'lv-web-'));
  const config = loadConfig(
    {
      NODE_ENV: 'test',
      LINKVAULT_PUBLIC_URL: 'http://127.0.0.1:3000',
      LINKVAULT_SANDBOX: 'false',
      LINKVAULT_PROVIDER_HUBSPOT_CLIENT_ID: 'hubspot-client',
      LINKVAULT_PROVIDER_HUBSPOT_CLIENT_SECRET: 'hubspot-secret',
      LINKVAULT_PROVIDER_GOOGLE_CLIENT_ID: 'google-client',
      LINKVAULT_PROVIDER_GOOGLE_CLIENT_SECRET: 'google-secret',
      LINKVAULT_PROVIDER_SALESFORCE_CLIENT_ID: 'salesforce-client',
      LINKVAULT_PROVIDER_SALESFORCE_CLIENT_SECRET: 'salesforce-secret',
      ...env,
    },
    dir,
  );
  const log = pino({ level: 'silent' });
  const metrics = new Metrics();
  const store = new SqliteStore({ path: join(dir, 'linkvault.db'), log });
  const keys = await LocalKeyProvider.load({ keyFile: join(dir, 'master.key'), mayGenerate: true, metrics });
  const catalogue = loadCatalogue({ builtinFile: resolve('config/providers.json'), extraFile: null, config });
  const sessions = createSessions({ config, store, catalogue });
  const app = createApp({ config, store, keys, metrics, log, routers: [createWebRouter({ config, sessions, catalogue })] });
  return {
    app,
    config,
    sessions,
    catalogue,
    async close() {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Asserts-friendly view of a page's CSP: directive → source list. */
export function parseCsp(header: string | undefined): Map<string, string[]> {
  const map = new Map<string, string[]>();
  for (const part of (header ?? '').split(';')) {
    const [name, ...values] = part.trim().split(/\s+/);
    if (name) map.set(name, values);
  }
  return map;
}
