import express, { type RequestHandler } from 'express';
import { LinkvaultError } from '../errors.js';
import { CONTENT_TYPE_MISSING } from './problem.js';

/** Bodies of this API are small JSON objects; anything bigger is refused before it is buffered. */
export const JSON_BODY_LIMIT_BYTES = 16 * 1024;

const JSON_TYPES = ['application/json', 'application/*+json'];

/**
 * Paths whose bodies are not ours to type: a provider may answer an authorization request with
 * response_mode=form_post (OAuth 2.0 Form Post Response Mode), which the connect flow parses itself;
 * the built-in Sandbox CRM (node-oidc-provider) reads its own form-encoded token, revocation and login posts.
 */
const FOREIGN_BODY_PREFIXES = ['/v1/oauth/callback/', '/sandbox/'];

function isForeign(path: string): boolean {
  return FOREIGN_BODY_PREFIXES.some((p) => path.startsWith(p));
}

/**
 * JSON body parsing with a strict content type: a request body must be declared JSON
 * (415 unsupported_media_type otherwise); bad JSON → 400, over the limit → 413 (problem.ts maps
 * body-parser's error types). An empty body without Content-Type is accepted (fetch and curl send
 * POSTs without a body that way); a request without a body leaves `req.body` undefined.
 */
export function parseJsonBody(): RequestHandler[] {
  const requireJson: RequestHandler = (req, _res, next) => {
    if (isForeign(req.path)) return next();
    // req.is → null when there is no body, false when the body has another declared type.
    if (req.get('content-type') !== undefined && req.is(JSON_TYPES) === false) return next(new LinkvaultError('unsupported_media_type'));
    next();
  };
  const json = express.json({ limit: JSON_BODY_LIMIT_BYTES, strict: true, type: JSON_TYPES });
  // Reads an untyped body only to prove it is empty; any byte in it is a 415.
  const untyped = express.raw({
    limit: JSON_BODY_LIMIT_BYTES,
    type: (req) => !isForeign((req as express.Request).path) && req.headers['content-type'] === undefined,
    verify: (_req, _res, buf) => {
      if (buf.length > 0) throw Object.assign(new Error('request body without Content-Type'), { type: CONTENT_TYPE_MISSING });
    },
  });
  const dropEmpty: RequestHandler = (req, _res, next) => {
    if (Buffer.isBuffer(req.body)) req.body = undefined;
    next();
  };
  return [requireJson, json, untyped, dropEmpty];
}
