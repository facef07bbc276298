import type express from 'express';
import { pino } from 'pino';
import type { Config } from '../../src/config.js';
import type { Catalogue } from '../../src/providers/catalogue.js';
import type { Sessions } from '../../src/links/connect/sessions.js';
import { startStack } from './stack.js';

/**
 * The stack for the supertest suites of test/web/: a real SQLite store, the real built-in
 * catalogue (config/providers.json, with HubSpot, Google and Salesforce enabled) and real sessions.
 */
export interface WebApp {
  readonly app: express.Express;
  readonly config: Config;
  readonly sessions: Sessions;
  readonly catalogue: Catalogue;
  close(): Promise<void>;
}

export async function startWebApp(env: Readonly<Record<string, string>> = {}): Promise<WebApp> {
  const stack = await startStack({
    log: pino({ level: 'silent' }),
    env: {
      LINKVAULT_PROVIDER_HUBSPOT_CLIENT_ID: 'hubspot-client',
      LINKVAULT_PROVIDER_HUBSPOT_CLIENT_SECRET: 'hubspot-secret',
      LINKVAULT_PROVIDER_GOOGLE_CLIENT_ID: 'google-client',
      LINKVAULT_PROVIDER_GOOGLE_CLIENT_SECRET: 'google-secret',
      LINKVAULT_PROVIDER_SALESFORCE_CLIENT_ID: 'salesforce-client',
      LINKVAULT_PROVIDER_SALESFORCE_CLIENT_SECRET: 'salesforce-secret',
      ...env,
    },
  });
  return {
    app: stack.app,
    config: stack.config,
    sessions: stack.sessions,
    catalogue: stack.catalogue,
    close: () => stack.close(),
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
