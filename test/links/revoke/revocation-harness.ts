/**
 * The stack as the revocation tests use it: a SQLite file store of its own or a Store the test
 * gives (e.g. on a real redis-server), the test's providers (pointing at real loopback peers) in
 * the catalogue, the openid-client adapter, a random audit key, and the revocation worker with
 * short timings, running unless the test drives it itself.
 */
import { randomBytes } from 'node:crypto';
import { pino, type Logger } from 'pino';
import type { RevocationWorkerOptions } from '../../../src/links/revoke/revocation-worker.js';
import type { OAuthClient, TokenSet } from '../../../src/oauth/oauth-client.js';
import type { Store } from '../../../src/store/store.js';
import { startStack as startFullStack, type Stack } from '../../support/stack.js';

export { tokenSet } from '../../support/stack.js';

export interface StackOptions {
  /** A store the test owns (it closes it); default a SQLite file of the stack's own, closed by close(). */
  readonly store?: Store;
  /** Raw snake_case catalogue entries (http:// allowed), each enabled with the given credentials. */
  readonly providers: readonly {
    readonly entry: Record<string, unknown>;
    readonly clientId: string;
    readonly clientSecret: string;
  }[];
  readonly worker?: Partial<RevocationWorkerOptions>;
  /** Start the worker's loop (default true). */
  readonly startWorker?: boolean;
  readonly providerTimeoutSeconds?: number;
  /** An OAuth client to use instead of the openid-client adapter. */
  readonly oauth?: OAuthClient;
  /** Logger for every part (default: silent). */
  readonly log?: Logger;
}

export type { Stack };

const quiet = pino({ level: 'silent' });

export function startStack(options: StackOptions): Promise<Stack> {
  return startFullStack({
    env: {
      LINKVAULT_ALLOW_INSECURE_PROVIDER_URLS: 'true',
      LINKVAULT_PROVIDER_TIMEOUT_SECONDS: String(options.providerTimeoutSeconds ?? 5),
    },
    providers: options.providers.map((p) => ({
      entry: p.entry,
      credentials: { clientId: p.clientId, clientSecret: p.clientSecret },
      allowInsecureUrls: true,
    })),
    log: options.log ?? quiet,
    auditHmacKey: randomBytes(32),
    revocationWorker: {
      pollIntervalMs: 50,
      backoffBaseMs: 100,
      backoffMaxMs: 1000,
      takeoverGraceMs: 500,
      ratePerSecond: 1000,
      burst: 1000,
      ...(options.worker ?? {}),
    },
    startWorker: options.startWorker !== false,
    ...(options.store ? { store: options.store } : {}),
    ...(options.oauth ? { oauth: options.oauth } : {}),
  });
}

/** Real tokens from a real authorization server: the authorization code flow through the adapter, login driven by the server's test hook. */
export async function obtainTokens(
  stack: Pick<Stack, 'oauth'>,
  server: { completeLogin(url: URL, options: { accountId: string }): Promise<URL> },
  providerId: string,
  accountId: string,
  redirectUri: string,
): Promise<TokenSet> {
  const start = await stack.oauth.startAuthorization({
    providerId,
    endpointVariables: {},
    redirectUri,
  });
  const callbackUrl = await server.completeLogin(start.url, { accountId });
  const done = await stack.oauth.completeAuthorization({
    providerId,
    endpointVariables: {},
    callbackUrl,
    checks: start.checks,
  });
  return done.tokens;
}

/**
 * Resolves when `check` holds, re-checking every `everyMs`; rejects after `timeoutMs`. For
 * outcomes that arrive from a background worker, which gives nothing to await directly.
 */
export async function eventually<T>(
  check: () => Promise<T | null | undefined | false>,
  timeoutMs = 10_000,
  everyMs = 20,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}
