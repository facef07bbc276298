import type { ErrorRequestHandler, Request, Response } from 'express';
import type { Logger } from 'pino';
import { LinkvaultError, isLinkvaultError, problemType, type ErrorCode } from '../errors.js';

/**
 * The one error handler. Every failure leaves as RFC 9457 problem+json:
 * `{type, title, status, code, detail?, request_id, ...extra}`. A LinkvaultError's detail and
 * extra are written to be safe to send; anything else becomes a bare 500 internal_error whose
 * cause only goes to the log (RFC 9457 §5: problem details are not a debugging tool).
 */

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

/**
 * Codes whose detail describes linkvault's own machinery (a key that does not open, Redis timing
 * out, the audit key row, a seal identity): "5xx bodies say nothing internal" (docs/errors.md), so
 * for these the body is the catalogue's title alone and the detail stays in the log (the error's
 * message). Every 500 is such a code; provider-side 502/503s keep their detail, which is about the
 * provider and is what the caller needs to act.
 */
const INTERNAL_DETAIL_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'store_unavailable',
  'key_service_unavailable',
  'audit_unavailable',
]);

/** The problem body for an error; `extra` members never override the standard ones. */
export function problemBody(err: LinkvaultError, requestId: string): Record<string, unknown> {
  if (err.status === 500 || INTERNAL_DETAIL_CODES.has(err.code)) {
    return {
      type: problemType(err.code),
      title: err.title,
      status: err.status,
      code: err.code,
      request_id: requestId,
    };
  }
  return {
    ...(err.extra ?? {}),
    type: problemType(err.code),
    title: err.title,
    status: err.status,
    code: err.code,
    ...(err.detail === undefined ? {} : { detail: err.detail }),
    request_id: requestId,
  };
}

/** The Retry-After header value an error asks for, if any. */
export function retryAfterOf(err: LinkvaultError): string | undefined {
  return err.retryAfterSeconds === undefined
    ? undefined
    : String(Math.max(0, Math.ceil(err.retryAfterSeconds)));
}

/**
 * Logs a failed request, the cause included (it never goes to the caller). A 502, 503 or 504 is a
 * dependency's fault (the provider, the store, the key service) and is retried, so it is a warning;
 * any other 5xx is ours and an error; a 4xx is the caller's and only debug.
 */
export function logProblem(log: Logger, problem: LinkvaultError, requestId: string): void {
  const status = problem.status;
  const level = status < 500 ? 'debug' : status >= 502 && status <= 504 ? 'warn' : 'error';
  if (!log.isLevelEnabled(level)) return;
  log[level](
    { request_id: requestId, error_code: problem.code, status, err: problem.cause ?? problem },
    status < 500 ? 'request rejected' : 'request failed',
  );
}

/** Sends `err` as problem+json (with Retry-After when the error carries one). */
export function sendProblem(
  req: Request,
  res: Response,
  err: LinkvaultError,
  members: Readonly<Record<string, unknown>> = {},
): void {
  const retryAfter = retryAfterOf(err);
  if (retryAfter !== undefined) res.setHeader('Retry-After', retryAfter);
  res
    .status(err.status)
    .type(PROBLEM_CONTENT_TYPE)
    .send(JSON.stringify({ ...problemBody(err, req.requestId), ...members }));
}

/** Error type json-body.ts raises for a non-empty body sent without any Content-Type. */
export const CONTENT_TYPE_MISSING = 'linkvault.content_type.missing';

/** body-parser's error `type` → our code. Matched by the library's code, never by its message. */
const BODY_PARSER_CODES: Readonly<Record<string, { code: ErrorCode; detail: string }>> = {
  'entity.too.large': {
    code: 'payload_too_large',
    detail: 'The request body exceeds the size limit',
  },
  'entity.parse.failed': { code: 'invalid_request', detail: 'The request body is not valid JSON' },
  'entity.verify.failed': { code: 'invalid_request', detail: 'The request body was rejected' },
  'encoding.unsupported': {
    code: 'unsupported_media_type',
    detail: 'The request body encoding is not supported',
  },
  'charset.unsupported': {
    code: 'unsupported_media_type',
    detail: 'The request body must be UTF-8 JSON',
  },
  'request.aborted': {
    code: 'invalid_request',
    detail: 'The request body was not received completely',
  },
  'request.size.invalid': {
    code: 'invalid_request',
    detail: 'The request body length does not match Content-Length',
  },
  'parameters.too.many': { code: 'invalid_request', detail: 'The request has too many parameters' },
  [CONTENT_TYPE_MISSING]: {
    code: 'unsupported_media_type',
    detail: 'A request body needs Content-Type: application/json',
  },
};

/** http-errors style status (router's URI decoding failures, body-parser) → our code. */
const CLIENT_STATUS_CODES: Readonly<Record<number, ErrorCode>> = {
  400: 'invalid_request',
  404: 'not_found',
  405: 'method_not_allowed',
  406: 'not_acceptable',
  413: 'payload_too_large',
  415: 'unsupported_media_type',
};

/** Translates any thrown value into a LinkvaultError; unknown errors become internal_error carrying the cause. */
export function toLinkvaultError(err: unknown): LinkvaultError {
  if (isLinkvaultError(err)) return err;
  if (typeof err === 'object' && err !== null) {
    const { type, status, expose } = err as { type?: unknown; status?: unknown; expose?: unknown };
    if (typeof type === 'string' && BODY_PARSER_CODES[type]) {
      const { code, detail } = BODY_PARSER_CODES[type];
      // body-parser attaches the raw body to its errors; it may hold secrets, so it is not kept as the cause.
      return new LinkvaultError(code, { detail });
    }
    // Only errors the library marks as safe to expose (4xx http-errors, and the router's
    // undecodable-parameter URIError, status 400) keep their status.
    const exposable = expose === true || err instanceof URIError;
    if (exposable && typeof status === 'number' && CLIENT_STATUS_CODES[status]) {
      return new LinkvaultError(CLIENT_STATUS_CODES[status], { cause: err });
    }
  }
  return new LinkvaultError('internal_error', { cause: err });
}

/** The Express error handler: problem+json out, cause to the log. Mount it last. */
export function createProblemHandler(deps: { log: Logger }): ErrorRequestHandler {
  return (err, req, res, next) => {
    const problem = toLinkvaultError(err);
    logProblem(deps.log, problem, req.requestId);
    if (res.headersSent) {
      // Too late for a problem body: let Express close the connection so the client sees a truncated response.
      next(err);
      return;
    }
    sendProblem(req, res, problem);
  };
}
