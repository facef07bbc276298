import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { generateKeyPairSync, randomBytes, sign as cryptoSign } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import jwt from 'jsonwebtoken';
import request from 'supertest';
import { startStack, type Stack } from '../support/stack.js';
import type { TestServices } from '../support/service-jwt.js';
import { parseServicesFile } from '../../src/auth/services-file.js';

/**
 * The signing examples of docs/service-auth.md are run as written, against a listening linkvault
 * whose services file registers `crm-sync` with the keys the examples name (kid `crm-sync-2025`,
 * HS256, secret in CRM_SYNC_JWT_SECRET; kid `crm-sync-es256`, ES256). Each must print the 200
 * answer of GET /v1/links. The Node examples run in a child node with this repository's
 * node_modules (jose, jsonwebtoken); the shell one needs bash, openssl and curl, the Python one
 * python3 with PyJWT: each is skipped, saying so, where its tools are not installed.
 */

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const DOC = readFileSync(join(ROOT, 'docs', 'service-auth.md'), 'utf8');

/** The first fenced block of `language` under the heading `heading`. */
function example(heading: string, language: string): string {
  const section = DOC.split(/^## /m).find((s) => s.startsWith(`${heading}\n`));
  assert.ok(section, `docs/service-auth.md has a "## ${heading}" section`);
  const match = new RegExp('```' + language + '\\n([\\s\\S]*?)```').exec(section);
  assert.ok(match, `"## ${heading}" has a ${language} block`);
  return match[1]!;
}

function has(command: string, args: string[]): boolean {
  try {
    execFileSync(command, args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function run(
  command: string,
  args: string[],
  env: Record<string, string>,
  cwd: string,
): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      command,
      args,
      { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, cwd, timeout: 30_000 },
      (err, stdout, stderr) =>
        err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
    );
  });
}

/** crm-sync as the examples name it, through a real services file. */
function docServices(): { services: TestServices; privateKeyPem: string } {
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const env = { CRM_SYNC_JWT_SECRET: randomBytes(32).toString('base64url') };
  const servicesFile = {
    services: [
      {
        id: 'crm-sync',
        roles: ['sessions', 'links:read', 'tokens', 'links:revoke'],
        keys: [
          { kid: 'crm-sync-2025', alg: 'HS256', secret_env: 'CRM_SYNC_JWT_SECRET' },
          {
            kid: 'crm-sync-es256',
            alg: 'ES256',
            public_key_pem: ec.publicKey.export({ format: 'pem', type: 'spki' }).toString(),
          },
        ],
      },
    ],
  };
  const unused = (): never => {
    throw new Error('the docs test signs only through the documented examples');
  };
  return {
    services: {
      audience: 'linkvault',
      services: parseServicesFile(servicesFile, env),
      servicesFile,
      env,
      keys: {},
      esPublicKeyPem: '',
      token: unused,
      bearer: unused,
    },
    privateKeyPem: ec.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
  };
}

