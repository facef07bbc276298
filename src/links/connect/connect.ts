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
import { INTERNAL_METADATA_PREFIX, type LinkRecord } from '../link.js';
import type { Revocation } from '../revoke/revocation.js';
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
 *                   (under require_confirmation: … → scheduleExpiry → savePendingLink)
 * confirm:          findPending → checkOwner (else discard: revoke) → activate | mergeIntoExisting
 *
 * Host confirmation (docs/threat-model.md): a session minted with require_confirmation stores its
 * new link as `pending_confirmation` (its own record, even when it reconnects an existing link, so
 * that an active link is never touched before the host confirms). The confirmation id is
 * `<link id>.<256 random bits>`; the link keeps only SHA-256 of the whole id in its internal
 * metadata, and confirming removes it (single use). A pending link not confirmed within
 * CONFIRMATION_TTL_SECONDS is revoked by a durable queue job written before the link itself.
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
/** How long a pending_confirmation link waits for the host (docs/api.md: 10 minutes). */
export const CONFIRMATION_TTL_SECONDS = 600;
/** Queue job kind that discards a pending link left unconfirmed (handled by confirmation-expiry-job.ts). */
export const CONFIRMATION_EXPIRY_JOB_KIND = 'connect.confirmation_expiry';
/** Internal metadata of a pending link: SHA-256 of its confirmation id, and when it expires. */
export const CONFIRMATION_HASH_KEY = `${INTERNAL_METADATA_PREFIX}confirmation_sha256`;
export const CONFIRMATION_EXPIRES_KEY = `${INTERNAL_METADATA_PREFIX}confirmation_expires_at_ms`;
/** Set on a pending record whose tokens moved into the existing link it reconnected. */
export const MERGED_INTO_KEY = `${INTERNAL_METADATA_PREFIX}merged_into`;
const CONFIRMATION_SECRET_BYTES = 32;
const CONFIRMATION_ID_PATTERN = /^(lnk_[A-Za-z0-9_-]{1,64})\.([A-Za-z0-9_-]{43})$/;

/** The expiry job's id for a pending link (one job per link). */
export function confirmationExpiryJobId(linkId: string): string {
  return `${CONFIRMATION_EXPIRY_JOB_KIND}:${linkId}`;
}

export interface ConnectDeps {
  readonly config: Pick<Config, 'publicUrl'> & Partial<Pick<Config, 'connectStartsPerSession'>>;
  readonly store: Pick<
    Store,
    | 'putFlowState'
    | 'takeFlowState'
    | 'listLinks'
    | 'saveLink'
    | 'getLink'
    | 'enqueue'
    | 'acquireLock'
    | 'releaseLock'
  >;
  readonly sessions: Pick<Sessions, 'resolveSession'>;
  readonly catalogue: Pick<Catalogue, 'get' | 'isEnabled' | 'resolveVariables' | 'endpoints'>;
  readonly oauth: Pick<OAuthClient, 'startAuthorization' | 'completeAuthorization' | 'revoke'>;
  readonly vault: Vault;
  readonly metrics: Pick<Metrics, 'connects'>;
  readonly log: Logger;
  /** Audit trail: connects and superseded-token revocations are recorded. */
  readonly audit: Pick<Audit, 'record'>;
  /** Discards pending links (mismatch, expiry) the way every link is revoked: tombstone + durable provider job. */
  readonly revocation: Pick<Revocation, 'revokeLink'>;
  readonly now?: () => number;
}

