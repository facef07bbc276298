import { pino, type DestinationStream, type Logger } from 'pino';
import type { Config } from './config.js';

/**
 * The process logger: pino, JSON lines. Two layers keep secrets out of logs:
 * request fields are logged by allowlist (http/observe-requests.ts never logs a query string,
 * a body or a header outside HEADER_ALLOWLIST), and the `redact` paths below censor the
 * well-known secret field names wherever a caller puts them anyway. Tokens themselves travel
 * as Secret (src/secret.ts), which serialises as [redacted] on its own.
 */

/** Field names that carry secrets in OAuth, OIDC and our own API (RFC 6749 §10.3, §10.5; RFC 7636 §7.1). */
export const SECRET_FIELD_NAMES = [
  'authorization',
  'cookie',
  'set-cookie',
  'proxy-authorization',
  'access_token',
  'refresh_token',
  'id_token',
  'code',
  'state',
  'nonce',
  'code_verifier',
  'client_secret',
  'client_assertion',
  'session_token',
  'session',
  'password',
  'secret',
  'token',
  'accessToken',
  'refreshToken',
  'idToken',
  'codeVerifier',
  'clientSecret',
  'sessionToken',
  'plaintext',
] as const;

/**
 * Names redacted only below the top level: at the top of a log line `code` and `state` are our
 * own error codes and link states (`{ code: 'store_unavailable' }`); inside an object (a parsed
 * query, a provider response, an error's fields) they are the authorization code and state.
 */
const NESTED_ONLY = new Set<string>(['code', 'state']);

/** Property paths for pino `redact`: each name at the top level and up to three levels deep (pino's `*` spans one level). */
function redactPaths(): string[] {
  const paths: string[] = [];
  for (const name of SECRET_FIELD_NAMES) {
    const key = /^[A-Za-z_$][\w$]*$/.test(name) ? name : `["${name}"]`;
    const child = key.startsWith('[') ? key : `.${key}`;
    if (!NESTED_ONLY.has(name)) paths.push(key);
    paths.push(`*${child}`, `*.*${child}`, `*.*.*${child}`);
  }
  return paths;
}

export interface LoggerOptions {
  readonly level: Config['logLevel'];
  /** Where lines go; stdout when omitted. Tests pass a stream to read what was logged. */
  readonly destination?: DestinationStream;
}

/** Builds the process logger with secret redaction (censor '[redacted]', as Secret prints). */
export function createLogger(options: LoggerOptions): Logger {
  return pino(
    {
      level: options.level,
      base: { service: 'linkvault' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: redactPaths(), censor: '[redacted]' },
      // `err` keeps pino's serializer (type, message, stack, cause chain); LinkvaultError's
      // message is `code: detail`, which never carries token material by the catalogue's rule.
      serializers: { err: pino.stdSerializers.err },
    },
    options.destination,
  );
}
