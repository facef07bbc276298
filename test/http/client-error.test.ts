import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { ERROR_CATALOGUE, problemType } from '../../src/errors.js';
import { answerClientError } from '../../src/http/client-error.js';

/**
 * Requests Node's own parser refuses never reach Express. answerClientError, as the server's
 * 'clientError' listener, answers them as problem+json with a request id, then closes. Against a
 * real node:http server over a raw socket: what the client got.
 */

/** Sends `raw` on a fresh connection and resolves with everything received until the server closes. */
function exchange(port: number, raw: string | Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
    socket.write(raw);
  });
}

function parse(response: string) {
  const [head, body] = response.split('\r\n\r\n', 2) as [string, string];
  const [statusLine, ...lines] = head.split('\r\n');
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const i = line.indexOf(':');
    headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
  }
  return { statusLine, headers, body: JSON.parse(body) as Record<string, unknown> };
}

describe('answerClientError on a real node:http server', () => {
  let server: Server;
  let port: number;
  let handled = 0;
  before(async () => {
    server = createServer({ maxHeaderSize: 1024 }, (_req, res) => {
      handled++;
      res.end('ok');
    });
    server.on('clientError', (err, socket) => answerClientError(err, socket));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  test('when the request line is malformed, then 400 invalid_request problem+json with a request id, and the connection closes', async () => {
    const { statusLine, headers, body } = parse(await exchange(port, 'GARBAGE\r\n\r\n'));
    assert.equal(statusLine, 'HTTP/1.1 400 Bad Request');
    assert.equal(headers['content-type'], 'application/problem+json; charset=utf-8');
    assert.equal(headers.connection, 'close');
    assert.equal(headers['cache-control'], 'no-store');
    assert.match(headers['x-request-id']!, /^[0-9a-f-]{36}$/);
    assert.deepEqual(body, {
      type: problemType('invalid_request'),
      title: ERROR_CATALOGUE.invalid_request.title,
      status: 400,
      code: 'invalid_request',
      detail: 'The request could not be parsed as HTTP/1.1',
      request_id: headers['x-request-id'],
    });
    assert.equal(Number(headers['content-length']), Buffer.byteLength(JSON.stringify(body)));
  });

  test('when the headers are over the size limit, then 431 problem+json with a request id', async () => {
    const raw = `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(4096)}\r\n\r\n`;
    const { statusLine, headers, body } = parse(await exchange(port, raw));
    assert.equal(statusLine, 'HTTP/1.1 431 Request Header Fields Too Large');
    assert.deepEqual(body, {
      type: problemType('invalid_request'),
      title: ERROR_CATALOGUE.invalid_request.title,
      status: 431,
      code: 'invalid_request',
      detail: 'The request line or headers are too large',
      request_id: headers['x-request-id'],
    });
  });

  test('when a header line is malformed after a good request line, then 400 too, and no request reached the handler', async () => {
    const { statusLine } = parse(await exchange(port, 'GET / HTTP/1.1\r\nBad Header\r\n\r\n'));
    assert.equal(statusLine, 'HTTP/1.1 400 Bad Request');
    assert.equal(handled, 0);
  });

  test('when the request is well-formed, then the handler answers (the control)', async () => {
    const response = await exchange(port, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    assert.match(response, /^HTTP\/1\.1 200 OK\r\n/);
    assert.equal(handled, 1);
  });
});
