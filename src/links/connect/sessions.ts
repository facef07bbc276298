import { createHash, randomBytes } from 'node:crypto';
import type { Config } from '../../config.js';
import { LinkvaultError } from '../../errors.js';
import type { Store } from '../../store/store.js';
import type { Catalogue } from '../../providers/catalogue.js';
import { toRfc3339 } from '../link.js';
import { checkReturnTo } from './return-to.js';
import { PROVIDER_ID_PATTERN } from '../../providers/provider-id.js';
import { credentialVariables } from '../../providers/credential-variables.js';

export interface SessionRecord {
  readonly id: string;
  readonly tenantId: string;
  readonly userId: string;
  /** Providers this session may connect; empty means every enabled provider. */
  readonly providers: readonly string[];
  readonly returnTo: string | null;
  /**
   * Whom the connection is for, as the host wants it shown on the hosted pages (an email, a name);
   * null when the host gave none. Absent on sessions stored before it existed.
   */
  readonly userDisplay?: string | null;
  /**
   * Hold new links (`pending_confirmation`) until the host's backend confirms them
   * (POST /v1/confirmations/{id}). Absent on sessions stored before it existed (= false).
   */
  readonly requireConfirmation?: boolean;
  /** The service that minted the session. */
  readonly serviceId: string;
  readonly createdAtMs: number;
  readonly expiresAtMs: number;
}

/**
 * Browser sessions: a backend service mints a short-lived bearer for one end user of one tenant,
 * and the browser uses it to connect providers (POST /v1/connect, from linkvault's own pages) and manage links (/v1/me/links).
 *
 * The token is 256 random bits. The store keeps only its SHA-256 (the record's id): a copy of the
 * store yields no usable bearer (the same reason RFC 6819 §5.1.4.1.3 gives for storing hashes of
 * credentials). A plain hash suffices, unlike for passwords, because the token has full entropy.
 * The token travels to the browser in a URL fragment (connect_url / manage_url), which browsers
 * never send to a server nor put in a Referer (RFC 3986 §3.5, Fetch §"Referrer"), so no access log
 * of ours or of a proxy in front keeps it; the pages send it on as a Bearer header only.
 */

export interface CreateSessionInput {
  readonly tenantId: string;
  readonly userId: string;
  /** Providers the session may connect; omitted = every enabled provider. */
  readonly providers?: readonly string[];
  readonly returnTo?: string;
  /** Shown on the hosted pages: whom the connection is for. */
  readonly userDisplay?: string;
  /** Overrides LINKVAULT_REQUIRE_CONNECT_CONFIRMATION for this session. */
  readonly requireConfirmation?: boolean;
}

export interface CreatedSession {
  readonly session_token: string;
  readonly expires_at: string;
  readonly connect_url: string;
  readonly manage_url: string;
}

export interface SessionsDeps {
  readonly config: Pick<Config, 'publicUrl' | 'returnUrlAllowlist' | 'sessionTtlSeconds'> &
    Partial<Pick<Config, 'requireConnectConfirmation'>>;
  readonly store: Pick<Store, 'putSession' | 'getSession'>;
  readonly catalogue: Pick<Catalogue, 'isEnabled'>;
  readonly now?: () => number;
}

export interface Sessions {
  /** Validates the input, stores the session (by hash) and returns the bearer with its URLs. 400 invalid_request / invalid_return_to. */
  createSession(input: CreateSessionInput, serviceId: string): Promise<CreatedSession>;
  /** The live session a bearer names; 401 session_expired for anything else (malformed, unknown, expired). */
  resolveSession(token: unknown): Promise<SessionRecord>;
}

const TOKEN_BYTES = 32;
/** base64url of 32 bytes, unpadded. Anything else is not one of ours and is refused before hashing. */
const TOKEN_PATTERN = /^[A-Za-z0-9_-]{43}$/;
/** Tenant and user ids are the caller's own identifiers: printable, bounded, no controls, no lone surrogates (not UTF-8). */
const MAX_ID_CHARS = 256;
const ID_PATTERN =
  /^[^\s\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}](?:[^\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}]*[^\s\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}])?$/u;
const MAX_PROVIDERS = 100;
/** user_display is shown to people: printable text, one line, short enough for a page header. */
export const MAX_USER_DISPLAY_CHARS = 128;
const USER_DISPLAY_PATTERN =
  /^[^\s\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}](?:[^\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}]*[^\s\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}])?$/u;

/** The store id of a session: SHA-256 of the bearer, base64url. */
export function sessionIdOf(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('base64url');
}