describe('the signing examples in docs/service-auth.md work against a running linkvault', () => {
  let stack: Stack;
  let dir: string;
  let env: Record<string, string>;
  let privateKeyPem: string;

  before(async () => {
    const doc = docServices();
    const services = doc.services;
    privateKeyPem = doc.privateKeyPem;
    stack = await startStack({ listen: true, services });
    dir = mkdtempSync(join(tmpdir(), 'lv-doc-examples-'));
    // The examples import jose / jsonwebtoken as a service would: from a node_modules beside them.
    symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
    env = {
      LINKVAULT_URL: stack.publicUrl,
      CRM_SYNC_JWT_SECRET: services.env.CRM_SYNC_JWT_SECRET!,
      CRM_SYNC_ES256_PRIVATE_KEY_PEM: privateKeyPem,
    };
  });
  after(async () => {
    await stack?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('when the Node (jose) example runs, then its ES256 token is accepted', async () => {
    writeFileSync(join(dir, 'jose-example.mjs'), example('Node (jose)', 'js'));
    const out = await run(process.execPath, ['jose-example.mjs'], env, dir);
    assert.equal(out, '200 {"links":[]}\n');
  });

  test('when the Node (jsonwebtoken) example runs, then its HS256 token is accepted', async () => {
    writeFileSync(join(dir, 'jsonwebtoken-example.mjs'), example('Node (jsonwebtoken)', 'js'));
    const out = await run(process.execPath, ['jsonwebtoken-example.mjs'], env, dir);
    assert.equal(out, '200 {"links":[]}\n');
  });

  test('when the shell (openssl) example runs in bash, then its HS256 token is accepted', async (t) => {
    if (!has('bash', ['-c', 'command -v openssl && command -v curl'])) {
      t.skip('bash, openssl or curl is not installed');
      return;
    }
    const out = await run('bash', ['-c', example('Shell (openssl)', 'sh')], env, dir);
    assert.equal(out, '{"links":[]}');
  });

  test('when the Python (PyJWT) example runs, then its HS256 token is accepted', async (t) => {
    if (!has('python3', ['-c', 'import jwt'])) {
      t.skip('python3 with PyJWT is not installed');
      return;
    }
    writeFileSync(join(dir, 'pyjwt_example.py'), example('Python (PyJWT)', 'python'));
    const out = await run('python3', ['pyjwt_example.py'], env, dir);
    assert.equal(out, '200 {"links":[]}\n');
  });

  test('when an example is changed to sign with the wrong secret, then it is refused (the examples are really checked)', async () => {
    writeFileSync(join(dir, 'jsonwebtoken-example.mjs'), example('Node (jsonwebtoken)', 'js'));
    const out = await run(
      process.execPath,
      ['jsonwebtoken-example.mjs'],
      { ...env, CRM_SYNC_JWT_SECRET: randomBytes(32).toString('base64url') },
      dir,
    );
    assert.match(out, /^401 /);
  });

  test('when a token has one of the documented common mistakes, then the log names the reason the table gives', async () => {
    const secret = env.CRM_SYNC_JWT_SECRET!;
    const now = Math.floor(Date.now() / 1000);
    const good = {
      algorithm: 'HS256',
      keyid: 'crm-sync-2025',
      issuer: 'crm-sync',
      audience: 'linkvault',
    } as const;
    const derEs256 = (): string => {
      const header = Buffer.from(
        JSON.stringify({ alg: 'ES256', kid: 'crm-sync-es256', typ: 'JWT' }),
      ).toString('base64url');
      const claims = Buffer.from(
        JSON.stringify({ iss: 'crm-sync', aud: 'linkvault', iat: now, exp: now + 60 }),
      ).toString('base64url');
      // node:crypto's default signature encoding is DER, as openssl's.
      const signature = cryptoSign('sha256', Buffer.from(`${header}.${claims}`), privateKeyPem);
      return `${header}.${claims}.${signature.toString('base64url')}`;
    };
    const mistakes: [string, () => string, string][] = [
      [
        'aud as a list',
        () =>
          jwt.sign({}, secret, { ...good, audience: ['linkvault', 'billing-api'], expiresIn: 60 }),
        'wrong_audience',
      ],
      [
        'a token valid for an hour',
        () => jwt.sign({}, secret, { ...good, expiresIn: '1h' }),
        'lifetime_too_long',
      ],
      ['no exp', () => jwt.sign({}, secret, good), 'missing_claim'],
      [
        'no kid',
        () =>
          jwt.sign({}, secret, {
            algorithm: 'HS256',
            issuer: 'crm-sync',
            audience: 'linkvault',
            expiresIn: 60,
          }),
        'missing_kid_or_alg',
      ],
      [
        'a mistyped kid',
        () => jwt.sign({}, secret, { ...good, keyid: 'crm-sync-2024', expiresIn: 60 }),
        'unknown_kid',
      ],
      [
        'the kid as iss',
        () => jwt.sign({}, secret, { ...good, issuer: 'crm-sync-2025', expiresIn: 60 }),
        'wrong_issuer',
      ],
      [
        'the secret base64-decoded',
        () => jwt.sign({}, Buffer.from(secret, 'base64url'), { ...good, expiresIn: 60 }),
        'bad_signature',
      ],
      ['an ES256 signature in DER', derEs256, 'bad_signature'],
      [
        'HS256 with the ES256 kid',
        () => jwt.sign({}, secret, { ...good, keyid: 'crm-sync-es256', expiresIn: 60 }),
        'alg_mismatch',
      ],
      [
        'typ at+jwt',
        () =>
          jwt.sign({}, secret, { ...good, expiresIn: 60, header: { alg: 'HS256', typ: 'at+jwt' } }),
        'typ_not_accepted',
      ],
      [
        'a clock minutes behind',
        () => jwt.sign({ iat: now - 400 }, secret, { ...good, expiresIn: 60 }),
        'expired',
      ],
      [
        'a clock minutes ahead',
        () => jwt.sign({ iat: now + 120 }, secret, { ...good, expiresIn: 60 }),
        'issued_in_future',
      ],
    ];
    for (const [name, token, reason] of mistakes) {
      assert.ok(DOC.includes(`| \`${reason}\` |`), `docs/service-auth.md lists ${reason}`);
      const res = await request(stack.app)
        .get('/v1/links')
        .set('Authorization', `Bearer ${token()}`);
      assert.equal(res.status, 401, name);
      const line = stack
        .logText()
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { request_id?: string; err?: { reason?: string } })
        .find((l) => l.request_id === res.headers['x-request-id'] && l.err !== undefined);
      assert.equal(line?.err?.reason, reason, name);
    }
  });
});
