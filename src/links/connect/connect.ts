import { createHash, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import type { Config } from '../../config.js';
import { isLinkvaultError, LinkvaultError } from '../../errors.js';
import { openAead, sealAead } from '../../keys/aead.js';
import type { Vault } from '../../keys/vault.js';
import type { Metrics } from '../../metrics.js';
import type {
  AuthorizationChecks,
  EndpointVariables,
  OAuthClient,
  TokenSet,
} from '../../oauth/oauth-client.js';
import { Secret } from '../../secret.js';
import { acquireLockWithin } from '../../store/lock-wait.js';
import type { Store } from '../../store/store.js';
import type { LinkRecord } from '../link.js';
import type { SessionRecord } from './sessions.js';
import type { Audit } from '../audit/audit.js';
import type { Catalogue, ProviderEntry } from '../../providers/catalogue.js';
import type { Sessions } from './sessions.js';
import { openTokenSet, sealTokenSet } from '../sealing/token-vault.js';
import { notEnabledDetail } from '../../providers/credential-variables.js';

/**
 * The connect flow, as named steps top to bottom.
 *
 * startConnect:     loadSession → checkProviderAllowed → resolveSessionVariables → buildRedirectUri
 *                   → startAuthorization → bindBrowser → keepFlowState
 * completeCallback: takeFlowState → checkProviderMatches → checkBrowserBinding → resolveCallbackVariables
 *                   → exchangeCode → captureMetadata → determineAccount → grantedScopes
 *                   → sealTokenSet → saveLink → revokeSuperseded
 *
 * Flow state lives server-side for 10 minutes under SHA-256(state) and is sealed with AES-256-GCM
 * under HKDF-SHA256(state): what the store holds (PKCE verifier, nonce, binding hash) is useless
 * without the state value, which only the browser and the provider ever see. It is taken exactly
 * once (atomic take), so a replayed or forged callback never reaches the token endpoint.
 *
 * The flow is bound to the browser that started it (RFC 9700 §4.7.1 CSRF, §4.5 code injection):
 * /v1/connect sets an HttpOnly cookie whose SHA-256 the flow state holds; a callback without the
 * matching cookie is refused before any token request.
 */

/** RFC 9700 §2.1.1 / §4.7: authorization requests are short-lived. */
export const FLOW_TTL_SECONDS = 600;
const FLOW_FORMAT_VERSION = 1;
const FLOW_HKDF_INFO = 'linkvault/flow-state/v1';
const BINDING_BYTES = 32;
const LINK_ID_BYTES = 16;
const MAX_ACCOUNT_ID_CHARS = 512;
const MAX_METADATA_VALUE_CHARS = 2048;
const SAVE_ATTEMPTS = 4;
const CONNECT_LOCK_TTL_MS = 15_000;
const CONNECT_LOCK_WAIT_MS = 5_000;
/** Flow starts a session may make when the configuration does not say (LINKVAULT_CONNECT_STARTS_PER_SESSION). */
export const DEFAULT_CONNECT_STARTS_PER_SESSION = 20;

export interface ConnectDeps {
  readonly config: Pick<Config, 'publicUrl'> & Partial<Pick<Config, 'connectStartsPerSession'>>;
  readonly store: Pick<
    Store,
    'putFlowState' | 'takeFlowState' | 'listLinks' | 'saveLink' | 'acquireLock' | 'releaseLock'
  >;
  readonly sessions: Pick<Sessions, 'resolveSession'>;
  readonly catalogue: Pick<Catalogue, 'get' | 'isEnabled' | 'resolveVariables' | 'endpoints'>;
  readonly oauth: Pick<OAuthClient, 'startAuthorization' | 'completeAuthorization' | 'revoke'>;
  readonly vault: Vault;
  readonly metrics: Pick<Metrics, 'connects'>;
  readonly log: Logger;
  /** Audit trail: connects and superseded-token revocations are recorded. */
  readonly audit: Pick<Audit, 'record'>;
  readonly now?: () => number;
}

export interface StartConnectRequest {
  /** The session bearer (from `?session=`). */
  readonly sessionToken: unknown;
  readonly providerId: string;
  /** The connect request's other parameters: template-variable values by parameter name (`instance_domain`, `tenant`, ...). */
  readonly parameters: Readonly<Record<string, string>>;
  /** How the hosted connect page opened the flow: in the page itself, or in the SDK's popup (result goes back to the opener). */
  readonly display?: ConnectDisplay;
}

export type ConnectDisplay = 'page' | 'popup';

export interface StartedConnect {
  /** Where to send the browser (the provider's authorization endpoint). */
  readonly redirectUrl: URL;
  /** The value of the browser-binding cookie; only its SHA-256 is kept server-side. */
  readonly bindingCookieValue: string;
}

export interface CallbackRequest {
  /** The provider id from the callback path. */
  readonly providerId: string;
  /** The callback's raw query string (without `?`), already checked for size and duplicates by the route. */
  readonly rawQuery: string;
  /** The browser-binding cookie, when the browser sent one. */
  readonly bindingCookieValue: string | undefined;
  readonly requestId?: string | null;
}

/**
 * What the callback route shows. `returnTo` is null when the flow could not be trusted (unknown
 * state, another provider's callback, another browser): such a request never learns the flow's
 * return URL, so it gets the plain result page.
 */
export type CallbackOutcome =
  | {
      readonly status: 'connected';
      readonly linkId: string;
      readonly providerId: string;
      readonly reconnected: boolean;
      readonly returnTo: string | null;
      readonly display: ConnectDisplay;
    }
  | {
      readonly status: 'error';
      readonly error: LinkvaultError;
      readonly providerId: string | null;
      readonly returnTo: string | null;
      readonly display: ConnectDisplay | null;
    };

export interface Connect {
  startConnect(request: StartConnectRequest): Promise<StartedConnect>;
  completeCallback(request: CallbackRequest): Promise<CallbackOutcome>;
  /** Resolves when the best-effort background work (superseded-token revocations) in flight has finished. */
  idle(): Promise<void>;
}

/** What the flow remembers between the redirect and the callback (sealed in the store). */
interface FlowState {
  readonly v: typeof FLOW_FORMAT_VERSION;
  readonly providerId: string;
  readonly sessionId: string;
  readonly serviceId: string;
  readonly tenantId: string;
  readonly userId: string;
  readonly returnTo: string | null;
  readonly display: ConnectDisplay;
  readonly endpointVariables: Readonly<Record<string, string>>;
  readonly requestedScopes: readonly string[];
  readonly expectedIssuer: string | null;
  readonly redirectUri: string;
  readonly codeVerifier: string | null;
  readonly nonce: string | null;
  /** base64url SHA-256 of the browser-binding cookie value. */
  readonly bindingHash: string;
  readonly createdAtMs: number;
}

// ---- flow-state sealing ------------------------------------------------------------------

/** The store key of a flow: SHA-256(state). The store never sees the state itself. */
export function flowStateKey(state: string): string {
  return createHash('sha256').update(state, 'utf8').digest('base64url');
}

function flowKey(state: string): Buffer {
  // HKDF (RFC 5869) with the state as input keying material: ≥128 random bits, so no salt is needed
  // for extraction to be sound; the info string separates this use from any other hash of the state.
  return Buffer.from(
    hkdfSync('sha256', Buffer.from(state, 'utf8'), Buffer.alloc(0), FLOW_HKDF_INFO, 32),
  );
}

/** Seals a flow under a key derived from its state; the record is `{v, iv, ct, tag}` (base64url). */
export function sealFlowState(
  state: string,
  storeKey: string,
  flow: FlowState,
): Record<string, unknown> {
  const key = flowKey(state);
  const plaintext = Buffer.from(JSON.stringify(flow), 'utf8');
  try {
    // The store key is the AAD: a sealed flow moved to another key does not open.
    const { iv, ct, tag } = sealAead(key, plaintext, storeKey);
    return {
      v: FLOW_FORMAT_VERSION,
      iv: iv.toString('base64url'),
      ct: ct.toString('base64url'),
      tag: tag.toString('base64url'),
    };
  } finally {
    plaintext.fill(0);
    key.fill(0);
  }
}

/** Opens a sealed flow, or null when it is malformed or was not sealed for this state under this store key. */
export function openFlowState(
  state: string,
  storeKey: string,
  record: Readonly<Record<string, unknown>>,
): FlowState | null {
  const { v, iv, ct, tag } = record;
  if (
    v !== FLOW_FORMAT_VERSION ||
    typeof iv !== 'string' ||
    typeof ct !== 'string' ||
    typeof tag !== 'string'
  )
    return null;
  const key = flowKey(state);
  try {
    const plaintext = openAead(
      key,
      {
        iv: Buffer.from(iv, 'base64url'),
        ct: Buffer.from(ct, 'base64url'),
        tag: Buffer.from(tag, 'base64url'),
      },
      storeKey,
    );
    const flow = JSON.parse(plaintext.toString('utf8')) as FlowState;
    plaintext.fill(0);
    return flow.v === FLOW_FORMAT_VERSION ? flow : null;
  } catch {
    return null;
  } finally {
    key.fill(0);
  }
}

function sha256(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

// ---- metadata and account id -------------------------------------------------------------

function memberAt(source: Readonly<Record<string, unknown>> | null, path: string): unknown {
  let value: unknown = source;
  for (const part of path.split('.')) {
    if (
      typeof value !== 'object' ||
      value === null ||
      Array.isArray(value) ||
      !Object.hasOwn(value, part)
    )
      return undefined;
    value = (value as Record<string, unknown>)[part];
  }
  return value;
}

/** True when `host` is one of the entry's API hosts (`*.example.com` = any subdomain of example.com). */
function isApiHost(entry: Pick<ProviderEntry, 'apiHosts'>, host: string): boolean {
  const h = host.toLowerCase();
  return entry.apiHosts.some((pattern) =>
    pattern.startsWith('*.')
      ? h.endsWith(pattern.slice(1)) && h.length > pattern.length - 1
      : h === pattern,
  );
}

function badTokenResponse(detail: string): LinkvaultError {
  return new LinkvaultError('invalid_token_response', { detail });
}

/**
 * The catalogue's metadata members of a token response (the connect's, and every refresh's: the
 * refresh coordinator is given this, main.ts). A URL-valued member (instance_url, api_domain, the
 * Salesforce identity URL) is where tokens will be sent later, so its host must be one of the
 * entry's api_hosts (RFC 9700 §4.4 mix-up / §4.9 token leakage: a token response steering API calls
 * elsewhere is refused — rejects invalid_token_response — and nothing of it is stored).
 */
export function captureMetadata(
  entry: ProviderEntry,
  extra: Readonly<Record<string, unknown>>,
): Record<string, string> {
  const metadata: Record<string, string> = {};
  for (const path of entry.captureMetadata) {
    const value = memberAt(extra, path);
    let text: string;
    if (typeof value === 'string') text = value;
    else if (typeof value === 'number' && Number.isFinite(value)) text = String(value);
    else if (typeof value === 'boolean') text = String(value);
    else continue; // absent, null or structured: not a metadata value
    if (text.length > MAX_METADATA_VALUE_CHARS || /[\p{Cc}]/u.test(text))
      throw badTokenResponse(`metadata member ${path} is not acceptable`);
    if (/^[a-z][a-z0-9+.-]*:/i.test(text)) {
      let url: URL;
      try {
        url = new URL(text);
      } catch {
        throw badTokenResponse(`metadata member ${path} is not a valid URL`);
      }
      const schemeOk =
        url.protocol === 'https:' || (url.protocol === 'http:' && entry.insecureUrlsAllowed);
      if (
        !schemeOk ||
        url.username !== '' ||
        url.password !== '' ||
        !isApiHost(entry, url.hostname)
      ) {
        throw badTokenResponse(`metadata member ${path} points outside the provider's API hosts`);
      }
    }
    metadata[path] = text;
  }
  return metadata;
}

function accountIdOf(
  entry: ProviderEntry,
  tokens: TokenSet,
  idTokenClaims: Readonly<Record<string, unknown>> | null,
): string | null {
  let value: unknown;
  switch (entry.accountId.from) {
    case 'id_token_claim':
      value = memberAt(idTokenClaims, entry.accountId.path);
      break;
    case 'token_response':
      value = memberAt(tokens.extra, entry.accountId.path);
      break;
    case 'none':
      value = idTokenClaims?.sub;
      break;
  }
  if (typeof value === 'number' && Number.isFinite(value)) value = String(value);
  if (typeof value !== 'string' || value === '' || value.length > MAX_ACCOUNT_ID_CHARS) return null;
  return value;
}

// ---- the flow ------------------------------------------------------------------------------

export function createConnect(deps: ConnectDeps): Connect {
  const { store, catalogue, oauth, vault, log } = deps;
  const now = deps.now ?? Date.now;
  const maxStartsPerSession =
    deps.config.connectStartsPerSession ?? DEFAULT_CONNECT_STARTS_PER_SESSION;
  const background = new Set<Promise<void>>();

  const metricProvider = (id: string): string => (catalogue.get(id) ? id : 'unknown');

  function enabledEntry(providerId: string): ProviderEntry {
    const entry = catalogue.get(providerId);
    if (!entry || !catalogue.isEnabled(providerId))
      throw new LinkvaultError('provider_not_found', {
        detail: entry ? notEnabledDetail(providerId) : 'No such provider, or it is not enabled',
      });
    return entry;
  }

  // ---- startConnect steps ----

  function checkProviderAllowed(session: SessionRecord, providerId: string): ProviderEntry {
    const entry = enabledEntry(providerId);
    if (session.providers.length > 0 && !session.providers.includes(providerId)) {
      throw new LinkvaultError('provider_not_allowed', {
        detail: 'This session may not connect this provider',
      });
    }
    return entry;
  }

  function resolveSessionVariables(
    entry: ProviderEntry,
    parameters: Readonly<Record<string, string>>,
  ): Record<string, string> {
    const known = new Set(
      entry.templateVariables.map((v) => v.sessionParameter).filter((p): p is string => p !== null),
    );
    for (const name of Object.keys(parameters)) {
      if (!known.has(name)) {
        // Parameter names are the caller's text: name it only when it is a plain identifier.
        const safe = /^[A-Za-z0-9_-]{1,64}$/.test(name);
        throw new LinkvaultError('invalid_request', {
          detail: safe
            ? `unknown parameter "${name}" for this provider`
            : 'unknown parameter for this provider',
          ...(safe ? { extra: { parameter: name } } : {}),
        });
      }
    }
    return catalogue.resolveVariables(entry.id, 'session', parameters);
  }

  /** RFC 9700 §4.4.2.2: a distinct redirect URI per provider defends against mix-up; built from configuration, never the Host header. */
  function buildRedirectUri(providerId: string): string {
    return `${deps.config.publicUrl}/v1/oauth/callback/${encodeURIComponent(providerId)}`;
  }

  /**
   * Counts one flow start against the session, across replicas: the count is a row of numbered
   * locks held until the session expires, each taken at most once (acquireLock is atomic in every
   * store). Every start costs a discovery, a flow-state row and a provider round trip, and a
   * session is a bearer an end user holds: without a cap one session can make linkvault do
   * unbounded work. Taken before any of that work.
   */
  async function countFlowStart(session: SessionRecord): Promise<void> {
    const ttlMs = session.expiresAtMs - now();
    if (ttlMs <= 0) throw new LinkvaultError('session_expired');
    for (let slot = 0; slot < maxStartsPerSession; slot += 1) {
      if ((await store.acquireLock(`connect-start:${session.id}:${slot}`, ttlMs)) !== null) return;
    }
    throw new LinkvaultError('rate_limited', {
      detail: 'This session has started too many connect flows; mint a new session',
      retryAfterSeconds: Math.ceil(ttlMs / 1000),
    });
  }

  async function startConnect(request: StartConnectRequest): Promise<StartedConnect> {
    const session = await deps.sessions.resolveSession(request.sessionToken);
    const entry = checkProviderAllowed(session, request.providerId);
    const endpointVariables = resolveSessionVariables(entry, request.parameters);
    await countFlowStart(session);
    const redirectUri = buildRedirectUri(entry.id);
    const requestedScopes = catalogue.endpoints(entry.id, endpointVariables).defaultScopes;

    const start = await oauth.startAuthorization({
      providerId: entry.id,
      endpointVariables,
      redirectUri,
      scopes: requestedScopes,
    });
    const state = start.checks.state.reveal();

    // bindBrowser: a fresh value for the cookie; only its hash goes into the flow state.
    const bindingCookieValue = randomBytes(BINDING_BYTES).toString('base64url');
    const flow: FlowState = {
      v: FLOW_FORMAT_VERSION,
      providerId: entry.id,
      sessionId: session.id,
      serviceId: session.serviceId,
      tenantId: session.tenantId,
      userId: session.userId,
      returnTo: session.returnTo,
      display: request.display ?? 'page',
      endpointVariables,
      requestedScopes: [...requestedScopes],
      expectedIssuer: start.checks.expectedIssuer,
      redirectUri: start.checks.redirectUri,
      codeVerifier: start.checks.codeVerifier?.reveal() ?? null,
      nonce: start.checks.nonce?.reveal() ?? null,
      bindingHash: sha256(bindingCookieValue).toString('base64url'),
      createdAtMs: now(),
    };

    // keepFlowState
    const key = flowStateKey(state);
    await store.putFlowState(key, sealFlowState(state, key, flow), FLOW_TTL_SECONDS);
    deps.metrics.connects.inc({ provider: entry.id, outcome: 'started' });
    return { redirectUrl: start.url, bindingCookieValue };
  }

  // ---- completeCallback steps ----

  async function takeFlowState(
    params: URLSearchParams,
  ): Promise<{ state: string; flow: FlowState }> {
    const state = params.get('state');
    if (state === null || state === '')
      throw new LinkvaultError('invalid_state', {
        detail: 'The authorization response has no state',
      });
    const key = flowStateKey(state);
    const record = await store.takeFlowState(key);
    const flow = record ? openFlowState(state, key, record) : null;
    if (!flow || flow.createdAtMs + FLOW_TTL_SECONDS * 1000 <= now()) {
      throw new LinkvaultError('invalid_state', {
        detail: 'The authorization response state is unknown, expired or already used',
      });
    }
    return { state, flow };
  }

  function checkProviderMatches(flow: FlowState, providerId: string): void {
    if (flow.providerId !== providerId) {
      throw new LinkvaultError('invalid_state', {
        detail: "The authorization response arrived at another provider's callback",
      });
    }
  }

  function checkBrowserBinding(flow: FlowState, cookie: string | undefined): void {
    const expected = Buffer.from(flow.bindingHash, 'base64url');
    const given =
      cookie === undefined || cookie === '' || cookie.length > 256 ? null : sha256(cookie);
    if (!given || expected.length !== given.length || !timingSafeEqual(expected, given)) {
      throw new LinkvaultError('flow_binding_mismatch', {
        detail: 'Start the connection again from the same browser',
      });
    }
  }

  function resolveCallbackVariables(
    flow: FlowState,
    params: URLSearchParams,
  ): Record<string, string> {
    const values: Record<string, string> = {};
    for (const [name, value] of params) values[name] = value;
    return {
      ...flow.endpointVariables,
      ...catalogue.resolveVariables(flow.providerId, 'callback', values),
    };
  }

  function checksOf(state: string, flow: FlowState): AuthorizationChecks {
    return {
      state: new Secret(state),
      codeVerifier: flow.codeVerifier === null ? null : new Secret(flow.codeVerifier),
      nonce: flow.nonce === null ? null : new Secret(flow.nonce),
      expectedIssuer: flow.expectedIssuer,
      redirectUri: flow.redirectUri,
    };
  }

  /**
   * The code exchange (the port validates iss, error=, the token response and the ID token). The
   * port classifies `invalid_grant` as reauth_required, which is what it means for a refresh; for a
   * code it means the code is spent, expired or was not issued for this flow's PKCE verifier and
   * redirect URI (RFC 6749 §5.2, RFC 7636 §4.6: a code injected from another flow lands here).
   */
  async function exchangeCode(
    flow: FlowState,
    state: string,
    endpointVariables: EndpointVariables,
    callbackUrl: URL,
  ) {
    try {
      return await oauth.completeAuthorization({
        providerId: flow.providerId,
        endpointVariables,
        callbackUrl,
        checks: checksOf(state, flow),
      });
    } catch (err) {
      if (isLinkvaultError(err, 'reauth_required'))
        throw new LinkvaultError('authorization_code_rejected', { cause: err });
      throw err;
    }
  }

  /** Serialises connects of one account so two tabs finishing at once cannot create two links. */
  async function withAccountLock<T>(
    flow: FlowState,
    accountId: string | null,
    work: () => Promise<T>,
  ): Promise<T> {
    if (accountId === null) return work();
    const name = `connect:${createHash('sha256')
      .update(JSON.stringify([flow.tenantId, flow.userId, flow.providerId, accountId]))
      .digest('base64url')}`;
    const lock = await acquireLockWithin(store, name, CONNECT_LOCK_TTL_MS, {
      waitMs: CONNECT_LOCK_WAIT_MS,
      pollMs: 50,
      now,
    });
    if (!('owner' in lock))
      throw new LinkvaultError('conflict', {
        detail: 'Another connection of this account is in progress',
        retryAfterSeconds: 1,
      });
    const owner = lock.owner;
    try {
      return await work();
    } finally {
      await store
        .releaseLock(name, owner)
        .catch((err: unknown) => log.warn({ err }, 'connect: could not release the account lock'));
    }
  }

  interface Saved {
    readonly link: LinkRecord;
    readonly reconnected: boolean;
    /** The refresh token the reconnect replaced (to revoke), with the variables it was issued under. */
    readonly superseded: {
      readonly token: Secret;
      readonly endpointVariables: EndpointVariables;
    } | null;
  }

  async function saveLink(
    flow: FlowState,
    tokens: TokenSet,
    fields: {
      accountId: string | null;
      grantedScopes: readonly string[];
      metadata: Record<string, string>;
      endpointVariables: Record<string, string>;
    },
  ): Promise<Saved> {
    for (let attempt = 0; attempt < SAVE_ATTEMPTS; attempt++) {
      const existing =
        fields.accountId === null
          ? undefined
          : (
              await store.listLinks(
                {
                  tenantId: flow.tenantId,
                  userId: flow.userId,
                  providerId: flow.providerId,
                  providerAccountId: fields.accountId,
                },
                10,
              )
            )
              // A revoked link stays revoked for ever: reconnecting that account makes a new link.
              .find((l) => l.status !== 'revoked');
      const at = now();

      if (existing) {
        // Reconnect: same link id, new tokens (RFC 9700 §4.14: the newest refresh token is the one kept).
        let previous: TokenSet | null = null;
        if (existing.tokens) {
          try {
            previous = await openTokenSet(vault, existing, existing.tokens);
          } catch (err) {
            if (!isLinkvaultError(err, 'sealed_record_invalid')) throw err;
            log.warn(
              { link_id: existing.id, error_code: err.code },
              'connect: the superseded token set does not open; replacing it',
            );
          }
        }
        // A provider that issues a refresh token only on first consent (Google, Zoho without
        // prompt=consent) answers a reconnect without one: the old one is still the live one.
        const refreshToken = tokens.refreshToken ?? previous?.refreshToken ?? null;
        const sealed = await sealTokenSet(
          vault,
          existing,
          { ...tokens, refreshToken },
          existing.tokens,
        );
        const updated: LinkRecord = {
          ...existing,
          status: 'active',
          version: existing.version + 1,
          grantedScopes: Object.freeze([...fields.grantedScopes]),
          metadata: Object.freeze({ ...fields.metadata }),
          endpointVariables: Object.freeze({ ...fields.endpointVariables }),
          tokens: sealed,
          accessTokenExpiresAtMs: tokens.expiresAtMs,
          updatedAtMs: at,
        };
        const stored = await store.saveLink(updated, existing.version);
        if (!stored) continue; // a refresh or revoke moved the link on: read it again
        const old = previous?.refreshToken ?? null;
        const superseded =
          tokens.refreshToken !== null &&
          old !== null &&
          old.reveal() !== tokens.refreshToken.reveal()
            ? { token: old, endpointVariables: existing.endpointVariables }
            : null;
        return { link: stored, reconnected: true, superseded };
      }

      const id = `lnk_${randomBytes(LINK_ID_BYTES).toString('base64url')}`;
      const identity = { id, tenantId: flow.tenantId, providerId: flow.providerId };
      const sealed = await sealTokenSet(vault, identity, tokens, null);
      const link: LinkRecord = {
        id,
        tenantId: flow.tenantId,
        userId: flow.userId,
        providerId: flow.providerId,
        status: 'active',
        version: 1,
        providerAccountId: fields.accountId,
        grantedScopes: Object.freeze([...fields.grantedScopes]),
        metadata: Object.freeze({ ...fields.metadata }),
        endpointVariables: Object.freeze({ ...fields.endpointVariables }),
        tokens: sealed,
        accessTokenExpiresAtMs: tokens.expiresAtMs,
        createdAtMs: at,
        updatedAtMs: at,
        lastRefreshedAtMs: null,
        lastUsedAtMs: null,
      };
      const stored = await store.saveLink(link, null);
      if (stored) return { link: stored, reconnected: false, superseded: null };
    }
    throw new LinkvaultError('conflict', {
      detail: 'The link changed while it was being saved; connect again',
      retryAfterSeconds: 1,
    });
  }

  /** Best effort, in the background: a failure is logged and audited, never fails the connect. */
  function revokeSuperseded(
    entry: ProviderEntry,
    link: LinkRecord,
    superseded: NonNullable<Saved['superseded']>,
    requestId: string | null,
  ): void {
    // Only a provider that revokes a single refresh token the RFC 7009 way: the custom styles
    // (GitHub's grant deletion, Slack's auth.revoke of the access token) would end the new grant too.
    if (entry.revocation.style !== 'rfc7009' || entry.revocation.tokenTypeHint !== 'refresh_token')
      return;
    const work = (async () => {
      let outcome: string;
      let errorCode: string | null = null;
      try {
        outcome = await oauth.revoke({
          providerId: entry.id,
          endpointVariables: superseded.endpointVariables,
          token: superseded.token,
          tokenTypeHint: 'refresh_token',
        });
      } catch (err) {
        outcome = 'failed';
        errorCode = isLinkvaultError(err) ? err.code : 'internal_error';
        log.warn(
          { link_id: link.id, provider_id: entry.id, error_code: errorCode },
          'connect: revoking the superseded refresh token failed',
        );
      }
      await deps.audit
        .record(
          'link.superseded_token_revoked',
          {
            link_id: link.id,
            tenant_id: link.tenantId,
            provider_id: entry.id,
            outcome,
            error_code: errorCode,
          },
          requestId,
        )
        .catch((err: unknown) =>
          log.error(
            { err, link_id: link.id },
            'connect: audit of the superseded-token revocation failed',
          ),
        );
    })();
    background.add(work);
    void work.finally(() => background.delete(work));
  }

  async function completeCallback(request: CallbackRequest): Promise<CallbackOutcome> {
    const providerLabel = metricProvider(request.providerId);
    const fail = (error: unknown, flow: FlowState | null): CallbackOutcome => {
      const e = isLinkvaultError(error)
        ? error
        : new LinkvaultError('internal_error', { cause: error });
      if (e.status >= 500)
        log.error(
          { err: e.cause ?? e, provider_id: providerLabel, error_code: e.code },
          'connect: callback failed',
        );
      else
        log.info({ provider_id: providerLabel, error_code: e.code }, 'connect: callback refused');
      deps.metrics.connects.inc({ provider: providerLabel, outcome: e.code });
      return {
        status: 'error',
        error: e,
        providerId: flow?.providerId ?? null,
        returnTo: flow?.returnTo ?? null,
        display: flow?.display ?? null,
      };
    };

    const params = new URLSearchParams(request.rawQuery);
    // Until the flow is known to belong to this provider and this browser, nothing of it is revealed.
    let state: string;
    let flow: FlowState;
    try {
      ({ state, flow } = await takeFlowState(params));
      checkProviderMatches(flow, request.providerId);
      checkBrowserBinding(flow, request.bindingCookieValue);
    } catch (err) {
      return fail(err, null);
    }

    try {
      const entry = catalogue.get(flow.providerId);
      if (!entry)
        throw new LinkvaultError('provider_not_found', {
          detail: 'The provider is no longer in the catalogue',
        });
      const endpointVariables = resolveCallbackVariables(flow, params);
      const callbackUrl = new URL(
        `${buildRedirectUri(flow.providerId)}${request.rawQuery === '' ? '' : `?${request.rawQuery}`}`,
      );

      const { tokens, idTokenClaims } = await exchangeCode(
        flow,
        state,
        endpointVariables,
        callbackUrl,
      );

      const metadata = captureMetadata(entry, tokens.extra);
      const accountId = accountIdOf(entry, tokens, idTokenClaims);
      const grantedScopes = tokens.scopes ?? flow.requestedScopes;

      const saved = await withAccountLock(flow, accountId, () =>
        saveLink(flow, tokens, { accountId, grantedScopes, metadata, endpointVariables }),
      );
      if (saved.superseded)
        revokeSuperseded(entry, saved.link, saved.superseded, request.requestId ?? null);

      // The link is stored; an audit failure is logged rather than failing a connect that already happened.
      await deps.audit
        .record(
          saved.reconnected ? 'link.reconnected' : 'link.connected',
          {
            link_id: saved.link.id,
            tenant_id: flow.tenantId,
            user_id: flow.userId,
            provider_id: flow.providerId,
            service_id: flow.serviceId,
            granted_scopes: [...grantedScopes],
          },
          request.requestId ?? null,
        )
        .catch((err: unknown) =>
          log.error({ err, link_id: saved.link.id }, 'connect: audit of the connect failed'),
        );
      deps.metrics.connects.inc({
        provider: flow.providerId,
        outcome: saved.reconnected ? 'reconnected' : 'connected',
      });
      log.info(
        { link_id: saved.link.id, provider_id: flow.providerId, reconnected: saved.reconnected },
        'connect: link stored',
      );
      return {
        status: 'connected',
        linkId: saved.link.id,
        providerId: flow.providerId,
        reconnected: saved.reconnected,
        returnTo: flow.returnTo,
        display: flow.display,
      };
    } catch (err) {
      return fail(err, flow);
    }
  }

  async function idle(): Promise<void> {
    while (background.size > 0) await Promise.allSettled([...background]);
  }

  return { startConnect, completeCallback, idle };
}
