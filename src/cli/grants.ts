import {
  JSON_OPTION,
  listOption,
  requiredOption,
  stringOption,
  type CliCommand,
} from './command.js';
import { API_OPTIONS, connectApi, segment } from './linkvault-api.js';
import { printFields, printJson, printTable } from './output.js';

type Grant = Record<string, unknown>;

const GRANT_COLUMNS = [
  { header: 'id', value: (g: Grant) => g.id },
  { header: 'service', value: (g: Grant) => g.service_id },
  { header: 'tenant', value: (g: Grant) => g.tenant_id },
  { header: 'provider', value: (g: Grant) => g.provider_id },
  { header: 'link', value: (g: Grant) => g.link_id },
  // null means every scope of the link (docs/api.md, "Shapes").
  { header: 'scopes', value: (g: Grant) => (g.scopes === null ? '(all)' : g.scopes) },
  { header: 'expires', value: (g: Grant) => g.expires_at },
  { header: 'purpose', value: (g: Grant) => g.purpose },
];

export const grantCommands: readonly CliCommand[] = [
  {
    name: 'grants list',
    summary: 'list grants (GET /v1/grants; role admin)',
    options: {
      for: { type: 'string', value: 'SERVICE', description: 'only grants to this service id' },
      ...JSON_OPTION,
      ...API_OPTIONS,
    },
    async run(input, ctx) {
      const forService = stringOption(input, 'for');
      const api = await connectApi(input, ctx);
      const answer = (await api.call(
        'GET',
        `/v1/grants${forService === undefined ? '' : `?service_id=${encodeURIComponent(forService)}`}`,
      )) as { grants: Grant[] };
      if (input.options.json === true) printJson(ctx, answer);
      else printTable(ctx, GRANT_COLUMNS, answer.grants, 'no grants');
      return 0;
    },
  },
  {
    name: 'grants create',
    summary: 'let a service obtain tokens of some links (POST /v1/grants; role admin)',
    options: {
      for: {
        type: 'string',
        value: 'SERVICE',
        description: 'the service the grant is for (service_id; required)',
      },
      tenant: { type: 'string', value: 'ID', description: 'links of this tenant_id' },
      provider: { type: 'string', value: 'ID', description: 'links of this provider_id' },
      link: { type: 'string', value: 'ID', description: 'this one link_id' },
      scope: {
        type: 'string',
        value: 'SCOPE',
        multiple: true,
        description: 'a scope the service may ask for (repeat; default every scope of the link)',
      },
      purpose: {
        type: 'string',
        value: 'TEXT',
        description: 'why the service needs it (required)',
      },
      'expires-at': { type: 'string', value: 'TIME', description: 'RFC 3339 UTC expiry' },
      ...JSON_OPTION,
      ...API_OPTIONS,
    },
    details: ['A grant must name a tenant or a link; everything it names must match a link.'],
    async run(input, ctx) {
      const scopes = listOption(input, 'scope');
      const optional = (option: string, member: string): Record<string, string> => {
        const value = stringOption(input, option);
        return value === undefined ? {} : { [member]: value };
      };
      const body = {
        service_id: requiredOption(input, 'for'),
        ...optional('tenant', 'tenant_id'),
        ...optional('provider', 'provider_id'),
        ...optional('link', 'link_id'),
        ...(scopes.length === 0 ? {} : { scopes }),
        purpose: requiredOption(input, 'purpose'),
        ...optional('expires-at', 'expires_at'),
      };
      const api = await connectApi(input, ctx);
      const grant = (await api.call('POST', '/v1/grants', body)) as Grant;
      if (input.options.json === true) printJson(ctx, grant);
      else printFields(ctx, Object.entries(grant));
      return 0;
    },
  },
  {
    name: 'grants delete',
    summary: 'delete a grant (DELETE /v1/grants/{id}; role admin)',
    arguments: [{ name: 'GRANT_ID', description: 'the grant id' }],
    options: { ...JSON_OPTION, ...API_OPTIONS },
    confirm: (input) =>
      `delete grant ${input.positionals[0]}: its service can no longer obtain tokens through it`,
    async run(input, ctx) {
      const id = input.positionals[0]!;
      const api = await connectApi(input, ctx);
      await api.call('DELETE', `/v1/grants/${segment(id)}`);
      if (input.options.json === true) printJson(ctx, { id, deleted: true });
      else ctx.out(`grant ${id} deleted`);
      return 0;
    },
  },
];
