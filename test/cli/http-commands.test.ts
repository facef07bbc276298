import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runCli } from '../../src/cli.js';
import type { LinkRecord } from '../../src/links/link.js';
import type { TestServices } from '../support/service-jwt.js';
import { startServiceProcess, type ServiceProcess } from '../support/service-process.js';
import {
  startServiceWithProvider,
  type ServiceWithProvider,
} from '../support/service-with-provider.js';
import { freePort } from '../support/free-port.js';
import { cliAgainst, runBin, type CliAgainst } from './run-cli.js';

/**
 * The operator commands against a real linkvault process (SQLite), with links connected through a
 * real OAuth server (node-oidc-provider) and the service JWTs the CLI signs verified by the service.
 */

const REDIRECT = 'http://127.0.0.1:3000/v1/oauth/callback/test-as';
const CLIENT = {
  client_id: 'lv-cli-client',
  client_secret: 'lv-cli-secret-0123456789',
  redirect_uris: [REDIRECT],
};

describe('linkvault operator commands against a running linkvault', () => {
  let lv: ServiceWithProvider;
  let services: TestServices;
  let service: ServiceProcess;
  let dir: string;
  let esKeyFile: string;
  let cliEnv: Record<string, string>;
  const connect = (tenantId: string, userId: string): Promise<LinkRecord> =>
    lv.connect({ tenantId, userId });

  before(async () => {
    lv = await startServiceWithProvider({
      providerId: 'test-as',
      client: CLIENT,
      name: 'lv-cli-http',
    });
    ({ services, service, dir } = lv);
    esKeyFile = join(dir, 'crm-es.pem');
    writeFileSync(
      esKeyFile,
      (services.keys['crm-es']!.signingKey as import('node:crypto').KeyObject)
        .export({ format: 'pem', type: 'pkcs8' })
        .toString(),
      { mode: 0o600 },
    );
    cliEnv = {
      LV_TEST_CRM_SECRET: services.env.LV_TEST_CRM_SECRET!,
      LINKVAULT_PUBLIC_URL: service.url,
    };
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

  test('when sessions create is run, then linkvault mints a session and the CLI prints it (table and --json)', async () => {
    const created = json(
      await cli([
        'sessions',
        'create',
        '--tenant',
        'acme',
        '--user',
        'u1',
        '--provider',
        'test-as',
        '--json',
        ...asCrm,
      ]),
    );
    assert.deepEqual(Object.keys(created).sort(), [
      'connect_url',
      'expires_at',
      'manage_url',
      'session_token',
    ]);
    assert.match(String(created.connect_url), /\/connect#session=/);
    // The session works: linkvault lists its providers for it.
    const res = await fetch(`${service.url}/v1/me/providers`, {
      headers: { authorization: `Bearer ${String(created.session_token)}` },
    });
    assert.equal(res.status, 200);

    const table = await cli(['sessions', 'create', '--tenant', 'acme', '--user', 'u1', ...asCrm]);
    assert.equal(table.code, 0);
    assert.match(
      table.stdout,
      /^session_token {2}\S+\nexpires_at {5}\S+\nconnect_url {4}\S+#session=\S+\nmanage_url {5}\S+\n$/,
    );
  });

  test('when links list and links show are run, then they print what GET /v1/links answers', async () => {
    const link = await connect('acme', `list-${randomUUID().slice(0, 6)}`);
    const listed = json(
      await cli(['links', 'list', '--tenant', 'acme', '--user', link.userId, '--json', ...asCrm]),
    );
    assert.deepEqual(listed, await api(`/v1/links?tenant_id=acme&user_id=${link.userId}`));
    assert.deepEqual(
      (listed.links as { id: string }[]).map((l) => l.id),
      [link.id],
    );

    const table = await cli(['links', 'list', '--tenant', 'acme', '--user', link.userId, ...asCrm]);
    assert.equal(table.code, 0);
    const lines = table.stdout.trimEnd().split('\n');
    assert.match(lines[0]!, /^ID +TENANT +USER +PROVIDER +STATUS +UPDATED +LAST USED$/);
    assert.equal(lines.length, 2);
    assert.match(
      lines[1]!,
      new RegExp(`^${link.id} +acme +${link.userId} +test-as +active +\\S+ +-$`),
    );

    const none = await cli(['links', 'list', '--tenant', 'nobody-here', ...asCrm]);
    assert.deepEqual(none, { code: 0, stdout: 'no links\n', stderr: '' });

    const shown = json(await cli(['links', 'show', link.id, '--json', ...asCrm]));
    assert.deepEqual(shown, await api(`/v1/links/${link.id}`));
    const fields = await cli(['links', 'show', link.id, ...asCrm]);
    assert.match(fields.stdout, new RegExp(`^id +${link.id}$`, 'm'));
    assert.match(fields.stdout, /^status +active$/m);
  });

  test('when the key is a PEM private key (ES256) in a file, then the CLI signs with it and linkvault accepts it', async () => {
    const listed = await cli([
      'links',
      'list',
      '--tenant',
      'acme',
      '--json',
      '--service',
      'crm-sync',
      '--kid',
      'crm-es',
      '--key-file',
      esKeyFile,
    ]);
    assert.equal(listed.stderr, '');
    assert.equal(listed.code, 0);
  });

  test('when grants are created, listed and deleted, then linkvault holds exactly that', async () => {
    const link = await connect('acme', `grant-${randomUUID().slice(0, 6)}`);
    const grant = json(
      await cli([
        'grants',
        'create',
        '--for',
        'billing',
        '--link',
        link.id,
        '--scope',
        'api:read',
        '--purpose',
        'cli test',
        '--json',
        ...asCrm,
      ]),
    );
    assert.equal(grant.service_id, 'billing');
    assert.equal(grant.link_id, link.id);
    assert.deepEqual(grant.scopes, ['api:read']);
    // The grant works: billing obtains the link's token.
    const token = await fetch(`${service.url}/v1/links/${link.id}/token`, {
      method: 'POST',
      headers: { authorization: services.bearer('billing-hs') },
    });
    assert.equal(token.status, 200);

    const listed = json(await cli(['grants', 'list', '--for', 'billing', '--json', ...asCrm]));
    assert.deepEqual(listed, await api('/v1/grants?service_id=billing'));
    assert.ok((listed.grants as { id: string }[]).some((g) => g.id === grant.id));
    const table = await cli(['grants', 'list', '--for', 'billing', ...asCrm]);
    assert.match(
      table.stdout,
      new RegExp(`^${String(grant.id)} +billing +- +- +${link.id} +api:read +- +cli test$`, 'm'),
    );

    const deleted = await cli(['grants', 'delete', String(grant.id), '--yes', ...asCrm]);
    assert.deepEqual(deleted, {
      code: 0,
      stdout: `grant ${String(grant.id)} deleted\n`,
      stderr: '',
    });
    const after = (await api('/v1/grants?service_id=billing')) as { grants: { id: string }[] };
    assert.ok(!after.grants.some((g) => g.id === grant.id));
    const refused = await fetch(`${service.url}/v1/links/${link.id}/token`, {
      method: 'POST',
      headers: { authorization: services.bearer('billing-hs') },
    });
    assert.equal(refused.status, 403);
  });

  test('when links revoke --yes is run, then the link is revoked and show prints its revocation record', async () => {
    const link = await connect('acme', `revoke-${randomUUID().slice(0, 6)}`);
    const record = json(
      await cli(['links', 'revoke', link.id, '--reason', 'cli test', '--yes', '--json', ...asCrm]),
    );
    assert.equal(record.link_id, link.id);
    assert.equal(record.revoked_by, 'service');
    assert.equal(record.reason, 'cli test');
    const shown = json(await cli(['links', 'show', link.id, '--json', ...asCrm]));
    assert.equal(shown.status, 'revoked');
    assert.equal((shown.revocation as { link_id: string }).link_id, link.id);
  });

  test('when a person is asked on a terminal, then "no" does nothing and "yes" revokes', async () => {
    const link = await connect('acme', `ask-${randomUUID().slice(0, 6)}`);
    const questions: string[] = [];
    const run = async (answer: string): Promise<{ code: number; err: string[] }> => {
      const err: string[] = [];
      const code = await runCli(['links', 'revoke', link.id, ...asCrm], {
        env: cliEnv,
        cwd: dir,
        out: () => {},
        err: (l) => err.push(l),
        ask: async (q) => {
          questions.push(q);
          return answer;
        },
      });
      return { code, err };
    };
    const no = await run('n');
    assert.equal(no.code, 3);
    assert.deepEqual(no.err, ['linkvault links revoke: not confirmed, nothing done']);
    assert.equal(((await api(`/v1/links/${link.id}`)) as { status: string }).status, 'active');
    assert.equal(
      questions[0],
      `linkvault links revoke: this will revoke link ${link.id}: its tokens are never released again and linkvault revokes them at the provider. Continue? [y/N] `,
    );
    const yes = await run('yes');
    assert.equal(yes.code, 0);
    assert.equal(((await api(`/v1/links/${link.id}`)) as { status: string }).status, 'revoked');
  });

  test('when a bulk revocation is created, then status follows its job', async () => {
    const tenant = `bulk-${randomUUID().slice(0, 6)}`;
    await connect(tenant, 'u1');
    await connect(tenant, 'u2');
    const started = json(
      await cli([
        'revocations',
        'create',
        '--tenant',
        tenant,
        '--reason',
        'offboarding',
        '--yes',
        '--json',
        ...asCrm,
      ]),
    );
    assert.equal(started.matched, 2);
    const status = json(
      await cli(['revocations', 'status', String(started.job_id), '--json', ...asCrm]),
    );
    assert.equal(status.job_id, started.job_id);
    assert.equal(status.total, 2);
    const human = await cli(['revocations', 'status', String(started.job_id), ...asCrm]);
    assert.match(human.stdout, new RegExp(`^job_id +${String(started.job_id)}$`, 'm'));
  });

  test('when a built-in provider without credentials is asked for, then the error names the two variables that enable it', async () => {
    const refused = await cli([
      'sessions',
      'create',
      '--tenant',
      'acme',
      '--user',
      'u1',
      '--provider',
      'hubspot',
      ...asCrm,
    ]);
    assert.equal(refused.code, 4);
    assert.match(
      refused.stderr,
      /^linkvault: linkvault answered 400 invalid_request: provider "hubspot" is not an enabled provider \(a catalogue provider is enabled by LINKVAULT_PROVIDER_HUBSPOT_CLIENT_ID and LINKVAULT_PROVIDER_HUBSPOT_CLIENT_SECRET\) \(request id \S+\)\n$/,
    );
    const session = json(
      await cli(['sessions', 'create', '--tenant', 'acme', '--user', 'u1', '--json', ...asCrm]),
    );
    const startConnect = (provider: string) =>
      fetch(`${service.url}/v1/connect/${provider}`, {
        method: 'POST',
        redirect: 'manual',
        headers: {
          accept: 'application/json',
          'content-type': 'application/json',
          authorization: `Bearer ${String(session.session_token)}`,
        },
        body: '{}',
      });
    const connect = await startConnect('hubspot');
    assert.equal(connect.status, 404);
    const problem = (await connect.json()) as Record<string, unknown>;
    assert.equal(problem.code, 'provider_not_found');
    assert.equal(
      problem.detail,
      'The provider "hubspot" is not enabled: the operator sets LINKVAULT_PROVIDER_HUBSPOT_CLIENT_ID and LINKVAULT_PROVIDER_HUBSPOT_CLIENT_SECRET to enable it',
    );
    const unknown = await startConnect('nosuchprovider');
    assert.equal(
      ((await unknown.json()) as { detail: string }).detail,
      'No such provider, or it is not enabled',
    );
  });

  test('when linkvault refuses, then the CLI prints its code and request id and exits 4; unreachable exits 1', async () => {
    const missing = await cli(['links', 'show', 'lnk_does_not_exist', ...asCrm]);
    assert.equal(missing.code, 4);
    assert.equal(missing.stdout, '');
    assert.match(
      missing.stderr,
      /^linkvault: linkvault answered 404 link_not_found: .+ \(request id \S+\)\n$/,
    );

    const wrongKey = await cli(
      ['links', 'list', '--service', 'crm-sync', '--kid', 'crm-hs', '--key-env', 'WRONG'],
      {
        WRONG: 'x'.repeat(40),
      },
    );
    assert.equal(wrongKey.code, 4);
    assert.match(wrongKey.stderr, /^linkvault: linkvault answered 401 unauthorized: /);
    assert.ok(!wrongKey.stderr.includes('x'.repeat(40)), 'the key is never printed');

    const auditor = await cli(
      ['grants', 'list', '--service', 'auditor', '--kid', 'auditor-hs', '--key-env', 'SECRET'],
      {
        SECRET: services.env.LV_TEST_AUDITOR_SECRET!,
      },
    );
    assert.equal(auditor.code, 4);
    assert.match(auditor.stderr, /^linkvault: linkvault answered 403 forbidden/);

    const closed = `http://127.0.0.1:${await freePort()}`;
    const unreachable = await cli(['links', 'list', '--url', closed, ...asCrm]);
    assert.equal(unreachable.code, 1);
    assert.equal(
      unreachable.stderr,
      `linkvault: cannot reach linkvault at ${closed} (ECONNREFUSED)\n`,
    );
  });
  test('when webhooks create, list, deliveries and delete are run, then they manage endpoints and print the secret only once', async () => {
    const created = json(
      await cli([
        'webhooks',
        'create',
        '--to',
        'http://127.0.0.1:9/hooks',
        '--event',
        'link.revoked',
        '--tenant',
        'acme',
        '--json',
        ...asCrm,
      ]),
    );
    assert.match(String(created.secret), /^whsec_/);
    assert.deepEqual(created.events, ['link.revoked']);
    const listed = await cli(['webhooks', 'list', ...asCrm]);
    assert.equal(listed.code, 0);
    assert.match(listed.stdout, new RegExp(String(created.id)));
    assert.equal(listed.stdout.includes(String(created.secret).slice(6)), false, 'no secret');
    const deliveries = json(
      await cli(['webhooks', 'deliveries', String(created.id), '--json', ...asCrm]),
    );
    assert.deepEqual(deliveries, { deliveries: [] });
    const unconfirmed = await cli(['webhooks', 'delete', String(created.id), ...asCrm]);
    assert.equal(unconfirmed.code, 3);
    const removed = await cli(['webhooks', 'delete', String(created.id), '--yes', ...asCrm]);
    assert.equal(removed.code, 0);
    const gone = await cli(['webhooks', 'deliveries', String(created.id), ...asCrm]);
    assert.equal(gone.code, 4);
    assert.match(gone.stderr, /webhook_endpoint_not_found/);
  });
});

describe('linkvault operator commands with --dev against a development linkvault', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lv-cli-dev-'));
  let service: ServiceProcess;
  before(async () => {
    service = await startServiceProcess({ cwd: dir, env: { LINKVAULT_LOG_LEVEL: 'info' } });
  });
  after(async () => {
    await service?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('when --dev is given, then the CLI signs as the development service and linkvault accepts it', async () => {
    const env = { LINKVAULT_PUBLIC_URL: service.url };
    const created = await runBin(
      [
        'sessions',
        'create',
        '--dev',
        '--tenant',
        't1',
        '--user',
        'u1',
        '--provider',
        'sandbox',
        '--json',
      ],
      { cwd: dir, env },
    );
    assert.equal(created.stderr, '');
    assert.equal(created.code, 0);
    assert.match(
      String((JSON.parse(created.stdout) as Record<string, unknown>).connect_url),
      /#session=/,
    );
    const listed = await runBin(['links', 'list', '--dev'], { cwd: dir, env });
    assert.deepEqual(listed, { code: 0, stdout: 'no links\n', stderr: '' });
    const mixed = await runBin(['links', 'list', '--dev', '--service', 'x'], { cwd: dir, env });
    assert.equal(mixed.code, 2);
    assert.match(
      mixed.stderr,
      /^linkvault links list: --dev signs as the development service: drop --service\n/,
    );
  });
});
