import {
  JSON_OPTION,
  listOption,
  requiredOption,
  stringOption,
  UsageError,
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

const PROXY_METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'];

/**
 * `--proxy-allow "GET /crm/v3/**"` → `{method, path}`. Only the shape is checked here; linkvault
 * checks the template itself (400 invalid_request, 422 grant_never_matches) and says why.
 */
export function parseProxyAllow(rule: string): { method: string; path: string } {
  const match = /^\s*([A-Za-z]+)\s+(\/\S*)\s*$/.exec(rule);
  const method = match?.[1]!.toUpperCase();
  if (!match || !PROXY_METHODS.includes(method!))
    throw new UsageError(
      `--proxy-allow takes "METHOD /path" (METHOD one of ${PROXY_METHODS.join(', ')}; * one segment, ** the rest), got "${rule}"`,
    );
  return { method: method!, path: match[2]! };
}

/** The printed form of a grant: its proxy rules as `METHOD /path` lines, not a JSON object. */
function grantFields(grant: Grant): [string, unknown][] {
  return Object.entries(grant).map(([name, value]): [string, unknown] => {
    const rules = (value as { allow?: unknown } | null)?.allow;
    return name === 'proxy' && Array.isArray(rules)
      ? [
          name,
          (rules as { method: string; path: string }[])
            .map((r) => `${r.method} ${r.path}`)
            .join(', '),
        ]
      : [name, value];
  });
}

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
    summary:
      "let a service obtain tokens of some links, or call their provider's API through the proxy (POST /v1/grants; role admin)",
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
      'proxy-allow': {
        type: 'string',
        value: 'RULE',
        multiple: true,
        description:
          'a call the service may make through the proxy, "METHOD /path" (* one segment, ** the rest)',
      },
      'no-token-release': {
        type: 'boolean',
        description:
          'a proxy-only grant: the service never receives the token (needs --proxy-allow)',
      },
      ...JSON_OPTION,
      ...API_OPTIONS,
    },
    details: [
      'A grant must name a tenant or a link; everything it names must match a link.',
      "With --proxy-allow the service (role proxy) may call the provider's API through",
      'linkvault for those methods and paths; add --no-token-release so that it never',
      'holds the token: e.g. --proxy-allow "GET /crm/v3/**" --no-token-release.',
    ],
    async run(input, ctx) {
      const scopes = listOption(input, 'scope');
      const allow = listOption(input, 'proxy-allow').map(parseProxyAllow);
      const proxyOnly = input.options['no-token-release'] === true;
      if (proxyOnly && allow.length === 0)
        throw new UsageError(
          '--no-token-release makes a proxy-only grant: say what it allows with --proxy-allow',
        );
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
        ...(proxyOnly ? { token_release: false } : {}),
        ...(allow.length === 0 ? {} : { proxy: { allow } }),
      };
      const api = await connectApi(input, ctx);
      const grant = (await api.call('POST', '/v1/grants', body)) as Grant;
      if (input.options.json === true) printJson(ctx, grant);
      else printFields(ctx, grantFields(grant));
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
