import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Router } from 'express';
import type { Logger } from 'pino';
import { createApp } from '../../src/app.js';
import { loadConfig, type Config } from '../../src/config.js';
import { createConnectRouter } from '../../src/http/connect-routes.js';
import { createGrantRouter } from '../../src/http/grant-routes.js';
import { createLinkRouter } from '../../src/http/link-routes.js';
import { createServiceAuth } from '../../src/http/service-auth.js';
import { createTokenRouter } from '../../src/http/token-routes.js';
import { createWebRouter } from '../../src/http/web-routes.js';
import { LocalKeyProvider } from '../../src/keys/local-key-provider.js';
import { createVault, type Vault } from '../../src/keys/vault.js';
import { createAudit, loadAuditKey, type Audit } from '../../src/links/audit/audit.js';
import { loadCatalogue, type Catalogue, type ExtraProvider } from '../../src/providers/catalogue.js';
import { createConnect, type Connect } from '../../src/links/connect/connect.js';
import { createGrants, type Grants } from '../../src/links/release/grants.js';
import { createRefreshCoordinator } from '../../src/links/release/refresh-coordinator.js';
import { createSessions, type Sessions } from '../../src/links/connect/sessions.js';
import { createTokenRelease } from '../../src/links/release/token-release.js';
import { createLogger } from '../../src/log.js';
import { Metrics } from '../../src/metrics.js';
import { createOAuthClient } from '../../src/oauth/openid-oauth-client.js';
import { createSandboxProvider, type SandboxProvider } from '../../src/sandbox/sandbox-provider.js';
import { createStore } from '../../src/store/create-store.js';
import type { Store } from '../../src/store/store.js';
import { startOidcServer, type OidcServer, type StartOidcServerOptions } from './oidc-server.js';
import { makeTestServices, type TestServices } from './service-jwt.js';

/**
 * The connect feature wired as main.ts wires it, on real parts, behind a real listening HTTP
 * server (the public URL must be known before providers register our redirect URI): a SQLite
 * file or a real Redis store, the local key provider, the vault, audit, the catalogue with the
 * test's providers as extra entries, the real OAuth adapter, sessions, the connect flow, and the
 * connect, link, token, grant and web (hosted pages) routes inside createApp. Everything logged is captured.
 */

export const APP_ORIGIN = 'https://app.example.com';
export const BUILTIN_CATALOGUE = join(import.meta.dirname, '../../config/providers.json');

export interface ConnectHarnessOptions {
  /** Registers the test's providers once the public URL is known (start the provider here). */
  readonly providers?: (publicUrl: string) => Promise<readonly ExtraProvider[]> | readonly ExtraProvider[];
  /** A Redis URL to use instead of a SQLite file. */
  readonly redisUrl?: string;
  /** Mount the built-in Sandbox CRM. */
  readonly sandbox?: boolean;
  /** Extra environment for loadConfig. */
  readonly env?: Readonly<Record<string, string>>;
}

export interface HttpAnswer {
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
  /** Parsed JSON body when the answer is JSON, else null. */
  readonly json: Record<string, unknown> | null;
  /** Location header resolved against the request URL, or null. */
  readonly location: URL | null;
}

export interface StartedFlow {
  readonly answer: HttpAnswer;
  /** The provider authorization URL the browser was sent to. */
  readonly authorizationUrl: URL;
  /** `name=value` of the binding cookie that was set. */
  readonly cookie: string;
  /** The Set-Cookie line as sent. */
  readonly setCookie: string;
}

export interface ConnectHarness {
  readonly publicUrl: string;
  readonly config: Config;
  readonly store: Store;
  readonly vault: Vault;
  readonly catalogue: Catalogue;
  readonly sessions: Sessions;
  readonly connect: Connect;
  readonly audit: Audit;
  readonly grants: Grants;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly services: TestServices;
  readonly sandbox: SandboxProvider | null;
  /** Path of the SQLite file (null with Redis). */
  readonly sqlitePath: string | null;
  /** Any request to the service (relative path); never follows redirects. */
  request(path: string, init?: RequestInit): Promise<HttpAnswer>;
  /** POST /v1/sessions as crm-sync; returns the 201 body (throws otherwise). */
  createSession(body?: Record<string, unknown>): Promise<{ session_token: string; expires_at: string; connect_url: string; manage_url: string }>;
  /** GET /v1/connect/:provider?session=… (+ extra query); expects the 302 and returns it. */
  startFlow(providerId: string, sessionToken: string, extraQuery?: Record<string, string>): Promise<StartedFlow>;
  /** GET the callback URL (absolute, or relative to the public URL) with the given Cookie header. */
  callback(url: URL | string, cookie: string | null, init?: RequestInit): Promise<HttpAnswer>;
  /** Everything logged so far. */
  logText(): string;
  close(): Promise<void>;
}