export interface StartConnectRequest {
  /** The session bearer (the `Authorization: Bearer` header of POST /v1/connect). */
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
      /** Held as pending_confirmation: the host's backend confirms it with the confirmation id. */
      readonly status: 'confirm';
      readonly confirmationId: string;
      readonly providerId: string;
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

/** Who a pending link is for, as its confirmation id names it (the route's tenant checks read this). */
export interface PendingConfirmation {
  readonly linkId: string;
  readonly tenantId: string;
  readonly userId: string;
  readonly providerId: string;
}

/** Who confirms: the service calling POST /v1/confirmations, for the request. */
export interface ConfirmationActor {
  readonly serviceId: string;
  readonly requestId: string | null;
}

export interface Connect {
  startConnect(request: StartConnectRequest): Promise<StartedConnect>;
  completeCallback(request: CallbackRequest): Promise<CallbackOutcome>;
  /**
   * The pending link a confirmation id names; 404 confirmation_not_found when the id is malformed,
   * unknown, already used or expired. Reads only.
   */
  findConfirmation(confirmationId: unknown): Promise<PendingConfirmation>;
  /**
   * Confirms a pending link for `claim`'s tenant and user: resolves with the active link (the
   * reconnected existing link when it reconnected one). When the claim is not the link's tenant and
   * user, the pending link is revoked (tokens revoked at the provider) and it rejects 409
   * confirmation_mismatch. 404 confirmation_not_found as findConfirmation.
   */
  confirm(
    confirmationId: unknown,
    claim: { readonly tenantId: string; readonly userId: string },
    actor: ConfirmationActor,
  ): Promise<LinkRecord>;
  /**
   * Revokes the pending link `linkId` if it is still pending after its deadline; resolves with
   * `discarded`, `not_pending` (confirmed, merged or gone: nothing to do) or `not_due` (with the time).
   */
  expireConfirmation(
    linkId: string,
  ): Promise<{ outcome: 'discarded' | 'not_pending' } | { outcome: 'not_due'; dueAtMs: number }>;
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
  /** The session's require_confirmation (absent in flows started before it existed). */
  readonly requireConfirmation?: boolean;
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
      requireConfirmation: session.requireConfirmation === true,
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
    flow: Pick<FlowState, 'tenantId' | 'userId' | 'providerId'>,
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

  interface LinkFields {
    readonly accountId: string | null;
    readonly grantedScopes: readonly string[];
    readonly metadata: Readonly<Record<string, string>>;
    readonly endpointVariables: Readonly<Record<string, string>>;
  }

  /**
   * The link a connect of this account reconnects. A revoked link stays revoked for ever
   * (reconnecting that account makes a new link), and a pending one is nobody's yet.
   */
  async function findReconnectable(
    owner: { readonly tenantId: string; readonly userId: string; readonly providerId: string },
    accountId: string | null,
  ): Promise<LinkRecord | undefined> {
    if (accountId === null) return undefined;
    const found = await store.listLinks(
      {
        tenantId: owner.tenantId,
        userId: owner.userId,
        providerId: owner.providerId,
        providerAccountId: accountId,
      },
      10,
    );
    return found.find((l) => l.status === 'active' || l.status === 'needs_reauth');
  }

  /** Reconnect: same link id, new tokens. null when the link moved on (the caller reads again). */
  async function reconnectExisting(
    existing: LinkRecord,
    tokens: TokenSet,
    fields: LinkFields,
  ): Promise<Saved | null> {
    const at = now();
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
    if (!stored) return null; // a refresh or revoke moved the link on: read it again
    const old = previous?.refreshToken ?? null;
    const superseded =
      tokens.refreshToken !== null && old !== null && old.reveal() !== tokens.refreshToken.reveal()
        ? { token: old, endpointVariables: existing.endpointVariables }
        : null;
    return { link: stored, reconnected: true, superseded };
  }

