/**
 * The third baseline for bench/token-release.ts: node:http answering the token route's exchange
 * and nothing else. It takes the same request (POST with the service's Authorization header and a
 * JSON body, read to its end and parsed) and writes an answer of the same shape (the headers the
 * fast path writes, security headers included, and a token-sized JSON body), with no
 * authentication, store, audit, log line or metrics. Its CPU per request is what node:http and the
 * kernel's loopback TCP cost for this exchange on the machine of the run: the floor under the
 * service's CPU per release, which everything linkvault does is added to. Run as its own process
 * like the service. Prints `{"port": N}` once listening.
 */
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { securityHeadersFor } from '../src/http/security-headers.js';

const fixed = securityHeadersFor('/v1/links/lnk_x/token', false).flatMap(([n, v]) => [n, v]);
const body = JSON.stringify({
  access_token: 'at-0123456789abcdef0123456789abcdef0123456789',
  token_type: 'Bearer',
  expires_at: new Date(Date.now() + 3_600_000).toISOString(),
  scopes: ['openid', 'offline_access', 'crm.read'],
  metadata: {},
});
const length = String(Buffer.byteLength(body));

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    const raw = Buffer.concat(chunks).toString('utf8');
    if (raw.length > 0) JSON.parse(raw);
    res.writeHead(200, [
      'X-Request-Id',
      randomUUID(),
      ...fixed,
      'Content-Type',
      'application/json; charset=utf-8',
      'Content-Length',
      length,
    ]);
    res.end(body);
  });
});
server.keepAliveTimeout = 65_000;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: (server.address() as AddressInfo).port })}\n`);
});
process.once('SIGTERM', () => server.close(() => process.exit(0)));
