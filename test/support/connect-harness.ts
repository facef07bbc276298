import { join } from 'node:path';
import type { ExtraProvider } from '../../src/providers/catalogue.js';
import { startOidcServer, type OidcServer, type StartOidcServerOptions } from './oidc-server.js';
import { startStack, type Stack } from './stack.js';

/**
 * The stack as the connect tests use it: listening on loopback first (providers must know our
 * redirect URI), a SQLite file or a real Redis store, the test's providers in the catalogue, the
 * real OAuth adapter, and HTTP helpers that drive the flow as a browser would. Everything logged is captured.
 */

export const APP_ORIGIN = 'https://app.example.com';
export const BUILTIN_CATALOGUE = join(import.meta.dirname, '../../config/providers.json');

export interface ConnectHarnessOptions {
  /** Registers the test's providers once the public URL is known (start the provider here). */
  readonly providers?: (
    publicUrl: string,
  ) => Promise<readonly ExtraProvider[]> | readonly ExtraProvider[];
  /** A Redis URL to use instead of a SQLite file. */
  readonly redisUrl?: string;
  /** Mount the built-in Sandbox CRM. */
  readonly sandbox?: boolean;
  /** Extra environment for loadConfig. */
  readonly env?: Readonly<Record<string, string>>;
  /** The features' clock (default Date.now). */
  readonly now?: () => number;
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

export interface ConnectHarness extends Stack {
  /** Any request to the service (relative path); never follows redirects. */
  request(path: string, init?: RequestInit): Promise<HttpAnswer>;
  /** POST /v1/sessions as crm-sync; returns the 201 body (throws otherwise). */
  createSession(body?: Record<string, unknown>): Promise<{
    session_token: string;
    expires_at: string;
    connect_url: string;
    manage_url: string;
  }>;
  /**
   * POST /v1/connect/:provider with the session as a Bearer header and `body` (display, template
   * variables) as linkvault's own page sends it; expects the 200 {authorization_url} and returns it.
   */
  startFlow(
    providerId: string,
    sessionToken: string,
    body?: Record<string, string>,
  ): Promise<StartedFlow>;
  /** POST /v1/connect/:provider as startFlow does, returning whatever it answers. */
  postConnect(
    providerId: string,
    sessionToken: string | null,
    body?: unknown,
    headers?: Record<string, string>,
  ): Promise<HttpAnswer>;
  /** GET the callback URL (absolute, or relative to the public URL) with the given Cookie header. */
  callback(url: URL | string, cookie: string | null, init?: RequestInit): Promise<HttpAnswer>;
}

async function answerOf(response: Response, requestUrl: string): Promise<HttpAnswer> {
  const text = await response.text();
  let json: Record<string, unknown> | null = null;
  if ((response.headers.get('content-type') ?? '').includes('json') && text !== '')
    json = JSON.parse(text) as Record<string, unknown>;
  const location = response.headers.get('location');
  return {
    status: response.status,
    headers: response.headers,
    text,
    json,
    location: location === null ? null : new URL(location, requestUrl),
  };
}

export async function startConnectHarness(
  options: ConnectHarnessOptions = {},
): Promise<ConnectHarness> {
  const stack = await startStack({
    listen: true,
    env: {
      LINKVAULT_RETURN_URL_ALLOWLIST: APP_ORIGIN,
      LINKVAULT_PROVIDER_TIMEOUT_SECONDS: '5',
      ...options.env,
    },
    ...(options.providers ? { providers: options.providers } : {}),
    ...(options.redisUrl ? { redisUrl: options.redisUrl } : {}),
    ...(options.sandbox ? { sandbox: true } : {}),
    ...(options.now ? { now: options.now } : {}),
  });
  const { publicUrl, services } = stack;

  async function request(path: string, init: RequestInit = {}): Promise<HttpAnswer> {
    const url = new URL(path, publicUrl).href;
    return answerOf(await fetch(url, { redirect: 'manual', ...init }), url);
  }

  async function postConnect(
    providerId: string,
    sessionToken: string | null,
    body: unknown = {},
    headers: Record<string, string> = {},
  ): Promise<HttpAnswer> {
    return request(`/v1/connect/${providerId}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json',
        // What a browser sends with the connect page's own fetch.
        origin: new URL(publicUrl).origin,
        'sec-fetch-site': 'same-origin',
        ...(sessionToken === null ? {} : { authorization: `Bearer ${sessionToken}` }),
        ...headers,
      },
      body: JSON.stringify(body),
    });
  }

  return {
    ...stack,
    request,
    async createSession(
      body = {
        tenant_id: 'tenant-a',
        user_id: 'user-1',
        return_to: `${APP_ORIGIN}/settings/integrations`,
      },
    ) {
      const answer = await request('/v1/sessions', {
        method: 'POST',
        headers: { authorization: services.bearer('crm-hs'), 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      if (answer.status !== 201 || !answer.json)
        throw new Error(`POST /v1/sessions answered ${answer.status}: ${answer.text}`);
      return answer.json as {
        session_token: string;
        expires_at: string;
        connect_url: string;
        manage_url: string;
      };
    },
    postConnect,
    async startFlow(providerId, sessionToken, body = {}) {
      const answer = await postConnect(providerId, sessionToken, body);
      const authorizationUrl = answer.json?.authorization_url;
      if (answer.status !== 200 || typeof authorizationUrl !== 'string')
        throw new Error(`POST /v1/connect/${providerId} answered ${answer.status}: ${answer.text}`);
      const setCookie = answer.headers.getSetCookie().find((c) => c.startsWith('lv_flow=')) ?? '';
      if (!setCookie) throw new Error('no binding cookie was set');
      return {
        answer,
        authorizationUrl: new URL(authorizationUrl),
        cookie: setCookie.split(';')[0]!,
        setCookie,
      };
    },
    async callback(url, cookie, init = {}) {
      const target = new URL(url, publicUrl);
      if (target.origin !== publicUrl)
        throw new Error(`callback URL ${target.origin} is not the service (${publicUrl})`);
      const headers = new Headers(init.headers);
      if (cookie !== null) headers.set('cookie', cookie);
      return answerOf(await fetch(target, { redirect: 'manual', ...init, headers }), target.href);
    },
  };
}

/** The client linkvault is registered as at startConnectHarnessWithOidc's provider (by default). */
export const ACME_CLIENT = {
  client_id: 'lv-acme',
  client_secret: 'acme-client-secret-0123456789abcdef',
} as const;

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
        oidc = await startOidcServer({
          ...serverOptions,
          clients: [{ ...client, redirect_uris: [`${publicUrl}/v1/oauth/callback/acme`] }],
        });
        return [
          {
            entry: oidc.catalogueEntry('acme'),
            credentials: { clientId: client.client_id, clientSecret: client.client_secret },
            allowInsecureUrls: true,
          },
        ];
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
