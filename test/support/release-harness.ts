import type { OAuthClient, OAuthTokenClient } from '../../src/oauth/oauth-client.js';
import type { ExtraProvider } from '../../src/providers/catalogue.js';
import type { Store } from '../../src/store/store.js';
import { startStack, type Stack } from './stack.js';
import type { TestServices } from './service-jwt.js';

export type { SeedLinkOptions } from './stack.js';

/**
 * The stack as the token-release tests use it: a SQLite file store (or the store given), no
 * background tasks unless asked, and an OAuth client given by the test (the real adapter against a real or
 * stand-in provider); without one, any provider call fails the test.
 */

export interface ReleaseHarnessOptions {
  readonly store?: Store;
  /** Wraps the store the harness uses (e.g. to make one method fail); applied after the audit key is loaded. */
  readonly wrapStore?: (store: Store) => Store;
  readonly oauth?: OAuthTokenClient;
  readonly now?: () => number;
  readonly lockTtlMs?: number;
  readonly waitForPeerMs?: number;
  readonly services?: TestServices;
  /** Catalogue entries of the test's providers (the revocation worker looks them up). */
  readonly providers?: readonly ExtraProvider[];
  /** Run the revocation worker (default false). */
  readonly startWorker?: boolean;
}

export type ReleaseHarness = Stack;

export const refuseProviderCalls: OAuthTokenClient = {
  refresh: () => Promise.reject(new Error('this test expected no provider call (refresh)')),
  revoke: () => Promise.reject(new Error('this test expected no provider call (revoke)')),
};

const refuseFlow = () => Promise.reject(new Error('this test expected no authorization flow'));

/** A token client completed into the full port: the release tests never start an authorization flow. */
function asOAuthClient(client: OAuthTokenClient): OAuthClient {
  return {
    refresh: (i) => client.refresh(i),
    revoke: (i) => client.revoke(i),
    startAuthorization: refuseFlow,
    completeAuthorization: refuseFlow,
  };
}

export function createReleaseHarness(options: ReleaseHarnessOptions = {}): Promise<ReleaseHarness> {
  return startStack({
    oauth: asOAuthClient(options.oauth ?? refuseProviderCalls),
    refreshLockTtlMs: options.lockTtlMs ?? 15_000,
    ...(options.store ? { store: options.store } : {}),
    ...(options.wrapStore ? { wrapStore: options.wrapStore } : {}),
    ...(options.now ? { now: options.now } : {}),
    ...(options.waitForPeerMs === undefined ? {} : { refreshWaitForPeerMs: options.waitForPeerMs }),
    ...(options.services ? { services: options.services } : {}),
    ...(options.providers ? { providers: options.providers } : {}),
    ...(options.startWorker === undefined ? {} : { startWorker: options.startWorker }),
  });
}
