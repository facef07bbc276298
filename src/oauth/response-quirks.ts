import type { ProviderEntry } from '../providers/catalogue.js';
import type { ProviderCall } from './provider-call.js';

/*
 * Rewrites token and revocation endpoint answers into RFC 6749 shape according to the entry's
 * `token_response` style, so that openid-client and the failure classification see one protocol:
 *   - Slack answers HTTP 200 with ok:false and its own error names; its `bot`/`user` token types
 *     are Slack's names for Bearer tokens and are accepted for Slack only;
 *   - GitHub answers form-encoded unless asked for JSON, and may report errors as 200 + `error`;
 *   - a token response WITHOUT token_type is accepted as bearer (RFC 6749 §5.1 makes it required,
 *     but several catalogue providers omit it and every one of them issues Bearer tokens);
 *   - plain OAuth 2.0 entries never yield an ID token: one that arrives unasked is dropped unread.
 */

/** Statuses whose Response must be built without a body. */
export const NULL_BODY_STATUSES = new Set([101, 204, 205, 304]);

/** Slack and GitHub error names → the RFC 6749 code they mean (everything else stays as given, then 'unknown'). */
const PROVIDER_ERROR_ALIASES: Readonly<Record<string, string>> = {
  // Slack oauth.v2.access
  invalid_code: 'invalid_grant',
  code_already_used: 'invalid_grant',
  code_expired: 'invalid_grant',
  bad_redirect_uri: 'invalid_grant',
  invalid_refresh_token: 'invalid_grant',
  token_revoked: 'invalid_grant',
  token_expired: 'invalid_grant',
  invalid_client_id: 'invalid_client',
  bad_client_secret: 'invalid_client',
  invalid_grant_type: 'unsupported_grant_type',
  oauth_authorization_url_mismatch: 'invalid_grant',
  // GitHub
  bad_verification_code: 'invalid_grant',
  bad_refresh_token: 'invalid_grant',
  redirect_uri_mismatch: 'invalid_grant',
  incorrect_client_credentials: 'invalid_client',
  unsupported_grant_type: 'unsupported_grant_type',
};

function mapProviderErrorName(name: string): string {
  return PROVIDER_ERROR_ALIASES[name] ?? name;
}

function isJsonObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function jsonResponse(status: number, body: Record<string, unknown>, from: Headers): Response {
  const headers = new Headers(from);
  headers.set('content-type', 'application/json');
  headers.delete('content-length');
  headers.delete('content-encoding');
  return new Response(JSON.stringify(body), { status, headers });
}

/** The request headers with the entry's quirks applied. */
export function addQuirkHeaders(
  entry: ProviderEntry,
  headers: Record<string, string>,
): Record<string, string> {
  // GitHub answers form-encoded unless asked for JSON.
  if (entry.tokenResponse === 'github') return { ...headers, accept: 'application/json' };
  return headers;
}

/** Rewrites a token/revocation endpoint answer into RFC 6749 shape, noting error codes and remapped statuses in `call`. */
export function applyResponseQuirks(
  call: ProviderCall,
  response: Response,
  bytes: Uint8Array,
): Response {
  const { entry } = call;
  const status = response.status;
  // RFC 7009 §2.2: the content of a successful revocation answer is ignored; some providers answer 204.
  if (
    call.kind === 'revoke' &&
    entry.revocation.style === 'rfc7009' &&
    status >= 200 &&
    status < 300
  )
    return new Response(null, { status: 200 });
  if (NULL_BODY_STATUSES.has(status)) return new Response(null, response);
  const contentType = (response.headers.get('content-type') ?? '').toLowerCase();
  const text = new TextDecoder().decode(bytes);
  let json: Record<string, unknown> | null = null;
  if (contentType.includes('json')) {
    try {
      const parsed: unknown = JSON.parse(text);
      if (isJsonObject(parsed)) json = parsed;
    } catch {
      json = null;
    }
  } else if (
    entry.tokenResponse === 'github' &&
    contentType.includes('application/x-www-form-urlencoded')
  ) {
    json = Object.fromEntries(new URLSearchParams(text));
  }
  if (json === null) return new Response(bytes, response);

  if (status >= 400 && typeof json.error === 'string') {
    json = { ...json, error: mapProviderErrorName(json.error) };
    call.errorCode = json.error as string;
    return jsonResponse(status, json, response.headers);
  }
  if (call.kind === 'authorization_code' || call.kind === 'refresh') {
    // Slack: every answer is HTTP 200; errors are ok:false with Slack's own error name.
    if (entry.tokenResponse === 'slack' && json.ok === false) {
      const name = typeof json.error === 'string' ? json.error : 'unknown';
      if (name === 'ratelimited') {
        call.status = 429;
        return jsonResponse(429, { error: 'temporarily_unavailable' }, response.headers);
      }
      call.errorCode = mapProviderErrorName(name);
      call.status = 400;
      return jsonResponse(400, { error: call.errorCode }, response.headers);
    }
    // GitHub: errors may come back as HTTP 200 with an `error` member.
    if (status < 300 && typeof json.error === 'string' && json.access_token === undefined) {
      call.errorCode = mapProviderErrorName(json.error);
      call.status = 400;
      return jsonResponse(400, { error: call.errorCode }, response.headers);
    }
    if (status < 300 && json.access_token !== undefined) {
      json = { ...json };
      if (json.token_type === undefined) json.token_type = 'Bearer';
      if (
        entry.tokenResponse === 'slack' &&
        (json.token_type === 'bot' || json.token_type === 'user')
      )
        json.token_type = 'Bearer';
      if (entry.issuer === null) delete json.id_token;
      return jsonResponse(status, json, response.headers);
    }
  }
  return jsonResponse(status, json, response.headers);
}
