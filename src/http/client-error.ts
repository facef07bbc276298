import { STATUS_CODES } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { ERROR_CATALOGUE, problemType, type ErrorCode } from '../errors.js';
import { PROBLEM_CONTENT_TYPE } from './problem.js';
import { REQUEST_ID_HEADER } from './request-id.js';
import { securityHeadersFor } from './security-headers.js';

/**
 * Node's HTTP parser refuses some requests before Express ever sees them (a malformed request
 * line, headers over the size limit, a request that did not arrive within requestTimeout). Left
 * to Node, the answer is a bare status line: no problem body and no request id to quote to an
 * operator. Wired as `server.on('clientError', (err, socket) => answerClientError(err, socket, log))`,
 * this writes the same problem+json shape every other refusal has, then closes the connection
 * (the parser's state is unknown, so the connection cannot be reused; RFC 9112 §9.6).
 */

/** Node's parser error code → status and the catalogue code and detail the body carries. */
interface ClientErrorAnswer {
  readonly status: number;
  readonly code: ErrorCode;
  readonly detail: string;
}

const BAD_REQUEST: ClientErrorAnswer = {
  status: 400,
  code: 'invalid_request',
  detail: 'The request could not be parsed as HTTP/1.1',
};

/**
 * By Node's error code (never its message). 431 and 408 have no catalogue code of their own:
 * the body says invalid_request (the caller's request is at fault) with the real status.
 */
const BY_CODE: Readonly<Record<string, ClientErrorAnswer>> = {
  HPE_HEADER_OVERFLOW: {
    status: 431,
    code: 'invalid_request',
    detail: 'The request line or headers are too large',
  },
  HPE_CHUNK_EXTENSIONS_OVERFLOW: {
    status: 413,
    code: 'payload_too_large',
    detail: 'The chunk extensions are too large',
  },
  ERR_HTTP_REQUEST_TIMEOUT: {
    status: 408,
    code: 'invalid_request',
    detail: 'The request was not received in time',
  },
};

/** The answer for a parser error: by its code, else 400. */
export function clientErrorAnswer(err: unknown): ClientErrorAnswer {
  const code = (err as { code?: unknown } | null)?.code;
  return (typeof code === 'string' && BY_CODE[code]) || BAD_REQUEST;
}

/** The raw HTTP/1.1 response for `answer`, with a fresh request id. */
export function clientErrorResponse(answer: ClientErrorAnswer, requestId: string): string {
  const body = JSON.stringify({
    type: problemType(answer.code),
    title: ERROR_CATALOGUE[answer.code].title,
    status: answer.status,
    code: answer.code,
    detail: answer.detail,
    request_id: requestId,
  });
  const headers = [
    `HTTP/1.1 ${answer.status} ${STATUS_CODES[answer.status] ?? 'Error'}`,
    `Content-Type: ${PROBLEM_CONTENT_TYPE}; charset=utf-8`,
    `Content-Length: ${Buffer.byteLength(body)}`,
    `${REQUEST_ID_HEADER}: ${requestId}`,
    // The request's path is unknown here: the strictest headers, as for /v1.
    ...securityHeadersFor('/v1', false).map(([name, value]) => `${name}: ${value}`),
    'Connection: close',
  ];
  return `${headers.join('\r\n')}\r\n\r\n${body}`;
}

/**
 * The 'clientError' listener: writes a problem+json 400 (431 for oversized headers, 408 for a
 * request timeout, 413 for oversized chunk extensions) with an X-Request-Id and closes the socket.
 * A connection the peer already reset, or one whose response has begun, is only destroyed:
 * writing there would corrupt the stream. The request id and the parser's code go to the log at
 * debug; the bytes the client sent (err.rawPacket) never do.
 */
export function answerClientError(err: unknown, socket: Duplex, log?: Logger): void {
  const code = (err as { code?: unknown } | null)?.code;
  // Node sets _httpMessage on a socket with a response in flight (keep-alive, pipelining).
  const inFlight = (socket as { _httpMessage?: { headersSent?: boolean } | null })._httpMessage;
  if (code === 'ECONNRESET' || !socket.writable || inFlight?.headersSent) {
    socket.destroy();
    return;
  }
  const answer = clientErrorAnswer(err);
  const requestId = randomUUID();
  log?.debug(
    {
      request_id: requestId,
      status: answer.status,
      error_code: answer.code,
      parser_code: typeof code === 'string' ? code.slice(0, 64) : undefined,
    },
    'request refused by the HTTP parser',
  );
  // Destroyed once written: the server allows half-open sockets, and a client that never closes its
  // side must not keep a refused connection past its timeout.
  socket.end(clientErrorResponse(answer, requestId), () => socket.destroy());
}
