import {
  JSON_OPTION,
  listOption,
  requiredOption,
  stringOption,
  type CliCommand,
} from './command.js';
import { API_OPTIONS, connectApi, segment } from './linkvault-api.js';
import { printFields, printJson, printTable } from './output.js';

type Row = Record<string, unknown>;

const ENDPOINT_COLUMNS = [
  { header: 'id', value: (e: Row) => e.id },
  { header: 'url', value: (e: Row) => e.url },
  { header: 'tenant', value: (e: Row) => e.tenant_id ?? '(all)' },
  { header: 'events', value: (e: Row) => e.events },
  { header: 'disabled', value: (e: Row) => e.disabled_at },
];

const DELIVERY_COLUMNS = [
  { header: 'event', value: (d: Row) => d.event_id },
  { header: 'type', value: (d: Row) => d.type },
  { header: 'status', value: (d: Row) => d.status },
  { header: 'attempts', value: (d: Row) => d.attempts },
  { header: 'last code', value: (d: Row) => d.last_status_code },
  { header: 'next attempt', value: (d: Row) => d.next_attempt_at },
];

export const webhookCommands: readonly CliCommand[] = [
  {
    name: 'webhooks list',
    summary: 'list webhook endpoints (GET /v1/webhook-endpoints; role admin)',
    options: { ...JSON_OPTION, ...API_OPTIONS },
    async run(input, ctx) {
      const api = await connectApi(input, ctx);
      const answer = (await api.call('GET', '/v1/webhook-endpoints')) as {
        webhook_endpoints: Row[];
      };
      if (input.options.json === true) printJson(ctx, answer);
      else printTable(ctx, ENDPOINT_COLUMNS, answer.webhook_endpoints, 'no webhook endpoints');
      return 0;
    },
  },
  {
    name: 'webhooks create',
    summary: 'register a webhook endpoint (POST /v1/webhook-endpoints; role admin)',
    options: {
      // Not --url: that option names the linkvault the command talks to (API_OPTIONS).
      to: {
        type: 'string',
        value: 'URL',
        description: 'the endpoint URL events are POSTed to (required; https in production)',
      },
      event: {
        type: 'string',
        value: 'TYPE',
        multiple: true,
        description: 'an event type to deliver (repeat; default every type)',
      },
      tenant: {
        type: 'string',
        value: 'ID',
        description: 'only events of links in this tenant_id',
      },
      ...JSON_OPTION,
      ...API_OPTIONS,
    },
    details: [
      'Prints the signing secret (whsec_…) once: linkvault never shows it again. Verify deliveries',
      'with it as docs/webhooks.md describes (Standard Webhooks).',
    ],
    async run(input, ctx) {
      const events = listOption(input, 'event');
      const tenant = stringOption(input, 'tenant');
      const api = await connectApi(input, ctx);
      const created = (await api.call('POST', '/v1/webhook-endpoints', {
        url: requiredOption(input, 'to'),
        ...(events.length === 0 ? {} : { events }),
        ...(tenant === undefined ? {} : { tenant_id: tenant }),
      })) as Row;
      if (input.options.json === true) printJson(ctx, created);
      else printFields(ctx, Object.entries(created));
      return 0;
    },
  },
  {
    name: 'webhooks delete',
    summary: 'remove a webhook endpoint (DELETE /v1/webhook-endpoints/{id}; role admin)',
    arguments: [{ name: 'ENDPOINT_ID', description: 'the endpoint id (whe_…)' }],
    options: { ...JSON_OPTION, ...API_OPTIONS },
    confirm: (input) =>
      `remove webhook endpoint ${input.positionals[0]}: it receives no more events, retries included`,
    async run(input, ctx) {
      const id = input.positionals[0]!;
      const api = await connectApi(input, ctx);
      await api.call('DELETE', `/v1/webhook-endpoints/${segment(id)}`);
      if (input.options.json === true) printJson(ctx, { id, deleted: true });
      else ctx.out(`webhook endpoint ${id} removed`);
      return 0;
    },
  },
  {
    name: 'webhooks deliveries',
    summary: "an endpoint's recent deliveries (GET /v1/webhook-endpoints/{id}/deliveries)",
    arguments: [{ name: 'ENDPOINT_ID', description: 'the endpoint id (whe_…)' }],
    options: { ...JSON_OPTION, ...API_OPTIONS },
    async run(input, ctx) {
      const id = input.positionals[0]!;
      const api = await connectApi(input, ctx);
      const answer = (await api.call('GET', `/v1/webhook-endpoints/${segment(id)}/deliveries`)) as {
        deliveries: Row[];
      };
      if (input.options.json === true) printJson(ctx, answer);
      else printTable(ctx, DELIVERY_COLUMNS, answer.deliveries, 'no deliveries');
      return 0;
    },
  },
];
