/**
 * One error class and one catalogue of stable snake_case codes.
 * The HTTP layer turns a LinkvaultError into RFC 9457 problem+json; 5xx bodies never carry
 * internals (the cause goes to the log only). Adapters translate library errors into these codes
 * by the library's own error code, never by message text.
 */

export interface CatalogueEntry {
  readonly status: number;
  readonly title: string;
}

export const ERROR_CATALOGUE = {
  invalid_request: { status: 400, title: 'The request is malformed or has invalid parameters' },
  invalid_return_to: { status: 400, title: 'return_to is not on the allowlist' },
  invalid_webhook_url: {
    status: 400,
    title: 'The webhook URL is not one linkvault delivers to',
  },
  invalid_state: {
    status: 400,
    title: 'The authorization response state is unknown, expired or already used',
  },
  flow_binding_mismatch: {
    status: 400,
    title: 'The authorization response did not come back to the browser that started it',
  },
  issuer_mismatch: {
    status: 400,
    title: 'The authorization response came from an unexpected issuer',
  },
  provider_denied: {
    status: 400,
    title: 'The provider answered the authorization request with an error',
  },
  invalid_token_response: {
    status: 502,
    title: 'The provider returned an unacceptable token response',
  },
  unauthorized: { status: 401, title: 'Authentication is missing or invalid' },
  session_expired: { status: 401, title: 'The session has expired or does not exist' },
  forbidden: { status: 403, title: 'The caller lacks the role this route requires' },
  no_grant: { status: 403, title: 'No grant allows this service to obtain this token' },
  scope_not_granted: { status: 403, title: 'The requested scopes exceed what the grant allows' },
  provider_not_allowed: { status: 403, title: 'The session does not allow this provider' },
  cross_site_request: {
    status: 403,
    title: "A connect flow can only be started from linkvault's own pages",
  },
  not_found: { status: 404, title: 'No such resource' },
  link_not_found: { status: 404, title: 'No such link' },
  provider_not_found: { status: 404, title: 'No such provider, or it is not enabled' },
  grant_not_found: { status: 404, title: 'No such grant' },
  revocation_not_found: { status: 404, title: 'No revocation record for this link' },
  job_not_found: { status: 404, title: 'No such job' },
  webhook_endpoint_not_found: { status: 404, title: 'No such webhook endpoint' },
  confirmation_not_found: {
    status: 404,
    title: 'No pending connection has this confirmation id (unknown, used or expired)',
  },
  method_not_allowed: { status: 405, title: 'Method not allowed on this route' },
  not_acceptable: { status: 406, title: 'No acceptable representation' },
  reauth_required: { status: 409, title: 'The link needs the user to reconnect' },
  refresh_not_possible: {
    status: 409,
    title: 'The link has no refresh token; force_refresh cannot be honoured',
  },
  conflict: { status: 409, title: 'The resource changed concurrently; retry' },
  confirmation_mismatch: {
    status: 409,
    title: "The confirmation is not the session's tenant and user; the pending link was discarded",
  },
  link_revoked: { status: 410, title: 'The link has been revoked' },
  payload_too_large: { status: 413, title: 'The request body is too large' },
  unsupported_media_type: { status: 415, title: 'The request body must be application/json' },
  scope_exceeds_link: { status: 422, title: 'The grant asks for scopes the link was not granted' },
  grant_never_matches: { status: 422, title: 'The grant could never match a link' },
  rate_limited: { status: 429, title: 'Too many requests' },
  internal_error: { status: 500, title: 'Internal error' },
  provider_error: { status: 502, title: 'The provider answered with an error' },
  provider_unavailable: { status: 503, title: 'The provider is unavailable; retry later' },
  provider_misconfigured: { status: 503, title: 'The provider rejected our client configuration' },
  store_unavailable: { status: 503, title: 'The store is unavailable; retry later' },
  key_service_unavailable: { status: 503, title: 'The key service is unavailable; retry later' },
  audit_unavailable: { status: 503, title: 'The audit log is unavailable; nothing was released' },
  sealed_record_invalid: { status: 500, title: 'Internal error' },
  shutting_down: { status: 503, title: 'The service is shutting down' },
  not_ready: { status: 503, title: 'A dependency of the service is not ready' },
  authorization_code_rejected: {
    status: 400,
    title:
      'The provider refused the authorization code (expired, already used, or from another flow); connect again',
  },
  proxy_not_allowed: {
    status: 403,
    title: "No grant's proxy rules allow this method and path for this link",
  },
  proxy_target_refused: {
    status: 502,
    title: "The provider API target is not one of the catalogue's hosts; nothing was sent",
  },
  proxy_timeout: { status: 504, title: "The provider's API did not answer within the time limit" },
} as const satisfies Record<string, CatalogueEntry>;

export type ErrorCode = keyof typeof ERROR_CATALOGUE;

export interface LinkvaultErrorOptions {
  /** Safe, user-facing detail. Never put token material, secrets or internals here. */
  detail?: string | undefined;
  /** The underlying error; logged, never sent. */
  cause?: unknown;
  /** Seconds for a Retry-After header on 429/503. */
  retryAfterSeconds?: number;
  /** Extra safe members for the problem body (e.g. the failing parameter name). */
  extra?: Readonly<Record<string, string | number | boolean>> | undefined;
}

export class LinkvaultError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly title: string;
  readonly detail: string | undefined;
  readonly retryAfterSeconds: number | undefined;
  readonly extra: Readonly<Record<string, string | number | boolean>> | undefined;

  constructor(code: ErrorCode, options: LinkvaultErrorOptions = {}) {
    const entry: CatalogueEntry = ERROR_CATALOGUE[code];
    super(
      options.detail ? `${code}: ${options.detail}` : code,
      options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = 'LinkvaultError';
    this.code = code;
    this.status = entry.status;
    this.title = entry.title;
    this.detail = options.detail;
    this.retryAfterSeconds = options.retryAfterSeconds;
    this.extra = options.extra;
  }
}

/** True when `err` is a LinkvaultError with the given code (or any code when omitted). */
export function isLinkvaultError(err: unknown, code?: ErrorCode): err is LinkvaultError {
  return err instanceof LinkvaultError && (code === undefined || err.code === code);
}

/** Problem type URI for a code; stable and documented in docs/errors.md. */
export function problemType(code: ErrorCode): string {
  return `https://linkvault.dev/problems/${code.replaceAll('_', '-')}`;
}

/**
 * 400 invalid_request naming the offending parameter (when there is one). `detail` is safe text
 * written by us; the caller's value is never echoed.
 */
export function invalidRequest(parameter: string | null, detail: string): LinkvaultError {
  return new LinkvaultError('invalid_request', {
    detail,
    ...(parameter === null ? {} : { extra: { parameter } }),
  });
}
