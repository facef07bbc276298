import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { type NextFunction, type Request, type Response } from 'express';
import { createServiceAuth } from '../../src/http/service-auth.js';
import { isLinkvaultError } from '../../src/errors.js';
import { makeTestServices } from '../support/service-jwt.js';

/**
 * Fuzz: thousands of random and mutated bearer values. The middleware is driven directly (no
 * sockets) so the run stays fast; every outcome must be exactly "next(unauthorized)" — never a
 * throw, never another error, never a pass.
 */

const t = makeTestServices();
// Every variant is a failure from one address: the failure limit (service-auth-failure-limit.test.ts) is out of the way here.
const auth = createServiceAuth({
  services: t.services,
  audience: t.audience,
  failuresPerMinute: 1_000_000,
});

function seededRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = Math.imul(s ^ (s >>> 15), 1 | s);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

function runMiddleware(authorization: string): { outcome: 'pass' | 'error'; err?: unknown } {
  const req = {
    headers: { authorization },
    socket: { remoteAddress: '127.0.0.1' },
  } as unknown as Request;
  const res = { locals: {}, setHeader: () => undefined } as unknown as Response;
  let result: { outcome: 'pass' | 'error'; err?: unknown } | null = null;
  const next: NextFunction = (err?: unknown) => {
    result = err === undefined ? { outcome: 'pass' } : { outcome: 'error', err };
  };
  void auth.authenticate(req, res, next);
  assert.ok(result, 'the middleware answers synchronously');
  return result;
}

function mutate(token: string, rnd: () => number): string {
  const chars = [...token];
  const kind = Math.floor(rnd() * 6);
  const pos = Math.floor(rnd() * chars.length);
  const alphabet =
    'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ {}"\\\u0000\u00ff\ud83d';
  const pick = () => alphabet[Math.floor(rnd() * alphabet.length)]!;
  switch (kind) {
    case 0:
      chars[pos] = pick();
      break;
    case 1:
      chars.splice(pos, 1);
      break;
    case 2:
      chars.splice(pos, 0, pick());
      break;
    case 3:
      return chars.slice(0, pos).join('');
    case 4:
      return token.split('.').reverse().join('.');
    default: {
      const parts = token.split('.');
      const i = Math.floor(rnd() * parts.length);
      parts[i] = Buffer.from(
        JSON.stringify({
          alg: rnd() < 0.5 ? 'none' : 'HS256',
          kid: rnd() < 0.5 ? 'crm-hs' : ['x'],
          exp: 'soon',
          n: rnd(),
        }),
      ).toString('base64url');
      return parts.join('.');
    }
  }
  return chars.join('');
}

function sameBytes(token: string, originals: string[]): boolean {
  const decode = (x: string) =>
    x
      .split('.')
      .map((p) => Buffer.from(p, 'base64url').toString('hex'))
      .join('.');
  return originals.some((o) => decode(o) === decode(token));
}

describe('service JWT authentication fuzz', () => {
  it('when 4000 random and mutated bearer values arrive, then each is a clean 401 and none passes', () => {
    const rnd = seededRandom(20240611);
    const valid = [t.token('crm-hs'), t.token('crm-es'), t.token('billing-hs')];
    let count = 0;
    for (let i = 0; i < 4000; i++) {
      let value: string;
      if (i % 4 === 0)
        value = randomBytes(Math.floor(rnd() * 200)).toString(rnd() < 0.5 ? 'base64url' : 'latin1');
      else if (i % 4 === 1)
        value = `${rnd() < 0.8 ? 'Bearer ' : 'bearer\t'}${randomBytes(Math.floor(rnd() * 120)).toString('base64url')}.${randomBytes(Math.floor(rnd() * 200)).toString('base64url')}.${randomBytes(32).toString('base64url')}`;
      else value = `Bearer ${mutate(valid[i % valid.length]!, rnd)}`;
      const r = runMiddleware(value);
      if (r.outcome === 'pass') {
        // Only a mutation that leaves the signed bytes unchanged may pass (a no-op edit, or a
        // base64url char differing in the ignored trailing bits of a segment).
        assert.ok(sameBytes(value.slice(7), valid), `a changed token was accepted: variant ${i}`);
        continue;
      }
      assert.ok(isLinkvaultError(r.err, 'unauthorized'), `variant ${i} gave ${String(r.err)}`);
      count++;
    }
    assert.ok(count > 3900, `only ${count} variants were rejected`);
  });
});
