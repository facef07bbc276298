/**
 * JSON Schemas (2020-12, the OpenAPI 3.1 dialect) of the bodies the API takes and answers, by the
 * names route-table.ts uses. Answers are closed (`additionalProperties: false`) so that a member
 * added to a route without a line here fails the answer-validation test.
 */

type Schema = Readonly<Record<string, unknown>>;

const string = { type: 'string' } as const;
const dateTime = { type: 'string', format: 'date-time' } as const;
const nullableDateTime = { type: ['string', 'null'], format: 'date-time' } as const;
const nullableString = { type: ['string', 'null'] } as const;
const stringList = { type: 'array', items: string } as const;
const count = { type: 'integer', minimum: 0 } as const;

const WEBHOOK_EVENTS = [
  'link.connected',
  'link.reconnected',
  'link.needs_reauth',
  'link.refresh_failed',
  'link.recovered',
  'link.revoked',
  'link.revocation_confirmed',
  'link.revocation_failed',
];
const ENDPOINT_MEMBERS = [
  'id',
  'url',
  'events',
  'tenant_id',
  'created_at',
  'disabled_at',
  'disabled_reason',
] as const;
const ENDPOINT_PROPERTIES: Record<string, Schema> = {
  id: string,
  url: { type: 'string', format: 'uri' },
  events: { type: 'array', items: { enum: WEBHOOK_EVENTS } },
  tenant_id: nullableString,
  created_at: dateTime,
  disabled_at: nullableDateTime,
  disabled_reason: nullableString,
};

function closed(required: readonly string[], properties: Record<string, Schema>): Schema {
  return { type: 'object', required, properties, additionalProperties: false };
}

function ref(name: string): Schema {
  return { $ref: `#/components/schemas/${name}` };
}

