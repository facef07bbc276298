import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { LinkRecord } from '../../src/links/link.js';
import type { TestServices } from '../support/service-jwt.js';
import type { ServiceProcess } from '../support/service-process.js';
import {
  startServiceWithProvider,
  type ServiceWithProvider,
} from '../support/service-with-provider.js';
import { BIN, cliAgainst, type CliAgainst, type CliOutcome } from './run-cli.js';

/**
 * `linkvault audit list` (GET /v1/audit) and `linkvault audit fingerprint` against a real linkvault
 * process (SQLite) that released a token through a real OAuth server's link: the label the CLI computes
 * from the token's value is the one in the release's audit record.
 */

/** Runs the CLI with `stdin` written to it (then closed), in `env` only (plus PATH). */
function runWithStdin(
  args: readonly string[],
  stdin: string,
  env: Record<string, string>,
): Promise<CliOutcome> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: { PATH: process.env.PATH ?? '', ...env, LINKVAULT_LOG_LEVEL: 'error' },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(stdin);
  });
}

const REDIRECT = 'http://127.0.0.1:3000/v1/oauth/callback/test-as';
const CLIENT = {
  client_id: 'lv-cli-client',
  client_secret: 'lv-cli-secret-0123456789',
  redirect_uris: [REDIRECT],
};

describe('linkvault audit list and fingerprint against a running linkvault', () => {
  let lv: ServiceWithProvider;
  let service: ServiceProcess;
  let services: TestServices;
  let dir: string;
  let serviceEnv: Readonly<Record<string, string>>;
  const connect = (tenantId: string, userId: string): Promise<LinkRecord> =>
    lv.connect({ tenantId, userId });

  before(async () => {
    lv = await startServiceWithProvider({
      providerId: 'test-as',
      client: CLIENT,
      name: 'lv-cli-audit-list',
    });
    ({ service, services, dir, env: serviceEnv } = lv);
    ({ asCrm, cli, json, api } = cliAgainst({
      dir,
      url: service.url,
      crmSecret: services.env.LV_TEST_CRM_SECRET!,
      bearer: (kid) => services.bearer(kid),
    }));
  });
  after(async () => {
    await lv?.close();
  });

  let asCrm: readonly string[];
  let cli: CliAgainst['cli'];
  let json: CliAgainst['json'];
  let api: CliAgainst['api'];

  test('when a token is released, then audit list shows its record and fingerprint of the token matches its label', async () => {
    const link = await connect('acme', `audit-${randomUUID().slice(0, 6)}`);
    json(
      await cli([
        'grants',
        'create',
        '--for',
        'billing',
        '--link',
        link.id,
        '--purpose',
        'audit test',
        '--json',
        ...asCrm,
      ]),
    );
    const res = await fetch(`${service.url}/v1/links/${link.id}/token`, {
      method: 'POST',
      headers: { authorization: services.bearer('billing-hs') },
    });
    assert.equal(res.status, 200);
    const accessToken = ((await res.json()) as { access_token: string }).access_token;
    assert.ok(accessToken.length > 10);

    const listed = json(
      await cli([
        'audit',
        'list',
        '--link',
        link.id,
        '--type',
        'token.released',
        '--json',
        ...asCrm,
      ]),
    );
    assert.deepEqual(listed, await api(`/v1/audit?link_id=${link.id}&type=token.released`));
    const events = listed.events as {
      link_id: string;
      service_id: string;
      data: Record<string, unknown>;
    }[];
    assert.equal(events.length, 1);
    assert.equal(events[0]!.service_id, 'billing');
    assert.doesNotMatch(JSON.stringify(listed), new RegExp(accessToken));

    // The operator holding the leaked token finds its release.
    const fp = await runWithStdin(['audit', 'fingerprint'], `${accessToken}\n`, serviceEnv);
    assert.equal(fp.stderr, '');
    assert.equal(fp.code, 0);
    assert.equal(fp.stdout, `${String(events[0]!.data.access_token)}\n`);
    assert.match(fp.stdout, /^hmac-sha256\/128:/);

    const table = await cli(['audit', 'list', '--link', link.id, ...asCrm]);
    assert.equal(table.code, 0);
    const lines = table.stdout.trimEnd().split('\n');
    assert.match(lines[0]!, /^AT +TYPE +TENANT +LINK +SERVICE +REQUEST ID$/);
    assert.ok(
      lines.some((l) =>
        new RegExp(`^\\S+ +token\\.released +acme +${link.id} +billing +\\S+$`).test(l),
      ),
      table.stdout,
    );
  });

  test('when audit list pages with --limit, then --after continues where the page ended', async () => {
    const first = json(await cli(['audit', 'list', '--limit', '1', '--json', ...asCrm]));
    assert.equal((first.events as unknown[]).length, 1);
    assert.equal(typeof first.next, 'string');
    const table = await cli(['audit', 'list', '--limit', '1', ...asCrm]);
    assert.match(table.stdout, new RegExp(`^more: --after ${String(first.next)}$`, 'm'));
    const second = json(
      await cli([
        'audit',
        'list',
        '--limit',
        '1',
        '--after',
        String(first.next),
        '--json',
        ...asCrm,
      ]),
    );
    assert.deepEqual(second, await api(`/v1/audit?limit=1&after=${String(first.next)}`));
    const [a] = first.events as { seq: string }[];
    const [b] = second.events as { seq: string }[];
    assert.ok(Number(b!.seq) > Number(a!.seq));
  });

  test('when audit list finds nothing or the caller is not an admin, then it says so or exits 4', async () => {
    const none = await cli(['audit', 'list', '--tenant', 'nobody-here', ...asCrm]);
    // --for filters by service; --service stays the calling service.
    const forBilling = json(await cli(['audit', 'list', '--for', 'billing', '--json', ...asCrm]));
    assert.deepEqual(forBilling, await api('/v1/audit?service_id=billing'));
    assert.ok(
      (forBilling.events as { service_id: string }[]).every((e) => e.service_id === 'billing'),
    );
    const forNobody = await cli(['audit', 'list', '--for', 'nobody', ...asCrm]);
    assert.equal(forNobody.stdout, 'no audit events\n');
    assert.deepEqual(none, { code: 0, stdout: 'no audit events\n', stderr: '' });
    const refused = await cli(
      [
        'audit',
        'list',
        '--service',
        'billing',
        '--kid',
        'billing-hs',
        '--key-env',
        'LV_TEST_BILLING_SECRET',
      ],
      { LV_TEST_BILLING_SECRET: services.env.LV_TEST_BILLING_SECRET! },
    );
    assert.equal(refused.code, 4);
    assert.match(refused.stderr, /^linkvault: linkvault answered 403 /);
  });
});