  async function saveLink(flow: FlowState, tokens: TokenSet, fields: LinkFields): Promise<Saved> {
    for (let attempt = 0; attempt < SAVE_ATTEMPTS; attempt++) {
      const existing = await findReconnectable(flow, fields.accountId);
      if (existing) {
        const saved = await reconnectExisting(existing, tokens, fields);
        if (saved) return saved;
        continue;
      }
      const at = now();
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

  // ---- host confirmation ----

  function confirmationHash(confirmationId: string): string {
    return createHash('sha256').update(confirmationId, 'utf8').digest('base64url');
  }

  /** The metadata a pending link keeps for the caller, without the confirmation bookkeeping. */
  function withoutConfirmation(
    metadata: Readonly<Record<string, string>>,
  ): Readonly<Record<string, string>> {
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(metadata))
      if (k !== CONFIRMATION_HASH_KEY && k !== CONFIRMATION_EXPIRES_KEY) out[k] = v;
    return Object.freeze(out);
  }

  /**
   * scheduleExpiry → savePendingLink: the expiry job is written first, so a pending link (which
   * holds live tokens) never exists without the job that discards it.
   */
  async function savePendingLink(
    flow: FlowState,
    tokens: TokenSet,
    fields: LinkFields,
  ): Promise<{ link: LinkRecord; confirmationId: string }> {
    const id = `lnk_${randomBytes(LINK_ID_BYTES).toString('base64url')}`;
    const confirmationId = `${id}.${randomBytes(CONFIRMATION_SECRET_BYTES).toString('base64url')}`;
    const at = now();
    const expiresAtMs = at + CONFIRMATION_TTL_SECONDS * 1000;
    await store.enqueue({
      id: confirmationExpiryJobId(id),
      kind: CONFIRMATION_EXPIRY_JOB_KIND,
      payload: { link_id: id },
      attempts: 0,
      runAtMs: expiresAtMs,
    });
    const identity = { id, tenantId: flow.tenantId, providerId: flow.providerId };
    const sealed = await sealTokenSet(vault, identity, tokens, null);
    const link: LinkRecord = {
      id,
      tenantId: flow.tenantId,
      userId: flow.userId,
      providerId: flow.providerId,
      status: 'pending_confirmation',
      version: 1,
      providerAccountId: fields.accountId,
      grantedScopes: Object.freeze([...fields.grantedScopes]),
      metadata: Object.freeze({
        ...fields.metadata,
        [CONFIRMATION_HASH_KEY]: confirmationHash(confirmationId),
        [CONFIRMATION_EXPIRES_KEY]: String(expiresAtMs),
      }),
      endpointVariables: Object.freeze({ ...fields.endpointVariables }),
      tokens: sealed,
      accessTokenExpiresAtMs: tokens.expiresAtMs,
      createdAtMs: at,
      updatedAtMs: at,
      lastRefreshedAtMs: null,
      lastUsedAtMs: null,
    };
    const stored = await store.saveLink(link, null);
    if (!stored)
      throw new LinkvaultError('conflict', {
        detail: 'The link could not be saved; connect again',
        retryAfterSeconds: 1,
      });
    return { link: stored, confirmationId };
  }

  function expiresAtOf(link: LinkRecord): number {
    const raw = link.metadata[CONFIRMATION_EXPIRES_KEY];
    const value = raw === undefined ? NaN : Number(raw);
    // A pending link without a readable deadline is treated as expired (fail closed).
    return Number.isFinite(value) ? value : 0;
  }

  /** findPending: the pending link the id names, checked in constant time against its stored hash. */
  async function findPendingLink(confirmationId: unknown): Promise<LinkRecord> {
    const notFound = () => new LinkvaultError('confirmation_not_found');
    if (typeof confirmationId !== 'string') throw notFound();
    const match = CONFIRMATION_ID_PATTERN.exec(confirmationId);
    if (!match) throw notFound();
    const link = await store.getLink(match[1]!);
    const stored = link?.metadata[CONFIRMATION_HASH_KEY];
    if (!link || link.status !== 'pending_confirmation' || stored === undefined) throw notFound();
    const expected = Buffer.from(stored, 'base64url');
    const given = Buffer.from(confirmationHash(confirmationId), 'base64url');
    if (expected.length !== given.length || !timingSafeEqual(expected, given)) throw notFound();
    if (expiresAtOf(link) <= now()) throw notFound();
    return link;
  }

  async function findConfirmation(confirmationId: unknown): Promise<PendingConfirmation> {
    const link = await findPendingLink(confirmationId);
    return {
      linkId: link.id,
      tenantId: link.tenantId,
      userId: link.userId,
      providerId: link.providerId,
    };
  }

  /** Revokes a pending link (its tokens at the provider too) through the revocation machinery. */
  async function discardPending(
    link: LinkRecord,
    reason: 'confirmation_mismatch' | 'confirmation_expired',
    actor: { serviceId: string | null; requestId: string | null },
  ): Promise<void> {
    await deps.revocation.revokeLink(link.id, {
      revokedBy: 'service',
      serviceId: actor.serviceId,
      reason,
      requestId: actor.requestId,
    });
    deps.metrics.connects.inc({ provider: link.providerId, outcome: reason });
    log.info(
      { link_id: link.id, provider_id: link.providerId, reason },
      'connect: pending link discarded',
    );
  }

  async function auditConfirmed(
    type: string,
    link: LinkRecord,
    pending: LinkRecord,
    actor: ConfirmationActor,
  ): Promise<void> {
    await deps.audit
      .record(
        type,
        {
          link_id: link.id,
          pending_link_id: pending.id,
          tenant_id: link.tenantId,
          user_id: link.userId,
          provider_id: link.providerId,
          service_id: actor.serviceId,
          granted_scopes: [...link.grantedScopes],
        },
        actor.requestId,
      )
      .catch((err: unknown) =>
        log.error({ err, link_id: link.id }, 'connect: audit of the confirmation failed'),
      );
  }

  /**
   * mergeIntoExisting: the pending connect reconnected an account this user already has linked.
   * The existing link takes the new tokens (resealed under its own identity); the pending record is
   * then tombstoned without a provider revocation (its tokens live on in the existing link) and
   * marked with MERGED_INTO_KEY. Returns null when either record moved on (the caller reads again).
   */
  async function mergeIntoExisting(
    pending: LinkRecord,
    claimed: LinkRecord,
    existing: LinkRecord,
    actor: ConfirmationActor,
  ): Promise<LinkRecord | null> {
    if (!claimed.tokens) throw new LinkvaultError('confirmation_not_found');
    const tokens = await openTokenSet(vault, claimed, claimed.tokens);
    const saved = await reconnectExisting(existing, tokens, {
      accountId: existing.providerAccountId,
      grantedScopes: claimed.grantedScopes,
      metadata: publicOnly(claimed.metadata),
      endpointVariables: claimed.endpointVariables,
    });
    if (!saved) return null;
    const at = now();
    const tombstone: LinkRecord = {
      ...claimed,
      status: 'revoked',
      version: claimed.version + 1,
      tokens: null,
      accessTokenExpiresAtMs: null,
      metadata: Object.freeze({ ...publicOnly(claimed.metadata), [MERGED_INTO_KEY]: existing.id }),
      updatedAtMs: at,
    };
    // Losing this write means the expiry job revoked the pending record meanwhile (and with it,
    // at the provider, the tokens just moved): the existing link then needs a reconnect, which the
    // next refresh reports. Either way nothing is released twice.
    if (await store.saveLink(tombstone, claimed.version)) vault.forget(claimed.tokens);
    const entry = catalogue.get(existing.providerId);
    if (entry && saved.superseded)
      revokeSuperseded(entry, saved.link, saved.superseded, actor.requestId);
    await auditConfirmed('link.reconnected', saved.link, pending, actor);
    return saved.link;
  }

  /** The metadata without any of linkvault's own keys (the confirmation and merge bookkeeping). */
  function publicOnly(metadata: Readonly<Record<string, string>>): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(metadata))
      if (!k.startsWith(INTERNAL_METADATA_PREFIX)) out[k] = v;
    return out;
  }

