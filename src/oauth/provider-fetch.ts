import type * as client from 'openid-client';
import type { ProviderCall } from './provider-call.js';
import { NULL_BODY_STATUSES, addQuirkHeaders, applyResponseQuirks } from './response-quirks.js';

/*
 * Every HTTP request to a provider goes through this one fetch, which
 *   - bounds the request with the provider timeout (AbortSignal), never retries;
 *   - records what happened on the wire (sent or not, status, Retry-After) in the current
 *     ProviderCall;
 *   - caps response bodies (RFC 9700 §4 "defensive parsing": larger token and revocation answers
 *     are refused as invalid_token_response);
 *   - hands token and revocation answers to the response quirks.
 */

/** Cap on token, revocation and custom-revocation answers. */
export const TOKEN_RESPONSE_MAX_BYTES = 64 * 1024;
/** Cap on discovery documents. */
export const DISCOVERY_MAX_BYTES = 512 * 1024;

/** Network failures that happen before any byte of the request could reach the provider. */
const NOT_DELIVERED_CODES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
  'UND_ERR_CONNECT_TIMEOUT',
  'CERT_HAS_EXPIRED',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'ERR_SSL_WRONG_VERSION_NUMBER',
]);

class ResponseTooLarge extends Error {
  constructor() {
    super('response body over the size cap');
    this.name = 'ResponseTooLarge';
  }
}

export interface ProviderFetchOptions {
  /** Fetch implementation. */
  readonly fetch: typeof fetch;
  readonly timeoutMs: number;
  /** The port call this request belongs to; undefined outside one. */
  readonly currentCall: () => ProviderCall | undefined;
}

/** Parses Retry-After (delta-seconds or HTTP-date, RFC 9110 §10.2.3) into whole seconds ≥ 0. */
export function parseRetryAfter(
  value: string | null,
  nowMs: number = Date.now(),
): number | undefined {
  if (value === null) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Math.min(Number(text), 86_400);
  const at = Date.parse(text);
  if (Number.isNaN(at)) return undefined;
  return Math.min(Math.max(0, Math.ceil((at - nowMs) / 1000)), 86_400);
}

/** The string `code` of a Node, undici or openid-client error, if it has one. */
export function errorCodeOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

async function readCapped(response: Response, maxBytes: number): Promise<Uint8Array> {
  const declared = Number(response.headers.get('content-length') ?? NaN);
  if (Number.isFinite(declared) && declared > maxBytes) {
    await response.body?.cancel().catch(() => undefined);
    throw new ResponseTooLarge();
  }
  if (!response.body) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw new ResponseTooLarge();
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.byteLength;
  }
  return out;
}

function transportFailure(err: unknown): ProviderCall['transport'] {
  const name = (err as { name?: unknown } | null)?.name;
  if (name === 'TimeoutError' || name === 'AbortError') return 'timeout';
  for (
    let e: unknown = err, depth = 0;
    e && depth < 5;
    e = (e as { cause?: unknown }).cause, depth++
  ) {
    const code = errorCodeOf(e);
    if (code && NOT_DELIVERED_CODES.has(code)) return 'refused';
    const n = (e as { name?: unknown }).name;
    if (n === 'TimeoutError' || n === 'AbortError') return 'timeout';
  }
  return 'lost';
}

/** Builds the fetch given to openid-client and used for the custom revocation styles. */
export function createProviderFetch(options: ProviderFetchOptions): client.CustomFetch {
  const { fetch: fetchImpl, timeoutMs, currentCall } = options;
  return async (url, init) => {
    const call = currentCall();
    if (!call) throw new Error('provider request outside a port call');
    const headers = addQuirkHeaders(call.entry, { ...init.headers });
    const ownTimeout = AbortSignal.timeout(timeoutMs);
    const signal = init.signal ? AbortSignal.any([init.signal, ownTimeout]) : ownTimeout;
    call.requests += 1;
    let response: Response;
    try {
      response = await fetchImpl(url, { ...init, headers, signal } as RequestInit);
    } catch (err) {
      call.transport = transportFailure(err);
      throw err;
    }
    call.status = response.status;
    call.retryAfterSeconds = parseRetryAfter(response.headers.get('retry-after'));
    let bytes: Uint8Array;
    try {
      bytes = await readCapped(
        response,
        call.kind === 'discovery' ? DISCOVERY_MAX_BYTES : TOKEN_RESPONSE_MAX_BYTES,
      );
    } catch (err) {
      if (err instanceof ResponseTooLarge) call.tooLarge = true;
      else call.transport = transportFailure(err) === 'timeout' ? 'timeout' : 'lost';
      throw err;
    }
    if (call.kind === 'discovery')
      return new Response(NULL_BODY_STATUSES.has(response.status) ? null : bytes, response);
    return applyResponseQuirks(call, response, bytes);
  };
}
