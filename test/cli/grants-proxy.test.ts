import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { LinkRecord } from '../../src/links/link.js';
import { CLIENT, makeProxyServices, startStandInApi } from '../links/proxy/proxy-harness.js';
import type { StandInApi } from '../links/proxy/proxy-harness.js';
import type { TestServices } from '../support/service-jwt.js';
import type { ServiceProcess } from '../support/service-process.js';
import {
  startServiceWithProvider,
  type ServiceWithProvider,
} from '../support/service-with-provider.js';
import { runBin, type CliOutcome } from './run-cli.js';

/**
 * `linkvault grants create --proxy-allow … --no-token-release` against a real linkvault process
 * (SQLite), a link connected through node-oidc-provider, and a stand-in provider API: the grant
 * the CLI creates is exactly what linkvault then enforces on the proxy and the token routes.
 */

const REDIRECT = 'http://127.0.0.1:3000/v1/oauth/callback/acme';

describe('linkvault grants create with proxy rules, against a running linkvault', () => {
  let lv: ServiceWithProvider;
  let api: StandInApi;
  let services: TestServices;
  let service: ServiceProcess;
  let dir: string;
  let cliEnv: Record<string, string>;
  const connect = (userId: string): Promise<LinkRecord> =>
    lv.connect({
      tenantId: 'tenant-a',
      userId,
      linkId: `lnk_cli_proxy_${userId}`,
      accountId: `acct-${userId}`,
    });

  before(async () => {
    api = await startStandInApi();
    lv = await startServiceWithProvider({
      providerId: 'acme',
      client: { ...CLIENT, redirect_uris: [REDIRECT] },
      services: makeProxyServices(),
      entryOverrides: { api_hosts: ['localhost'], api_base_url: api.baseUrl },
      name: 'lv-cli-proxy',
    });
    ({ services, service, dir } = lv);
    cliEnv = {
      LV_PROXY_TEST_ADMIN_SVC: services.env.LV_PROXY_TEST_ADMIN_SVC!,
      LINKVAULT_PUBLIC_URL: service.url,
    };
  });
  after(async () => {
    await lv?.close();
    await api?.close();
  });

  const asAdmin = [
    '--service',
    'admin-svc',
    '--kid',
    'admin-svc',
    '--key-env',
    'LV_PROXY_TEST_ADMIN_SVC',
  ];
  const cli = (args: string[]): Promise<CliOutcome> =>
    runBin(['grants', 'create', ...args, ...asAdmin], { cwd: dir, env: cliEnv });
  const json = (outcome: CliOutcome): Record<string, unknown> => {
    assert.equal(outcome.stderr, '');
    assert.equal(outcome.code, 0);
    return JSON.parse(outcome.stdout) as Record<string, unknown>;
  };
  /** `both` (roles proxy and tokens) calling linkvault: status and code (or the API's answer). */
  const asBoth = async (method: string, path: string) => {
    const res = await fetch(`${service.url}${path}`, {
      method,
      headers: { authorization: services.bearer('both') },
    });
    const body = (await res.json()) as { code?: string };
    return [res.status, body.code ?? 'relayed'];
  };
  const grantsOf = async (): Promise<unknown[]> => {
    const res = await fetch(`${service.url}/v1/grants?service_id=both`, {
      headers: { authorization: services.bearer('admin-svc') },
    });
    return ((await res.json()) as { grants: unknown[] }).grants;
  };

  test('when a proxy-only grant is created, then the service may make exactly those calls and never gets the token', async () => {
    const link = await connect('only');
    const grant = json(
      await cli([
        '--for',
        'both',
        '--link',
        link.id,
        '--purpose',
        'contact sync',
        '--proxy-allow',
        'GET /crm/v3/**',
        '--proxy-allow',
        'post /crm/v3/objects/notes',
        '--no-token-release',
        '--json',
      ]),
    );
    assert.equal(grant.token_release, false);
    assert.deepEqual(grant.proxy, {
      allow: [
        { method: 'GET', path: '/crm/v3/**' },
        { method: 'POST', path: '/crm/v3/objects/notes' },
      ],
    });
    const seen = api.received.length;
    assert.deepEqual(await asBoth('GET', `/v1/links/${link.id}/proxy/crm/v3/objects/contacts`), [
      200,
      'relayed',
    ]);
    assert.deepEqual(await asBoth('POST', `/v1/links/${link.id}/proxy/crm/v3/objects/notes`), [
      200,
      'relayed',
    ]);
    assert.equal(api.received.length - seen, 2);
    assert.deepEqual(await asBoth('DELETE', `/v1/links/${link.id}/proxy/crm/v3/objects/1`), [
      403,
      'proxy_not_allowed',
    ]);
    assert.deepEqual(await asBoth('GET', `/v1/links/${link.id}/proxy/files/a`), [
      403,
      'proxy_not_allowed',
    ]);
    assert.deepEqual(await asBoth('POST', `/v1/links/${link.id}/token`), [403, 'no_grant']);
  });

  test('when proxy rules come without --no-token-release, then the grant releases the token too, and the table shows the rules', async () => {
    const link = await connect('both');
    const created = await cli([
      '--for',
      'both',
      '--link',
      link.id,
      '--purpose',
      'file sync',
      '--proxy-allow',
      'GET /files/**',
    ]);
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stdout, /^proxy +GET \/files\/\*\*$/m);
    assert.doesNotMatch(created.stdout, /token_release/);
    assert.deepEqual(await asBoth('GET', `/v1/links/${link.id}/proxy/files/report.csv`), [
      200,
      'relayed',
    ]);
    const token = await fetch(`${service.url}/v1/links/${link.id}/token`, {
      method: 'POST',
      headers: { authorization: services.bearer('both') },
    });
    assert.equal(token.status, 200);
  });

  test('when the flags are wrong, then the CLI refuses before sending, and linkvault refuses a rule it cannot match', async () => {
    const before = await grantsOf();
    for (const [args, message] of [
      [['--no-token-release'], /--no-token-release .* --proxy-allow/],
      [['--proxy-allow', 'FETCH /crm/**'], /--proxy-allow takes "METHOD \/path"/],
      [['--proxy-allow', 'GET crm/**'], /--proxy-allow takes "METHOD \/path"/],
      [['--proxy-allow', 'GET'], /--proxy-allow takes "METHOD \/path"/],
    ] as const) {
      const outcome = await cli([
        '--for',
        'both',
        '--tenant',
        'tenant-a',
        '--purpose',
        'x',
        ...args,
      ]);
      assert.equal(outcome.code, 2, outcome.stderr);
      assert.match(outcome.stderr, message);
    }
    assert.deepEqual(await grantsOf(), before);
    const refused = await cli([
      '--for',
      'both',
      '--tenant',
      'tenant-a',
      '--purpose',
      'x',
      '--proxy-allow',
      'GET /crm/../admin',
    ]);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /invalid_request|grant_never_matches/);
    assert.deepEqual(await grantsOf(), before);
  });
});
