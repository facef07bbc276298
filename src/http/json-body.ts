import type { IncomingHttpHeaders } from 'node:http';
import express, { type Request, type RequestHandler } from 'express';
import { LinkvaultError } from '../errors.js';
import { CONTENT_TYPE_MISSING } from './problem.js';

/** Bodies of this API are small JSON objects; anything bigger is refused before it is buffered. */
export const JSON_BODY_LIMIT_BYTES = 16 * 1024;

const JSON_TYPES = ['application/json', 'application/*+json'];

/**
 * The JSON API is /v1/*. Everything else parses its own bodies: the built-in sandbox OAuth
 * provider (form posts, and a token endpoint that takes application/x-www-form-urlencoded per
 * RFC 6749 §4.1.3) and the web pages. Under /v1, the OAuth callback is excluded too: a provider
 * may answer with response_mode=form_post (OAuth 2.0 Form Post Response Mode).
 */
function isJsonApi(req: Request): boolean {
  return req.path.startsWith('/v1/') && !req.path.startsWith('/v1/oauth/callback/');
}

/**
 * True when the request carries no content: `Content-Length: 0`, or neither Content-Length nor
 * Transfer-Encoding (RFC 9112 §6.3: such a request has no content). Whatever Content-Type it
 * declares, there is no body to be of that type.
 */
export function hasNoContent(headers: IncomingHttpHeaders): boolean {
  if (headers['transfer-encoding'] !== undefined) return false;
  const length = headers['content-length'];
  return length === undefined || (/^\d{1,6}$/.test(length) && Number(length) === 0);
}

/**
 * JSON body parsing for the API with a strict content type: a request body must be declared
 * JSON (415 unsupported_media_type otherwise); bad JSON → 400, over the limit → 413 (problem.ts
 * maps body-parser's error types). An empty body is no body, whatever it declares: clients send
 * POSTs without a body as `Content-Length: 0` with no type (curl -X POST), `text/plain` (fetch with
 * `body: ''`) or a form type (curl -d ''). It leaves `req.body` undefined (`{}` when typed JSON), and
 * routes whose body is optional (the token route) treat it as `{}`; routes that need a body refuse
 * it themselves (400).
 */
export function parseJsonBody(): RequestHandler[] {
  const requireJson: RequestHandler = (req, _res, next) => {
    if (!isJsonApi(req)) return next();
    // req.is → null when there is no body, false when the body has another declared type.
    if (
      req.get('content-type') !== undefined &&
      !hasNoContent(req.headers) &&
      req.is(JSON_TYPES) === false
    )
      return next(new LinkvaultError('unsupported_media_type'));
    next();
  };
  const json = express.json({
    limit: JSON_BODY_LIMIT_BYTES,
    strict: true,
    type: (req) => isJsonApi(req as Request) && typeof (req as Request).is(JSON_TYPES) === 'string',
  });
  // Reads an untyped API body only to prove it is empty; any byte in it is a 415.
  const untyped = express.raw({
    limit: JSON_BODY_LIMIT_BYTES,
    type: (req) => isJsonApi(req as Request) && req.headers['content-type'] === undefined,
    verify: (_req, _res, buf) => {
      if (buf.length > 0)
        throw Object.assign(new Error('request body without Content-Type'), {
          type: CONTENT_TYPE_MISSING,
        });
    },
  });
  const dropEmpty: RequestHandler = (req, _res, next) => {
    if (isJsonApi(req) && Buffer.isBuffer(req.body)) req.body = undefined;
    next();
  };
  return [requireJson, json, untyped, dropEmpty];
}
