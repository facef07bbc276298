import {
  JSON_OPTION,
  requiredOption,
  stringOption,
  UsageError,
  type CliCommand,
  type CommandInput,
} from './command.js';
import { API_OPTIONS, connectApi, segment } from './linkvault-api.js';
import { printFields, printJson } from './output.js';

/** What the route requires, checked before anyone is asked to confirm. */
function checkScope(input: CommandInput): void {
  if (stringOption(input, 'tenant') === undefined && stringOption(input, 'provider') === undefined)
    throw new UsageError('--tenant or --provider is required');
  if (stringOption(input, 'user') !== undefined && stringOption(input, 'tenant') === undefined)
    throw new UsageError('--user needs --tenant');
  requiredOption(input, 'reason');
}

export const revocationCommands: readonly CliCommand[] = [
  {
    name: 'revocations create',
    summary:
      'revoke every link of a tenant, a user or a provider (POST /v1/revocations; role admin)',
    options: {
      tenant: { type: 'string', value: 'ID', description: 'links of this tenant_id' },
      user: { type: 'string', value: 'ID', description: 'links of this user_id (needs --tenant)' },
      provider: {
        type: 'string',
        value: 'ID',
        description: 'links of this provider_id (alone: across every tenant)',
      },
      reason: {
        type: 'string',
        value: 'TEXT',
        description: 'why (required; kept on every record)',
      },
      ...JSON_OPTION,
      ...API_OPTIONS,
    },
    details: [
      'Answers at once with a job id; follow it with `linkvault revocations status JOB_ID`.',
    ],
    confirm: (input) => {
      checkScope(input);
      const scope = [
        ['tenant', stringOption(input, 'tenant')],
        ['user', stringOption(input, 'user')],
        ['provider', stringOption(input, 'provider')],
      ]
        .filter(([, v]) => v !== undefined)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ');
      return `revoke EVERY link of ${scope || '(nothing named)'} now and at the providers`;
    },
    async run(input, ctx) {
      checkScope(input);
      const tenant = stringOption(input, 'tenant');
      const user = stringOption(input, 'user');
      const provider = stringOption(input, 'provider');
      const body = {
        ...(tenant === undefined ? {} : { tenant_id: tenant }),
        ...(user === undefined ? {} : { user_id: user }),
        ...(provider === undefined ? {} : { provider_id: provider }),
        reason: requiredOption(input, 'reason'),
      };
      const api = await connectApi(input, ctx);
      const started = (await api.call('POST', '/v1/revocations', body)) as Record<string, unknown>;
      if (input.options.json === true) printJson(ctx, started);
      else printFields(ctx, Object.entries(started));
      return 0;
    },
  },
  {
    name: 'revocations status',
    summary: 'show a bulk revocation job (GET /v1/revocations/{job_id}; role admin)',
    arguments: [{ name: 'JOB_ID', description: 'the job id printed by revocations create' }],
    options: { ...JSON_OPTION, ...API_OPTIONS },
    async run(input, ctx) {
      const api = await connectApi(input, ctx);
      const status = (await api.call(
        'GET',
        `/v1/revocations/${segment(input.positionals[0]!)}`,
      )) as Record<string, unknown>;
      if (input.options.json === true) printJson(ctx, status);
      else printFields(ctx, Object.entries(status));
      return 0;
    },
  },
];
