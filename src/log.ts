import { pino, type DestinationStream, type Logger } from 'pino';
import type { Config } from './config.js';
import { LinkvaultError } from './errors.js';

/**
 * The process logger: pino, JSON lines. Secrets are kept out of logs by construction: request
 * fields are logged by allowlist (http/observe-requests.ts never logs a query string, a body or a
 * header but the user agent), tokens travel as Secret (src/secret.ts), which serialises as [redacted] on its own,
 * and errors, which can carry a provider's answer, are logged through serializeError. Two cheap
 * checks back that up: the well-known secret names are censored at the top level of a line, and
 * test/links/connect/canary.test.ts pushes known tokens through every path and greps the logs.
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
 * `code` and `state` are left out of the top-level paths: at the top of a log line they are our
 * own error codes and link states (`{ code: 'store_unavailable' }`), never an authorization code.
 */
const OUR_OWN_AT_TOP = new Set<string>(['code', 'state']);

/**
 * Exact top-level paths only. Wildcards (`*.token`, `*.*.token`) made pino copy and walk every
 * line at every depth: ~20 times the cost of the line itself, on every request line. Below the
 * top level, secrets are kept out by construction instead: request fields by allowlist, tokens as
 * Secret, provider answers only inside errors, which serializeError reduces to what they are.
 */
function redactPaths(): string[] {
  return SECRET_FIELD_NAMES.filter((name) => !OUR_OWN_AT_TOP.has(name)).map((name) =>
    /^[A-Za-z_$][\w$]*$/.test(name) ? name : `["${name}"]`,
  );
}

/** Error fields worth a log line that never carry what the error was about (bodies, headers, requests). */
const ERROR_FIELDS = ['type', 'message', 'stack', 'code', 'errno', 'syscall', 'status'] as const;

/**
 * The `err` serializer: the one place a provider's answer can reach a log line is an error that
 * carries it (a library attaches the response, its body or headers as fields). Only the error's
 * type, message and stack (both with the cause chain, as pino writes them), its code and, for a
 * system error, errno and syscall are kept; a LinkvaultError's `extra` (primitives we wrote) too,
 * and the primitives an error's own `logFields()` returns.
 * Every other field is dropped, whatever its name. A thrown non-error is logged as its type only
 * when it is an object (it may be a whole provider answer).
 */
export function serializeError(err: unknown): unknown {
  if (!(err instanceof Error)) {
    return typeof err === 'object' && err !== null
      ? { type: 'non-error object', message: '[not logged]' }
      : { type: typeof err, message: String(err) };
  }
  const full = pino.stdSerializers.err(err) as unknown as Record<string, unknown>;
  const kept: Record<string, unknown> = {};
  for (const field of ERROR_FIELDS) {
    const value = full[field];
    if (typeof value === 'string' || typeof value === 'number') kept[field] = value;
  }
  if (err instanceof LinkvaultError && err.extra) kept.extra = err.extra;
  // An error of ours may name fields it vouches for (primitives it wrote itself, never input).
  const own = (err as { logFields?: unknown }).logFields;
  if (typeof own === 'function') {
    for (const [name, value] of Object.entries(own.call(err) as Record<string, unknown>))
      if (typeof value === 'string' || typeof value === 'number') kept[name] = value;
  }
  if (err instanceof AggregateError) kept.aggregateErrors = err.errors.map(serializeError);
  return kept;
}

/** For the top-level keys under which a library's raw answer would arrive: never logged, whatever it holds. */
function dropValue(): string {
  return '[not logged]';
}

export interface LoggerOptions {
  readonly level: Config['logLevel'];
  /**
   * Where lines go. Default: standard output, written asynchronously (pino's SonicBoom,
   * `sync: false`), so a request never waits for the write; pino flushes it synchronously when
   * the process exits, and `log.flush()` at shutdown writes out what is buffered. Tests pass a
   * stream to read what was logged.
   */
  readonly destination?: DestinationStream;
}

/**
 * Builds the process logger: top-level secret names censored ('[redacted]', as Secret prints);
 * `err`, `error` and `cause` through serializeError; `response`, `body` and `headers` not logged.
 * Serializers are looked up by top-level key for every line anyway, so these cost a line that
 * has none of those keys nothing.
 */
export function createLogger(options: LoggerOptions): Logger {
  return pino(
    {
      level: options.level,
      base: { service: 'linkvault' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: redactPaths(), censor: '[redacted]' },
      serializers: {
        err: serializeError,
        error: serializeError,
        cause: serializeError,
        response: dropValue,
        body: dropValue,
        headers: dropValue,
      },
    },
    options.destination ?? pino.destination({ dest: 1, sync: false }),
  );
}
