/**
 * linkvault answers errors as RFC 9457 problem+json with a stable `code` (docs/errors.md). The SDK
 * raises them as LinkvaultApiError; branch on `code`, never on the message.
 */

/** The codes linkvault documents (docs/errors.md); a newer server may send others. */
export type LinkvaultErrorCode =
  | 'invalid_request'
  | 'invalid_return_to'
  | 'unauthorized'
  | 'session_expired'
  | 'forbidden'
  | 'no_grant'
  | 'scope_not_granted'
  | 'provider_not_allowed'
  | 'not_found'
  | 'link_not_found'
  | 'provider_not_found'
  | 'grant_not_found'
  | 'revocation_not_found'
  | 'job_not_found'
  | 'method_not_allowed'
  | 'reauth_required'
  | 'refresh_not_possible'
  | 'conflict'
  | 'confirmation_mismatch'
  | 'link_revoked'
  | 'payload_too_large'
  | 'unsupported_media_type'
  | 'scope_exceeds_link'
  | 'grant_never_matches'
  | 'invalid_webhook_url'
  | 'rate_limited'
  | 'internal_error'
  | 'provider_error'
  | 'invalid_token_response'
  | 'provider_unavailable'
  | 'provider_misconfigured'
  | 'store_unavailable'
  | 'key_service_unavailable'
  | 'audit_unavailable'
  | 'shutting_down'
  | 'not_ready'
  | 'webhook_endpoint_not_found'
  | 'proxy_not_allowed'
  | 'proxy_target_refused'
  | 'proxy_timeout'
  | (string & {});

export interface ProblemDetails {
  readonly type?: string;
  readonly title?: string;
  readonly status?: number;
  readonly code?: string;
  readonly detail?: string;
  readonly request_id?: string;
  readonly [member: string]: unknown;
}

export class LinkvaultApiError extends Error {
  /** The stable error code (`problem.code`), or `http_<status>` when the answer was not problem+json. */
  readonly code: LinkvaultErrorCode;
  readonly status: number;
  /** linkvault's request id (X-Request-Id): quote it when asking about this failure. */
  readonly requestId: string | null;
  /** Retry-After in seconds, when the answer carried one (429, 503). */
  readonly retryAfterSeconds: number | null;
  readonly problem: ProblemDetails | null;

  constructor(options: {
    status: number;
    problem: ProblemDetails | null;
    requestId: string | null;
    retryAfterSeconds: number | null;
  }) {
    const { status, problem } = options;
    const code = typeof problem?.code === 'string' ? problem.code : `http_${status}`;
    super(
      `linkvault answered ${status} ${code}${problem?.detail ? `: ${problem.detail}` : problem?.title ? `: ${problem.title}` : ''}`,
    );
    this.name = 'LinkvaultApiError';
    this.code = code;
    this.status = status;
    this.requestId = options.requestId ?? problem?.request_id ?? null;
    this.retryAfterSeconds = options.retryAfterSeconds;
    this.problem = problem;
  }
}

/** Whether `err` is a LinkvaultApiError with the given code. */
export function isLinkvaultError(
  err: unknown,
  code?: LinkvaultErrorCode,
): err is LinkvaultApiError {
  return err instanceof LinkvaultApiError && (code === undefined || err.code === code);
}
