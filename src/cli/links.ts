import { JSON_OPTION, stringOption, type CliCommand } from './command.js';
import { API_OPTIONS, connectApi, segment } from './linkvault-api.js';
import { printFields, printJson, printTable } from './output.js';

type Link = Record<string, unknown>;

const LINK_COLUMNS = [
  { header: 'id', value: (l: Link) => l.id },
  { header: 'tenant', value: (l: Link) => l.tenant_id },
  { header: 'user', value: (l: Link) => l.user_id },
  { header: 'provider', value: (l: Link) => l.provider_id },
  { header: 'status', value: (l: Link) => l.status },
  { header: 'updated', value: (l: Link) => l.updated_at },
  { header: 'last used', value: (l: Link) => l.last_used_at },
];

/** A link's or a revocation record's members as `name value` lines (nested objects flattened one level). */
function fieldsOf(record: Record<string, unknown>): [string, unknown][] {
  const out: [string, unknown][] = [];
  for (const [name, value] of Object.entries(record)) {
    if (value !== null && typeof value === 'object' && !Array.isArray(value))
      for (const [inner, v] of Object.entries(value)) out.push([`${name}.${inner}`, v]);
    else out.push([name, value]);
  }
  return out;
}

export const linkCommands: readonly CliCommand[] = [
  {
    name: 'links list',
    summary: 'list links, filtered (GET /v1/links; role links:read)',
    options: {
      tenant: { type: 'string', value: 'ID', description: 'only this tenant_id' },
      user: { type: 'string', value: 'ID', description: 'only this user_id' },
      provider: { type: 'string', value: 'ID', description: 'only this provider_id' },
      status: {
        type: 'string',
        value: 'STATUS',
        description: 'only active, needs_reauth or revoked',
      },
      ...JSON_OPTION,
      ...API_OPTIONS,
    },
    async run(input, ctx) {
      const query = new URLSearchParams();
      for (const [option, param] of [
        ['tenant', 'tenant_id'],
        ['user', 'user_id'],
        ['provider', 'provider_id'],
        ['status', 'status'],
      ] as const) {
        const value = stringOption(input, option);
        if (value !== undefined) query.set(param, value);
      }
      const api = await connectApi(input, ctx);
      const qs = query.toString();
      const answer = (await api.call('GET', `/v1/links${qs ? `?${qs}` : ''}`)) as {
        links: Link[];
      };
      if (input.options.json === true) printJson(ctx, answer);
      else printTable(ctx, LINK_COLUMNS, answer.links, 'no links');
      return 0;
    },
  },
  {
    name: 'links show',
    summary:
      'show one link (GET /v1/links/{id}; role links:read), and its revocation record if revoked',
    arguments: [{ name: 'LINK_ID', description: 'the link id (lnk_…)' }],
    options: { ...JSON_OPTION, ...API_OPTIONS },
    async run(input, ctx) {
      const id = input.positionals[0]!;
      const api = await connectApi(input, ctx);
      const link = (await api.call('GET', `/v1/links/${segment(id)}`)) as Link;
      const revocation =
        link.status === 'revoked'
          ? ((await api.call('GET', `/v1/links/${segment(id)}/revocation`)) as Link)
          : null;
      if (input.options.json === true) printJson(ctx, revocation ? { ...link, revocation } : link);
      else {
        printFields(ctx, [
          ...fieldsOf(link),
          ...(revocation
            ? fieldsOf(revocation).map(([n, v]): [string, unknown] => [`revocation.${n}`, v])
            : []),
        ]);
      }
      return 0;
    },
  },
  {
    name: 'links revoke',
    summary:
      'revoke one link now and at the provider (DELETE /v1/links/{id}; role links:revoke); idempotent',
    arguments: [{ name: 'LINK_ID', description: 'the link id (lnk_…)' }],
    options: {
      reason: { type: 'string', value: 'TEXT', description: 'why (kept on the revocation record)' },
      ...JSON_OPTION,
      ...API_OPTIONS,
    },
    confirm: (input) =>
      `revoke link ${input.positionals[0]}: its tokens are never released again and linkvault revokes them at the provider`,
    async run(input, ctx) {
      const reason = stringOption(input, 'reason');
      const api = await connectApi(input, ctx);
      const record = (await api.call(
        'DELETE',
        `/v1/links/${segment(input.positionals[0]!)}`,
        reason === undefined ? undefined : { reason },
      )) as Link;
      if (input.options.json === true) printJson(ctx, record);
      else printFields(ctx, fieldsOf(record));
      return 0;
    },
  },
];
