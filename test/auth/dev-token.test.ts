import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import express from 'express';
import request from 'supertest';
import {
  loadDevService,
  devServiceEnabled,
  DEV_TOKEN_LIFETIME_SECONDS,
} from '../../src/auth/dev-service.js';
import { runCli } from '../../src/cli.js';
import { loadConfig } from '../../src/config.js';
import { createServiceAuth } from '../../src/http/service-auth.js';

describe('when a developer asks for a dev token', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lv-devtoken-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const env = { LINKVAULT_SANDBOX: 'true' };

  async function cli(
    args: string[],
    extraEnv: Record<string, string> = {},
  ): Promise<{ code: number; out: string[]; err: string[] }> {
    const out: string[] = [];
    const err: string[] = [];
    const code = await runCli(args, {
      env: { ...env, ...extraEnv },
      cwd: dir,
      out: (l) => out.push(l),
      err: (l) => err.push(l),
    });
    return { code, out, err };
  }

  test('then before the service has started once there is no key, and the command says so', async () => {
    const r = await cli(['dev-token']);
    assert.equal(r.code, 1);
    assert.deepEqual(r.out, []);
    assert.match(r.err[0]!, /dev-service\.key does not exist yet: start linkvault once/);
  });

  test('then the service creates the key file 0600 and `linkvault dev-token` prints a 300-second JWT it accepts for every role', async () => {
    const config = loadConfig(env, dir);
    const loaded = loadDevService(config)!;
    assert.equal(loaded.created, true);
    assert.equal(loaded.keyFile, join(dir, 'data', 'dev-service.key'));
    assert.equal(statSync(loaded.keyFile).mode & 0o777, 0o600);
    assert.deepEqual([...loaded.service.roles].sort(), [
      'admin',
      'links:read',
      'links:revoke',
      'proxy',
      'sessions',
      'tokens',
    ]);
    const keyText = readFileSync(loaded.keyFile, 'utf8');
    // A second start reads the same key.
    const again = loadDevService(config)!;
    assert.equal(again.created, false);
    assert.equal(readFileSync(again.keyFile, 'utf8'), keyText);

    const r = await cli(['dev-token']);
    assert.equal(r.code, 0, r.err.join('\n'));
    assert.equal(r.out.length, 1);
    const token = r.out[0]!;
    const [header, payload] = token
      .split('.')
      .slice(0, 2)
      .map(
        (s) => JSON.parse(Buffer.from(s, 'base64url').toString('utf8')) as Record<string, unknown>,
      );
    assert.deepEqual(header, { alg: 'HS256', typ: 'JWT', kid: 'dev' });
    assert.equal(payload!.iss, 'dev');
    assert.equal(payload!.aud, 'linkvault');
    assert.equal(Number(payload!.exp) - Number(payload!.iat), DEV_TOKEN_LIFETIME_SECONDS);
    assert.ok(!token.includes(keyText.trim()));

    const auth = createServiceAuth({ services: [again.service], audience: config.audience });
    const app = express();
    app.get('/admin', auth.authenticate, auth.requireRole('admin'), (_req, res) => {
      res.json({ service: (res.locals.service as { id: string }).id });
    });
    const answer = await request(app).get('/admin').set('authorization', `Bearer ${token}`);
    assert.equal(answer.status, 200);
    assert.deepEqual(answer.body, { service: 'dev' });
  });

  test('then with the sandbox off, or in production, there is no dev service', async () => {
    const r = await cli(['dev-token'], { LINKVAULT_SANDBOX: 'false' });
    assert.equal(r.code, 1);
    assert.match(r.err[0]!, /only outside production with the sandbox on/);
    assert.equal(loadDevService(loadConfig({ LINKVAULT_SANDBOX: 'false' }, dir)), null);
    assert.equal(devServiceEnabled({ production: true, sandbox: true }), false);
    assert.equal(devServiceEnabled({ production: false, sandbox: true }), true);
  });
});