  async function confirm(
    confirmationId: unknown,
    claim: { readonly tenantId: string; readonly userId: string },
    actor: ConfirmationActor,
  ): Promise<LinkRecord> {
    for (let attempt = 0; attempt < SAVE_ATTEMPTS; attempt++) {
      const pending = await findPendingLink(confirmationId);
      // checkOwner: the host's backend knows who is signed in; anyone else's claim discards the link.
      if (pending.tenantId !== claim.tenantId || pending.userId !== claim.userId) {
        await discardPending(pending, 'confirmation_mismatch', actor);
        throw new LinkvaultError('confirmation_mismatch', {
          detail: 'The pending connection was discarded and its tokens revoked at the provider',
        });
      }
      // Single use: the first write removes the confirmation hash (a second confirm finds nothing).
      const claimed: LinkRecord = {
        ...pending,
        version: pending.version + 1,
        metadata: withoutConfirmation(pending.metadata),
        updatedAtMs: now(),
      };
      const existing = await findReconnectable(pending, pending.providerAccountId);
      if (!existing) {
        const activated = await store.saveLink({ ...claimed, status: 'active' }, pending.version);
        if (!activated) continue;
        await auditConfirmed('link.connected', activated, pending, actor);
        deps.metrics.connects.inc({ provider: activated.providerId, outcome: 'confirmed' });
        return activated;
      }
      const held = await store.saveLink(claimed, pending.version);
      if (!held) continue;
      const merged = await withAccountLock(
        { tenantId: pending.tenantId, userId: pending.userId, providerId: pending.providerId },
        pending.providerAccountId,
        async () => {
          for (let round = 0; round < SAVE_ATTEMPTS; round++) {
            const current = await findReconnectable(pending, pending.providerAccountId);
            if (!current) break;
            const done = await mergeIntoExisting(pending, held, current, actor);
            if (done) return done;
          }
          return null;
        },
      );
      if (merged) {
        deps.metrics.connects.inc({ provider: merged.providerId, outcome: 'confirmed' });
        return merged;
      }
      // The existing link went away meanwhile (revoked): the held record becomes the link.
      const activated = await store.saveLink(
        { ...held, status: 'active', version: held.version + 1, updatedAtMs: now() },
        held.version,
      );
      if (!activated) throw new LinkvaultError('confirmation_not_found');
      await auditConfirmed('link.connected', activated, pending, actor);
      return activated;
    }
    throw new LinkvaultError('conflict', {
      detail: 'The pending link changed while it was being confirmed; retry',
      retryAfterSeconds: 1,
    });
  }