export const OPENAPI_SCHEMAS: Readonly<Record<string, Schema>> = {
  Problem: {
    type: 'object',
    description:
      'RFC 9457 problem details. `code` is stable (docs/errors.md); other members (e.g. `parameter`) may be added.',
    required: ['type', 'title', 'status', 'code', 'request_id'],
    properties: {
      type: { type: 'string', format: 'uri' },
      title: string,
      status: { type: 'integer', minimum: 400, maximum: 599 },
      code: { type: 'string', pattern: '^[a-z][a-z_]*$' },
      detail: string,
      request_id: string,
    },
  },
  ProxiedBody: {
    description:
      "The provider's body, bytes as it sent them (the proxy route): linkvault neither reads nor reshapes it.",
  },
  Health: closed(['status'], { status: { const: 'ok' } }),
  Readiness: closed(['status', 'checks'], {
    status: { const: 'ready' },
    checks: { type: 'object', additionalProperties: string },
  }),
  OpenApiDocument: {
    type: 'object',
    required: ['openapi', 'info', 'paths'],
    properties: {
      openapi: { type: 'string', pattern: '^3\\.1\\.' },
      info: { type: 'object' },
      paths: { type: 'object' },
    },
  },
  Provider: closed(['id', 'name', 'category', 'scopes', 'privacy'], {
    id: string,
    name: string,
    category: string,
    scopes: {
      type: 'array',
      items: closed(['name', 'description'], { name: string, description: nullableString }),
    },
    privacy: closed(['settings_url', 'instructions', 'policy_url'], {
      settings_url: nullableString,
      instructions: string,
      policy_url: string,
    }),
  }),
  ProviderList: closed(['providers'], { providers: { type: 'array', items: ref('Provider') } }),
  MyProviders: closed(['providers', 'user_display', 'app_name', 'require_confirmation'], {
    providers: { type: 'array', items: ref('Provider') },
    user_display: { ...nullableString, description: 'Whom the connection is for.' },
    app_name: { ...nullableString, description: 'LINKVAULT_APP_NAME.' },
    require_confirmation: { type: 'boolean' },
  }),
  SessionRequest: closed(['tenant_id', 'user_id'], {
    tenant_id: string,
    user_id: string,
    user_display: {
      type: 'string',
      minLength: 1,
      maxLength: 128,
      description: 'Shown on the hosted pages: whom the connection is for (no control characters).',
    },
    require_confirmation: {
      type: 'boolean',
      description:
        'Hold new links until POST /v1/confirmations confirms them (default LINKVAULT_REQUIRE_CONNECT_CONFIRMATION).',
    },
    providers: { ...stringList, description: 'Providers this session may connect (default: all).' },
    return_to: { type: 'string', format: 'uri', description: 'Must match the allowlist.' },
  }),
  Session: closed(['session_token', 'expires_at', 'connect_url', 'manage_url'], {
    session_token: string,
    expires_at: dateTime,
    connect_url: { type: 'string', format: 'uri' },
    manage_url: { type: 'string', format: 'uri' },
  }),
  ConnectResult: {
    oneOf: [
      closed(['status', 'link_id', 'provider'], {
        status: { const: 'connected' },
        link_id: string,
        provider: string,
      }),
      closed(['status', 'confirmation_id', 'provider'], {
        status: { const: 'confirm' },
        confirmation_id: string,
        provider: string,
      }),
    ],
  },
  ConnectStartRequest: {
    type: 'object',
    description: "`display`, and the provider's template variables (strings) by name.",
    properties: { display: { enum: ['page', 'popup'] } },
    additionalProperties: { type: 'string', maxLength: 512 },
    maxProperties: 16,
  },
  ConnectStart: closed(['authorization_url'], {
    authorization_url: { type: 'string', format: 'uri' },
  }),
  ConfirmationRequest: closed(['tenant_id', 'user_id'], { tenant_id: string, user_id: string }),
  Link: closed(
    [
      'id',
      'tenant_id',
      'user_id',
      'provider_id',
      'status',
      'granted_scopes',
      'metadata',
      'created_at',
      'updated_at',
      'last_refreshed_at',
      'last_used_at',
    ],
    {
      id: string,
      tenant_id: string,
      user_id: string,
      provider_id: string,
      status: { enum: ['active', 'needs_reauth', 'revoked', 'pending_confirmation'] },
      granted_scopes: stringList,
      metadata: { type: 'object', additionalProperties: string },
      created_at: dateTime,
      updated_at: dateTime,
      last_refreshed_at: nullableDateTime,
      last_used_at: nullableDateTime,
    },
  ),
  LinkList: closed(['links'], { links: { type: 'array', items: ref('Link') } }),
  TokenRequest: closed([], {
    scopes: { ...stringList, minItems: 1 },
    min_validity_seconds: { type: 'integer', minimum: 0 },
    force_refresh: { type: 'boolean' },
  }),
  AccessToken: closed(['access_token', 'token_type', 'expires_at', 'scopes', 'metadata'], {
    access_token: string,
    token_type: string,
    expires_at: nullableDateTime,
    scopes: { type: ['array', 'null'], items: string },
    metadata: { type: 'object', additionalProperties: string },
  }),
  RevokeRequest: closed([], { reason: { type: 'string', minLength: 1, maxLength: 200 } }),
  RevocationRecord: closed(
    [
      'link_id',
      'tenant_id',
      'user_id',
      'provider_id',
      'revoked_at',
      'revoked_by',
      'reason',
      'provider_revocation',
      'guidance',
    ],
    {
      link_id: string,
      tenant_id: string,
      user_id: string,
      provider_id: string,
      revoked_at: dateTime,
      revoked_by: { enum: ['user', 'service', 'admin', 'provider'] },
      reason: string,
      provider_revocation: closed(['status', 'attempts'], {
        status: { enum: ['confirmed', 'unsupported', 'pending', 'failed'] },
        attempts: count,
      }),
      guidance: closed(['provider_name', 'settings_url', 'instructions', 'privacy_policy_url'], {
        provider_name: string,
        settings_url: nullableString,
        instructions: nullableString,
        privacy_policy_url: nullableString,
      }),
    },
  ),
  BulkRevocationRequest: closed(['reason'], {
    tenant_id: string,
    user_id: string,
    provider_id: string,
    reason: { type: 'string', minLength: 1, maxLength: 200 },
  }),
  BulkRevocationStarted: closed(['job_id', 'matched'], { job_id: string, matched: count }),
  BulkRevocationStatus: closed(
    [
      'job_id',
      'status',
      'total',
      'revoked',
      'provider_confirmed',
      'provider_failed',
      'provider_unsupported',
    ],
    {
      job_id: string,
      status: { enum: ['running', 'done'] },
      total: count,
      revoked: count,
      provider_confirmed: count,
      provider_failed: count,
      provider_unsupported: count,
    },
  ),
  GrantRequest: closed(['service_id', 'purpose'], {
    service_id: string,
    tenant_id: nullableString,
    provider_id: nullableString,
    link_id: nullableString,
    scopes: { type: ['array', 'null'], items: string },
    purpose: string,
    expires_at: nullableDateTime,
    token_release: { type: 'boolean' },
    proxy: { anyOf: [ref('ProxyRules'), { type: 'null' }] },
  }),
  ProxyRules: closed(['allow'], {
    allow: {
      type: 'array',
      minItems: 1,
      maxItems: 100,
      items: closed(['method', 'path'], {
        method: { enum: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] },
        path: { type: 'string', minLength: 1, maxLength: 512, pattern: '^/' },
      }),
    },
  }),
  Grant: closed(
    [
      'id',
      'service_id',
      'tenant_id',
      'provider_id',
      'link_id',
      'scopes',
      'purpose',
      'created_at',
      'expires_at',
    ],
    {
      id: string,
      service_id: string,
      tenant_id: nullableString,
      provider_id: nullableString,
      link_id: nullableString,
      scopes: { type: ['array', 'null'], items: string },
      purpose: string,
      created_at: dateTime,
      expires_at: nullableDateTime,
      token_release: { type: 'boolean', const: false },
      proxy: ref('ProxyRules'),
    },
  ),
  GrantList: closed(['grants'], { grants: { type: 'array', items: ref('Grant') } }),
  WebhookEndpointRequest: closed(['url'], {
    url: { type: 'string', format: 'uri' },
    events: { type: ['array', 'null'], items: { enum: WEBHOOK_EVENTS }, minItems: 1 },
    tenant_id: nullableString,
  }),
  WebhookEndpoint: closed(ENDPOINT_MEMBERS, ENDPOINT_PROPERTIES),
  CreatedWebhookEndpoint: closed([...ENDPOINT_MEMBERS, 'secret'], {
    ...ENDPOINT_PROPERTIES,
    secret: { type: 'string', pattern: '^whsec_' },
  }),
  AuditEvent: {
    type: 'object',
    required: ['seq', 'shard', 'at', 'type', 'request_id', 'data'],
    properties: {
      seq: string,
      shard: string,
      at: dateTime,
      type: string,
      request_id: nullableString,
      service_id: string,
      link_id: string,
      tenant_id: string,
      user_id: string,
      provider_id: string,
      grant_id: string,
      data: { type: 'object', description: 'The event; a token appears only as its keyed label.' },
    },
    additionalProperties: false,
  },
  AuditPage: closed(['events', 'next'], {
    events: { type: 'array', items: ref('AuditEvent') },
    next: nullableString,
  }),
  LinkActivity: closed(['summary', 'events'], {
    summary: {
      type: 'array',
      items: closed(['service_id', 'purpose', 'releases', 'last_at'], {
        service_id: string,
        purpose: nullableString,
        releases: count,
        last_at: dateTime,
      }),
    },
    events: {
      type: 'array',
      maxItems: 100,
      items: {
        type: 'object',
        required: ['at', 'type'],
        properties: { at: dateTime, type: string, service_id: string, purpose: string },
        additionalProperties: false,
      },
    },
  }),
  WebhookEndpointList: closed(['webhook_endpoints'], {
    webhook_endpoints: { type: 'array', items: ref('WebhookEndpoint') },
  }),
  WebhookDeliveryList: closed(['deliveries'], {
    deliveries: {
      type: 'array',
      items: closed(
        ['event_id', 'type', 'status', 'attempts', 'last_status_code', 'next_attempt_at'],
        {
          event_id: string,
          type: { enum: WEBHOOK_EVENTS },
          status: { enum: ['delivered', 'retrying', 'failed'] },
          attempts: count,
          last_status_code: { type: ['integer', 'null'] },
          next_attempt_at: nullableDateTime,
        },
      ),
    },
  }),
};
