import * as client from 'openid-client';
import { LinkvaultError } from '../errors.js';
import type { ProviderCall } from './provider-call.js';
import { DISCOVERY_MAX_BYTES, TOKEN_RESPONSE_MAX_BYTES, errorCodeOf } from './provider-fetch.js';

/*
 * The port's failure classification (oauth-client.ts header), from wire facts and RFC 6749 codes
 * only: openid-client's `ResponseBodyError.error`, the status and transport outcome the provider
 * fetch recorded, never a message text.
 *
 * extra.maybe_delivered on provider_unavailable: false when the request provably never reached
 * the provider (connection refused, DNS, TLS failure) or the provider said "not now" (429, 503);
 * true for timeouts, connections dropped mid-answer, and other 5xx (the provider may have acted,
 * e.g. rotated the refresh token, before failing).
 */

/** RFC 6749 §5.2 and RFC 7009 §2.2.1 token/revocation endpoint error codes; anything else is reported as 'unknown'. */
const TOKEN_ERROR_CODES = new Set([
  'invalid_request',
  'invalid_client',
  'invalid_grant',
  'unauthorized_client',
  'unsupported_grant_type',
  'invalid_scope',
  'unsupported_token_type',
  'invalid_token',
  'server_error',
  'temporarily_unavailable',
]);

/** A cause that can be logged: the library's error name/code and fixed message, never its attached bodies. */
function safeCause(err: unknown): Error {
  if (err instanceof LinkvaultError) return err;
  const name = (err as { name?: unknown } | null)?.name;
  const code = errorCodeOf(err);
  const message = err instanceof Error ? err.message : String(err);
  const e = new Error(
    `${typeof name === 'string' ? name : 'Error'}${code ? ` [${code}]` : ''}: ${message}`,
  );
  e.name = 'ProviderCallError';
  return e;
}

function unavailable(
  call: ProviderCall,
  cause: unknown,
  detail: string,
  maybeDelivered: boolean,
): LinkvaultError {
  return new LinkvaultError('provider_unavailable', {
    detail,
    cause: safeCause(cause),
    ...(call.retryAfterSeconds === undefined ? {} : { retryAfterSeconds: call.retryAfterSeconds }),
    extra: { maybe_delivered: maybeDelivered, provider_id: call.entry.id },
  });
}

function providerErrorCode(err: unknown, call: ProviderCall): string | null {
  return (err instanceof client.ResponseBodyError ? err.error : null) ?? call.errorCode;
}

/** Translates whatever a provider call threw into the LinkvaultError the port promises. */
export function classifyFailure(err: unknown, call: ProviderCall): LinkvaultError {
  if (err instanceof LinkvaultError) return err;
  const provider = call.entry.name;
  const code = providerErrorCode(err, call);
  const status = call.status;
  if (call.tooLarge) {
    return new LinkvaultError(
      call.kind === 'discovery' ? 'provider_misconfigured' : 'invalid_token_response',
      {
        detail: `${provider} answered with an oversized body`,
        cause: new Error(
          `response body over the ${call.kind === 'discovery' ? DISCOVERY_MAX_BYTES : TOKEN_RESPONSE_MAX_BYTES}-byte cap`,
        ),
      },
    );
  }
  if (call.transport !== null) {
    // RFC 9700 §4.14: a refresh that reached the provider may have rotated the refresh token.
    return unavailable(
      call,
      err,
      call.transport === 'timeout'
        ? `${provider} did not answer in time`
        : `${provider} could not be reached`,
      call.transport !== 'refused',
    );
  }
  if (status === 429) return unavailable(call, err, `${provider} is rate limiting`, false);
  if (status !== null && status >= 500)
    return unavailable(call, err, `${provider} answered ${status}`, status !== 503);
  if (code === 'invalid_grant' && call.kind !== 'discovery') {
    return new LinkvaultError('reauth_required', {
      detail: `${provider} no longer accepts this grant`,
      cause: safeCause(err),
    });
  }
  if (
    code === 'invalid_client' ||
    code === 'unauthorized_client' ||
    (status === 401 && code === null)
  ) {
    return new LinkvaultError('provider_misconfigured', {
      detail: `${provider} rejected our client configuration`,
      cause: safeCause(err),
    });
  }
  if (call.kind === 'discovery') {
    return new LinkvaultError('provider_misconfigured', {
      detail: `${provider} discovery failed`,
      cause: safeCause(err),
    });
  }
  if (code !== null || (status !== null && status >= 400)) {
    return new LinkvaultError('provider_error', {
      detail: `${provider} answered with an error`,
      cause: safeCause(err),
      extra: {
        provider_error: code !== null && TOKEN_ERROR_CODES.has(code) ? code : 'unknown',
        ...(status === null ? {} : { provider_status: status }),
      },
    });
  }
  if (
    status !== null &&
    status < 300 &&
    (call.kind === 'authorization_code' || call.kind === 'refresh')
  ) {
    // A 2xx answer openid-client refused: missing/odd members, bad ID token (iss, aud, exp, nonce), token type.
    return new LinkvaultError('invalid_token_response', {
      detail: `${provider} returned an unacceptable token response`,
      cause: safeCause(err),
    });
  }
  if (errorCodeOf(err) === 'OAUTH_TIMEOUT' || errorCodeOf(err) === 'OAUTH_ABORT') {
    return unavailable(call, err, `${provider} did not answer in time`, call.requests > 0);
  }
  if (status !== null) {
    return new LinkvaultError('provider_error', {
      detail: `${provider} answered unexpectedly`,
      cause: safeCause(err),
      extra: { provider_error: 'unknown', provider_status: status },
    });
  }
  return new LinkvaultError('internal_error', {
    detail: 'OAuth call failed before reaching the provider',
    cause: safeCause(err),
  });
}

/** The log line's fields for a failed provider call: wire facts and codes, never provider text or token material. */
export function failureLogFields(
  err: unknown,
  call: ProviderCall,
  result: LinkvaultError,
): Record<string, unknown> {
  const code = providerErrorCode(err, call);
  return {
    provider_id: call.entry.id,
    call: call.kind,
    status: call.status,
    // Provider-chosen text reaches the log only when it looks like an error code.
    provider_error:
      code === null ? null : /^[A-Za-z0-9_.-]{1,64}$/.test(code) ? code : 'unrecognised',
    code: result.code,
    transport: call.transport,
    library_code: errorCodeOf(err) ?? null,
  };
}