  async function expireConfirmation(
    linkId: string,
  ): Promise<{ outcome: 'discarded' | 'not_pending' } | { outcome: 'not_due'; dueAtMs: number }> {
    const link = await store.getLink(linkId);
    if (!link || link.status !== 'pending_confirmation') return { outcome: 'not_pending' };
    const dueAtMs = expiresAtOf(link);
    if (dueAtMs > now()) return { outcome: 'not_due', dueAtMs };
    await discardPending(link, 'confirmation_expired', { serviceId: null, requestId: null });
    return { outcome: 'discarded' };
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

      if (flow.requireConfirmation === true) {
        // Held until the host confirms it; an existing link of this account is not touched.
        const pending = await savePendingLink(flow, tokens, {
          accountId,
          grantedScopes,
          metadata,
          endpointVariables,
        });
        await deps.audit
          .record(
            'link.pending_confirmation',
            {
              link_id: pending.link.id,
              tenant_id: flow.tenantId,
              user_id: flow.userId,
              provider_id: flow.providerId,
              service_id: flow.serviceId,
              granted_scopes: [...grantedScopes],
            },
            request.requestId ?? null,
          )
          .catch((err: unknown) =>
            log.error({ err, link_id: pending.link.id }, 'connect: audit of the connect failed'),
          );
        deps.metrics.connects.inc({ provider: flow.providerId, outcome: 'pending_confirmation' });
        log.info(
          { link_id: pending.link.id, provider_id: flow.providerId },
          'connect: link held for confirmation',
        );
        return {
          status: 'confirm',
          confirmationId: pending.confirmationId,
          providerId: flow.providerId,
          returnTo: flow.returnTo,
          display: flow.display,
        };
      }

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

  return {
    startConnect,
    completeCallback,
    findConfirmation,
    confirm,
    expireConfirmation,
    idle,
  };
}