/** Checks a tenant or user id (the same rule everywhere an id comes in from a caller). */
export function checkCallerId(value: unknown, parameter: string): string {
  if (
    typeof value !== 'string' ||
    value.length === 0 ||
    value.length > MAX_ID_CHARS ||
    !ID_PATTERN.test(value)
  ) {
    throw new LinkvaultError('invalid_request', {
      detail: `${parameter} must be a string of 1-${MAX_ID_CHARS} printable characters`,
      extra: { parameter },
    });
  }
  return value;
}

/**
 * Checks user_display: 1-128 characters, no control, format (bidi overrides, zero-width) or line
 * separator characters, no lone surrogates, no leading or trailing space: what the page shows is
 * what the host sent, and it cannot be made to look like something else.
 */
export function checkUserDisplay(value: unknown): string {
  if (
    typeof value !== 'string' ||
    value.length === 0 ||
    value.length > MAX_USER_DISPLAY_CHARS ||
    !USER_DISPLAY_PATTERN.test(value)
  ) {
    throw new LinkvaultError('invalid_request', {
      detail: `user_display must be a string of 1-${MAX_USER_DISPLAY_CHARS} printable characters`,
      extra: { parameter: 'user_display' },
    });
  }
  return value;
}

export function createSessions(deps: SessionsDeps): Sessions {
  const now = deps.now ?? Date.now;
  const { config } = deps;

  function checkProviders(value: unknown): string[] {
    if (!Array.isArray(value) || value.length === 0 || value.length > MAX_PROVIDERS) {
      throw new LinkvaultError('invalid_request', {
        detail: `providers must be a non-empty array of at most ${MAX_PROVIDERS} provider ids (omit it to allow every enabled provider)`,
        extra: { parameter: 'providers' },
      });
    }
    const out: string[] = [];
    for (const id of value) {
      if (typeof id !== 'string' || !PROVIDER_ID_PATTERN.test(id)) {
        throw new LinkvaultError('invalid_request', {
          detail: 'providers must contain provider ids',
          extra: { parameter: 'providers' },
        });
      }
      // The id matched the catalogue's own id syntax above, so naming it in the detail is safe.
      if (!deps.catalogue.isEnabled(id)) {
        throw new LinkvaultError('invalid_request', {
          detail: `provider "${id}" is not an enabled provider (a catalogue provider is enabled by ${credentialVariables(id).clientId} and ${credentialVariables(id).clientSecret})`,
          extra: { parameter: 'providers', provider_id: id },
        });
      }
      if (!out.includes(id)) out.push(id);
    }
    return out;
  }

  async function createSession(
    input: CreateSessionInput,
    serviceId: string,
  ): Promise<CreatedSession> {
    const tenantId = checkCallerId(input.tenantId, 'tenant_id');
    const userId = checkCallerId(input.userId, 'user_id');
    const providers = input.providers === undefined ? [] : checkProviders(input.providers);
    const returnTo =
      input.returnTo === undefined
        ? null
        : checkReturnTo(input.returnTo, config.returnUrlAllowlist);
    const userDisplay =
      input.userDisplay === undefined ? null : checkUserDisplay(input.userDisplay);
    if (input.requireConfirmation !== undefined && typeof input.requireConfirmation !== 'boolean')
      throw new LinkvaultError('invalid_request', {
        detail: 'require_confirmation must be true or false',
        extra: { parameter: 'require_confirmation' },
      });
    const requireConfirmation =
      input.requireConfirmation ?? config.requireConnectConfirmation ?? false;

    const token = randomBytes(TOKEN_BYTES).toString('base64url');
    const createdAtMs = now();
    const expiresAtMs = createdAtMs + config.sessionTtlSeconds * 1000;
    const record: SessionRecord = {
      id: sessionIdOf(token),
      tenantId,
      userId,
      providers,
      returnTo,
      userDisplay,
      requireConfirmation,
      serviceId,
      createdAtMs,
      expiresAtMs,
    };
    await deps.store.putSession(record);
    const fragment = `#session=${token}`;
    return {
      session_token: token,
      expires_at: toRfc3339(expiresAtMs),
      connect_url: `${config.publicUrl}/connect${fragment}`,
      manage_url: `${config.publicUrl}/manage${fragment}`,
    };
  }

  async function resolveSession(token: unknown): Promise<SessionRecord> {
    if (typeof token !== 'string' || !TOKEN_PATTERN.test(token))
      throw new LinkvaultError('session_expired');
    const session = await deps.store.getSession(sessionIdOf(token));
    // The store drops expired sessions itself; the clock check guards a store whose expiry lags.
    if (!session || session.expiresAtMs <= now()) throw new LinkvaultError('session_expired');
    return session;
  }

  return { createSession, resolveSession };
}
