import * as client from 'openid-client';
import type { ProviderCredentials } from '../config.js';
import { LinkvaultError } from '../errors.js';
import type { ProviderEntry } from '../providers/catalogue.js';
import type { Secret } from '../secret.js';
import type { RevocationOutcome } from './oauth-client.js';
import type { ProviderCall } from './provider-call.js';

/*
 * The catalogue's revocation styles (catalogue-entry.ts RevocationStyle). Each resolves
 * 'confirmed' or throws; the caller classifies what was thrown from the facts in the ProviderCall.
 */

export interface RevocationTarget {
  readonly entry: ProviderEntry;
  readonly credentials: ProviderCredentials;
  readonly token: Secret;
}

function isJsonObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * RFC 7009 through openid-client. `run` performs the call inside a classified ProviderCall and
 * throws the port's LinkvaultError.
 */
export async function revokeByRfc7009(
  target: Pick<RevocationTarget, 'entry' | 'token'>,
  cfg: client.Configuration,
  tokenTypeHint: string,
  run: (call: () => Promise<void>) => Promise<void>,
): Promise<RevocationOutcome> {
  if (!cfg.serverMetadata().revocation_endpoint) {
    throw new LinkvaultError('provider_misconfigured', {
      detail: `${target.entry.name} publishes no revocation endpoint`,
    });
  }
  try {
    await run(() =>
      client.tokenRevocation(cfg, target.token.reveal(), { token_type_hint: tokenTypeHint }),
    );
    return 'confirmed';
  } catch (err) {
    // RFC 7009 §2.2 says an invalid token gets 200; Salesforce and Zoho answer 400 invalid_token instead.
    if (
      err instanceof LinkvaultError &&
      err.code === 'provider_error' &&
      err.extra?.provider_error === 'invalid_token'
    )
      return 'confirmed';
    throw err;
  }
}

/** The non-RFC 7009 styles, sent through the provider fetch inside `call`; notes Slack's ok:false outcomes in `call`. */
export async function revokeByCustomStyle(
  target: RevocationTarget,
  url: string,
  send: client.CustomFetch,
  call: ProviderCall,
): Promise<RevocationOutcome> {
  const { entry, credentials, token } = target;
  const headers: Record<string, string> = {};
  let method = 'POST';
  let body: string | undefined;
  switch (entry.revocation.style) {
    case 'github_grant':
      // GitHub REST "Delete an app authorization": Basic client auth, the token in the JSON body (never the URL).
      method = 'DELETE';
      headers.authorization = `Basic ${Buffer.from(`${credentials.clientId}:${credentials.clientSecret}`).toString('base64')}`;
      headers.accept = 'application/vnd.github+json';
      headers['content-type'] = 'application/json';
      headers['x-github-api-version'] = '2022-11-28';
      body = JSON.stringify({ access_token: token.reveal() });
      break;
    case 'slack_auth_revoke':
      headers.authorization = `Bearer ${token.reveal()}`;
      headers['content-type'] = 'application/x-www-form-urlencoded';
      body = '';
      break;
    case 'intercom_uninstall':
      headers.authorization = `Bearer ${token.reveal()}`;
      headers.accept = 'application/json';
      headers['content-type'] = 'application/json';
      body = '{}';
      break;
    default:
      throw new LinkvaultError('internal_error', {
        detail: `no revocation implementation for style ${entry.revocation.style}`,
      });
  }
  const response = await send(url, { method, headers, body, redirect: 'manual' });
  const status = response.status;
  if (entry.revocation.style === 'slack_auth_revoke' && status === 200) {
    const json: unknown = await response.json().catch(() => null);
    if (isJsonObject(json) && json.ok === true) return 'confirmed';
    const error = isJsonObject(json) && typeof json.error === 'string' ? json.error : 'unknown';
    // A token Slack no longer knows is as revoked as it gets (RFC 7009 §2.2 treats it the same way).
    if (
      error === 'invalid_auth' ||
      error === 'token_revoked' ||
      error === 'token_expired' ||
      error === 'account_inactive'
    )
      return 'confirmed';
    if (error === 'ratelimited') call.status = 429;
    else call.errorCode = 'unknown';
    throw new Error(`slack auth.revoke answered ok:false`);
  }
  if (status >= 200 && status < 300) return 'confirmed';
  // A Bearer-authenticated revocation refused with 401: the token is already dead.
  if (status === 401 && entry.revocation.style === 'intercom_uninstall') return 'confirmed';
  throw new Error(`revocation answered HTTP ${status}`);
}
