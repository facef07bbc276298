import { randomUUID } from 'node:crypto';
import type { RequestHandler } from 'express';

declare global {
  namespace Express {
    interface Request {
      /** Set by assignRequestId before any route runs; echoed as X-Request-Id and put in problem bodies and audit events. */
      requestId: string;
    }
  }
}

export const REQUEST_ID_HEADER = 'X-Request-Id';

/**
 * An inbound id is kept only when it is short and made of characters that cannot break a log
 * line, a header or a JSON string; anything else is replaced, so a caller cannot inject into logs.
 */
const SAFE_REQUEST_ID = /^[A-Za-z0-9._:+=/-]{1,128}$/;

/** True when an inbound X-Request-Id may be reused as it is. */
export function isSafeRequestId(value: string | undefined): value is string {
  return value !== undefined && SAFE_REQUEST_ID.test(value);
}

/** The id a request goes by: its inbound X-Request-Id when safe, else a fresh one. */
export function requestIdFrom(inbound: string | string[] | undefined): string {
  return typeof inbound === 'string' && isSafeRequestId(inbound) ? inbound : randomUUID();
}

/** Middleware: accepts a safe inbound X-Request-Id or generates one, and echoes it on every response. */
export function assignRequestId(): RequestHandler {
  return (req, res, next) => {
    req.requestId = requestIdFrom(req.headers['x-request-id']);
    res.setHeader(REQUEST_ID_HEADER, req.requestId);
    next();
  };
}