async function answerOf(response: Response, requestUrl: string): Promise<HttpAnswer> {
  const text = await response.text();
  let json: Record<string, unknown> | null = null;
  if ((response.headers.get('content-type') ?? '').includes('json') && text !== '') json = JSON.parse(text) as Record<string, unknown>;
  const location = response.headers.get('location');
  return { status: response.status, headers: response.headers, text, json, location: location === null ? null : new URL(location, requestUrl) };
}

export async function startConnectHarness(options: ConnectHarnessOptions = {}): Promise<ConnectHarness> {
  const dir = mkdtempSync(join(tmpdir(), 'lv-connect-'));
  const server: Server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const publicUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const lines: string[] = [];
  const log = createLogger({ level: 'debug', destination: { write: (s: string) => void lines.push(s) } });
  const sqlitePath = options.redisUrl ? null : join(dir, 'lv.db');
  const config = loadConfig(
    {
      LINKVAULT_PUBLIC_URL: publicUrl,
      LINKVAULT_RETURN_URL_ALLOWLIST: APP_ORIGIN,
      LINKVAULT_SANDBOX: options.sandbox ? 'true' : 'false',
      LINKVAULT_LOCAL_KEY_FILE: join(dir, 'master.key'),
      LINKVAULT_PROVIDER_TIMEOUT_SECONDS: '5',
      LINKVAULT_LOG_LEVEL: 'debug',
      ...(options.redisUrl ? { LINKVAULT_STORE: 'redis', LINKVAULT_REDIS_URL: options.redisUrl, LINKVAULT_REDIS_PREFIX: `lvt${process.pid}` } : { LINKVAULT_STORE: 'sqlite', LINKVAULT_SQLITE_PATH: sqlitePath! }),
      ...options.env,
    },
    dir,
  );
  const metrics = new Metrics();
  const store = await createStore(config.store, { metrics, log });
  const keys = await LocalKeyProvider.load({ keyFile: join(dir, 'master.key'), mayGenerate: true, metrics });
  const vault = createVault({ keys, metrics, maxEntries: 1000, maxAgeMs: 300_000 });
  const now = Date.now;
  const audit = createAudit({ store, hmacKey: await loadAuditKey({ store, vault, currentKeyId: () => keys.currentKeyId(), now }), now });

  const sandbox = options.sandbox ? await createSandboxProvider({ publicUrl, log }) : null;
  const extraEntries: ExtraProvider[] = [...((await options.providers?.(publicUrl)) ?? [])];
  if (sandbox) extraEntries.push(sandbox);
  const catalogue = loadCatalogue({ builtinFile: BUILTIN_CATALOGUE, extraFile: null, config, extraEntries });
  const oauth = createOAuthClient({ catalogue, config, log });
  const sessions = createSessions({ config, store, catalogue, now });
  const connect = createConnect({ config, store, sessions, catalogue, oauth, vault, metrics, log, audit, now });

  const services = makeTestServices(config.audience);
  const serviceAuth = createServiceAuth({ services: services.services, audience: services.audience });
  const serviceIds = new Set(services.services.map((s) => s.id));
  const grants = createGrants({ store, audit, isService: (id) => serviceIds.has(id), now });
  const coordinator = createRefreshCoordinator({ store, vault, oauth, audit, metrics, log, now, lockTtlMs: 15_000 });
  const release = createTokenRelease({ store, vault, coordinator, audit, metrics, log, now });

  const routers: Router[] = [
    createConnectRouter({ config, sessions, connect, serviceAuth }),
    createLinkRouter({ store, sessions, serviceAuth }),
    createTokenRouter({ auth: serviceAuth, release }),
    createGrantRouter({ auth: serviceAuth, grants }),
    createWebRouter({ config, sessions, catalogue }),
  ];
  if (sandbox) routers.push(sandbox.router);
  const app = createApp({ config, store, keys, metrics, log, routers });
  server.on('request', app);

  async function request(path: string, init: RequestInit = {}): Promise<HttpAnswer> {
    const url = new URL(path, publicUrl).href;
    return answerOf(await fetch(url, { redirect: 'manual', ...init }), url);
  }

  return {
    publicUrl,
    config,
    store,
    vault,
    catalogue,
    sessions,
    connect,
    audit,
    grants,
    metrics,
    log,
    services,
    sandbox,
    sqlitePath,
    request,
    async createSession(body = { tenant_id: 'tenant-a', user_id: 'user-1', return_to: `${APP_ORIGIN}/settings/integrations` }) {
      const answer = await request('/v1/sessions', {
        method: 'POST',
        headers: { authorization: services.bearer('crm-hs'), 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      if (answer.status !== 201 || !answer.json) throw new Error(`POST /v1/sessions answered ${answer.status}: ${answer.text}`);
      return answer.json as { session_token: string; expires_at: string; connect_url: string; manage_url: string };
    },
    async startFlow(providerId, sessionToken, extraQuery = {}) {
      const query = new URLSearchParams({ session: sessionToken, ...extraQuery });
      const answer = await request(`/v1/connect/${providerId}?${query}`);
      if (answer.status !== 302 || !answer.location) throw new Error(`GET /v1/connect/${providerId} answered ${answer.status}: ${answer.text}`);
      const setCookie = answer.headers.getSetCookie().find((c) => c.startsWith('lv_flow=')) ?? '';
      if (!setCookie) throw new Error('no binding cookie was set');
      return { answer, authorizationUrl: answer.location, cookie: setCookie.split(';')[0]!, setCookie };
    },
    async callback(url, cookie, init = {}) {
      const target = new URL(url, publicUrl);
      if (target.origin !== publicUrl) throw new Error(`callback URL ${target.origin} is not the service (${publicUrl})`);
      const headers = new Headers(init.headers);
      if (cookie !== null) headers.set('cookie', cookie);
      return answerOf(await fetch(target, { redirect: 'manual', ...init, headers }), target.href);
    },
    logText: () => lines.join(''),
    async close() {
      await connect.idle();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await sandbox?.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The client linkvault is registered as at startConnectHarnessWithOidc's provider (by default). */
export const ACME_CLIENT = { client_id: 'lv-acme', client_secret: 'acme-client-secret-0123456789abcdef' } as const;

/** A connect harness whose provider `acme` is a node-oidc-provider it started. */
export type OidcConnectHarness = ConnectHarness & { readonly oidc: OidcServer };

export interface HarnessOidcOptions extends Omit<StartOidcServerOptions, 'clients'> {
  /** The client registered for linkvault (default ACME_CLIENT). */
  readonly client?: { readonly client_id: string; readonly client_secret: string };
}

/**
 * The harness with one provider, `acme`: node-oidc-provider on loopback, started once the public
 * URL is known (so our callback is its registered redirect URI) and stopped by close().
 */
export async function startConnectHarnessWithOidc(
  oidcOptions: HarnessOidcOptions,
  options: Omit<ConnectHarnessOptions, 'providers'> = {},
): Promise<OidcConnectHarness> {
  const { client = ACME_CLIENT, ...serverOptions } = oidcOptions;
  let oidc: OidcServer | undefined;
  let h: ConnectHarness;
  try {
    h = await startConnectHarness({
      ...options,
      providers: async (publicUrl) => {
        oidc = await startOidcServer({ ...serverOptions, clients: [{ ...client, redirect_uris: [`${publicUrl}/v1/oauth/callback/acme`] }] });
        return [{ entry: oidc.catalogueEntry('acme'), credentials: { clientId: client.client_id, clientSecret: client.client_secret }, allowInsecureUrls: true }];
      },
    });
  } catch (err) {
    await oidc?.close();
    throw err;
  }
  const server = oidc!;
  const harness = h;
  return {
    ...harness,
    oidc: server,
    async close() {
      await harness.close();
      await server.close();
    },
  };
}
