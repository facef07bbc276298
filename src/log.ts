import { write as fsWrite, writeSync } from 'node:fs';
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

let stampedAtMs = -1;
let stamp = '';

/**
 * pino's isoTime, made once per millisecond: under load many lines share a millisecond, and
 * each made a Date and its ISO string (the request line is written on every request).
 */
function isoTimestamp(): string {
  const now = Date.now();
  if (now !== stampedAtMs) {
    stampedAtMs = now;
    stamp = `,"time":"${new Date(now).toISOString()}"`;
  }
  return stamp;
}

export interface LoggerOptions {
  readonly level: Config['logLevel'];
  /**
   * Where lines go. Default: standard output through a LineWriter, written asynchronously so a
   * request never waits for the write; what is queued is written synchronously when the process
   * exits, and `log.flush()` at shutdown waits for it. Tests pass a stream to read what was logged.
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
      timestamp: isoTimestamp,
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
    options.destination ?? new LineWriter(1),
  );
}

/** How long a write that the pipe refused for now (EAGAIN: the reader is behind) waits before it is tried again. */
const BUSY_RETRY_MS = 20;

/**
 * Log lines to a file descriptor, asynchronously: lines queue while a write is in flight and go
 * out together in the next one. This replaces pino's SonicBoom, which measures the byte length of
 * everything it holds on every line (flattening the growing string each time): under load that
 * made the log the largest allocator on the token route (~2.6 KB of garbage per request line,
 * measured with a sampling heap profile of `npm run bench`).
 *
 * Nothing is dropped while the reader keeps up or is merely slow (EAGAIN is retried). Any other
 * write error ends logging, as a broken pipe does in pino: there is nobody left to read, and
 * holding lines for a descriptor that cannot take them would only grow the heap. It is said once
 * on standard error (not for EPIPE: the reader is gone).
 */
export class LineWriter implements DestinationStream {
  readonly #fd: number;
  #queue: string[] = [];
  /** The bytes of the current write (what is left of them after a partial write), or null when idle. */
  #current: Buffer | null = null;
  /** Whether a write call is outstanding (its bytes may be partly written; only its callback knows). */
  #writing = false;
  #waiting: (() => void)[] = [];
  #ended = false;

  constructor(fd: number) {
    this.#fd = fd;
    // What is queued when the process exits is written synchronously: the last lines of a
    // shutdown or a crash are the ones most worth having.
    process.once('exit', () => this.flushSync());
  }

  write(line: string): boolean {
    if (this.#ended) return true;
    this.#queue.push(line);
    if (this.#current === null) this.#send(Buffer.from(this.#take(), 'utf8'));
    return true;
  }

  /** Calls `done` once everything written before it is out (or logging has ended). */
  flush(done: () => void): void {
    if (this.#current === null) process.nextTick(done);
    else this.#waiting.push(done);
  }

  /**
   * Writes what is left, blocking (process exit). Bytes of a write call still outstanding are left
   * to it: how much of them landed is not known here, and writing them again could double lines.
   */
  flushSync(): void {
    if (this.#ended) return;
    const parts: Buffer[] = [];
    if (this.#current !== null && !this.#writing) parts.push(this.#current);
    if (this.#queue.length > 0) parts.push(Buffer.from(this.#take(), 'utf8'));
    if (!this.#writing) this.#current = null;
    let bytes = Buffer.concat(parts);
    while (bytes.length > 0) {
      try {
        bytes = bytes.subarray(writeSync(this.#fd, bytes));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') return;
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, BUSY_RETRY_MS);
      }
    }
  }

  #take(): string {
    const text = this.#queue.length === 1 ? this.#queue[0]! : this.#queue.join('');
    this.#queue = [];
    return text;
  }

  #send(bytes: Buffer): void {
    this.#current = bytes;
    this.#writing = true;
    fsWrite(this.#fd, bytes, 0, bytes.length, null, (err, written) => {
      this.#writing = false;
      if (err && err.code === 'EAGAIN') {
        setTimeout(() => this.#current === bytes && this.#send(bytes), BUSY_RETRY_MS);
        return;
      }
      if (err) this.#end(err);
      else if (written < bytes.length) this.#send(bytes.subarray(written));
      else if (this.#queue.length > 0) this.#send(Buffer.from(this.#take(), 'utf8'));
      else this.#idle();
    });
  }

  #end(err: NodeJS.ErrnoException): void {
    this.#ended = true;
    this.#queue = [];
    if (err.code !== 'EPIPE')
      process.stderr.write(
        `linkvault: the log cannot be written (${err.code ?? err.message}); logging stops\n`,
      );
    this.#idle();
  }

  #idle(): void {
    this.#current = null;
    const waiting = this.#waiting;
    this.#waiting = [];
    for (const done of waiting) done();
  }
}
