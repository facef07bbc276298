import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { ERROR_CATALOGUE, problemType } from '../../src/errors.js';
import { startStack, type Stack } from '../support/stack.js';

/**
 * Service-auth failures are rate limited per client address (docs/service-auth.md, "Why was my
 * token refused?"): a caller guessing keys gets its share of 401s (LINKVAULT_RATE_LIMIT_PER_MINUTE,
 * 5 here), then 429 rate_limited with Retry-After for every request, valid or not, before any
 * verification; valid callers at other addresses are not slowed, and valid calls never count.
 * Over real TCP connections to a listening linkvault, from distinct loopback source addresses
 * (127.0.0.2, .3, .4: the TCP peer is the client address, no X-Forwarded-For trusted).
 */

interface Answer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Record<string, unknown>;
}

function call(
  url: string,
  from: string,
  options: { method: string; path: string; authorization: string; body?: string },
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      `${url}${options.path}`,
      {
        method: options.method,
        localAddress: from,
        agent: false,
        headers: {
          authorization: options.authorization,
          ...(options.body === undefined
            ? {}
            : {
                'content-type': 'application/json',
                'content-length': Buffer.byteLength(options.body),
              }),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>),
          });
        });
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

const LIMIT = 5;

describe('service-auth failures are rate limited per client address', () => {
  let stack: Stack;
  let url: string;
  let valid: () => string;
  let badSignature: () => string;

  before(async () => {
    stack = await startStack({
      listen: true,
      env: { LINKVAULT_RATE_LIMIT_PER_MINUTE: String(LIMIT) },
    });
    url = stack.publicUrl;
    valid = () => stack.services.bearer('crm-hs');
    // The right kid and claims, signed with a guessed secret: what a key-guessing caller sends.
    badSignature = () =>
      stack.services.bearer('crm-hs', { key: 'a guessed secret of 32+ bytes....' });
  });
  after(async () => {
    await stack?.close();
  });

  const listLinks = (from: string, authorization: string) =>
    call(url, from, { method: 'GET', path: '/v1/links', authorization });
  const tokenFastPath = (from: string, authorization: string) =>
    call(url, from, {
      method: 'POST',
      path: '/v1/links/lnk_missing/token',
      authorization,
      body: '{}',
    });

  function assertRateLimited(res: Answer): void {
    assert.equal(res.status, 429);
    const retryAfter = Number(res.headers['retry-after']);
    assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 60, `${retryAfter}`);
    assert.deepEqual(res.body, {
      type: problemType('rate_limited'),
      title: ERROR_CATALOGUE.rate_limited.title,
      status: 429,
      code: 'rate_limited',
      detail: 'Too many requests from this client; retry later',
      request_id: res.headers['x-request-id'],
    });
  }

  test('when one address keeps sending bad tokens, then after its share of 401s it gets 429 with Retry-After, even for a valid token and on the token fast path', async () => {
    const guesser = '127.0.0.2';
    for (let i = 0; i < LIMIT; i++) {
      const res = await listLinks(guesser, badSignature());
      assert.equal(res.status, 401, `attempt ${i + 1}`);
      assert.equal(res.body.code, 'unauthorized');
    }
    const limited = await listLinks(guesser, badSignature());
    assertRateLimited(limited);
    // The operator's log says why, at debug under the request id (docs/service-auth.md).
    const line = stack
      .logText()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { request_id?: string; msg?: string; err?: { reason?: string } })
      .find(
        (l) => l.request_id === limited.headers['x-request-id'] && l.msg === 'request rejected',
      );
    assert.equal(line?.err?.reason, 'too_many_failures');
    // No more guesses are checked from there: a right one is not even verified.
    assertRateLimited(await listLinks(guesser, valid()));
    assertRateLimited(await tokenFastPath(guesser, valid()));
  });

  test('when another address calls with a valid token meanwhile, then it is served (not slowed by the guesser)', async () => {
    const other = await listLinks('127.0.0.3', valid());
    assert.equal(other.status, 200);
    assert.deepEqual(other.body, { links: [] });
    const fast = await tokenFastPath('127.0.0.3', valid());
    assert.equal(fast.status, 404);
    assert.equal(fast.body.code, 'link_not_found');
  });

  test('when an address makes many valid calls, then none counts against it (only failures do)', async () => {
    for (let i = 0; i < LIMIT * 4; i++) {
      const res = await listLinks('127.0.0.4', valid());
      assert.equal(res.status, 200, `call ${i + 1}`);
    }
    // Its failures still get their full share afterwards.
    for (let i = 0; i < LIMIT; i++)
      assert.equal((await tokenFastPath('127.0.0.4', badSignature())).status, 401);
    assertRateLimited(await tokenFastPath('127.0.0.4', badSignature()));
  });
});
