import type { ServiceRole } from '../auth/services-file.js';
import type { ErrorCode } from '../errors.js';

/**
 * The one declaration of every route linkvault serves: method, path template, who may call it,
 * what it takes and what it answers, and the error codes it can give. The OpenAPI document
 * (openapi.ts, GET /openapi.json) is generated from it, the 405/OPTIONS `Allow` answers
 * (route-fallback.ts) are computed from it, and test/http/openapi-routes.test.ts checks that the
 * mounted routers serve exactly these routes and that their real answers match the schemas.
 *
 * Adding a route is one entry here (schemas by name from openapi-schemas.ts) next to its handler.
 */

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/** none: anyone; service: a service JWT (optionally a role); session: a session bearer. */
export type RouteSecurity = 'none' | 'service' | 'session';

export interface RouteParameter {
  readonly name: string;
  readonly in: 'query' | 'path';
  readonly description: string;
  readonly schema: Readonly<Record<string, unknown>>;
  readonly required?: boolean;
}

export interface RouteAnswer {
  /** The status; `default`: any status not declared otherwise (the proxy's relayed answers). */
  readonly status: number | 'default';
  readonly description: string;
  /** A schema name in openapi-schemas.ts (application/json unless contentType says otherwise); none: no body. */
  readonly schema?: string;
  readonly contentType?: string;
  /** Answer headers worth declaring (name → description). */
  readonly headers?: Readonly<Record<string, string>>;
}

export interface RouteSpec {
  readonly method: HttpMethod;
  /** OpenAPI path template: `/v1/links/{id}`. Express spells it `/v1/links/:id` (expressPath). */
  readonly path: string;
  readonly operationId: string;
  readonly summary: string;
  readonly tag: string;
  readonly security: RouteSecurity;
  /** The service role the route requires (security 'service'). */
  readonly role?: ServiceRole;
  /** In the OpenAPI document (the public API); false for pages, assets and operations endpoints. */
  readonly api: boolean;
  /**
   * `node-http`: answered on node:http before Express (proxy-routes.ts), so no router mounts it;
   * its last path parameter takes the rest of the path, slashes included, and GET does not imply
   * HEAD (route-fallback.ts).
   */
  readonly servedBy?: 'node-http';
  /** Mounted only with this feature on (the sandbox provider's pages). */
  readonly only?: 'sandbox';
  readonly parameters?: readonly RouteParameter[];
  /** Request body schema name (application/json). */
  readonly body?: { readonly schema: string; readonly required: boolean };
  readonly answers: readonly RouteAnswer[];
  /** Error codes this route can answer with, besides the ones every route of its kind can (routeErrors). */
  readonly errors: readonly ErrorCode[];
}

const ID = { type: 'string', minLength: 1, maxLength: 512 } as const;

function pathParam(name: string, description: string): RouteParameter {
  return { name, in: 'path', description, schema: ID, required: true };
}

function queryParam(
  name: string,
  description: string,
  schema: Readonly<Record<string, unknown>> = ID,
): RouteParameter {
  return { name, in: 'query', description, schema };
}

const LINK_ID = pathParam('id', 'The link id (`lnk_…`).');
const NO_STORE = { 'Cache-Control': '`no-store`' };

const json = (status: number, description: string, schema: string): RouteAnswer => ({
  status,
  description,
  schema,
});

/** Every route linkvault serves (the sandbox's pages only with LINKVAULT_SANDBOX). */
export const ROUTE_TABLE: readonly RouteSpec[] = [
  // Operations
  {
    method: 'GET',
    path: '/healthz',
    operationId: 'getHealth',
    summary: 'The process is up',
    tag: 'operations',
    security: 'none',
    api: true,
    answers: [json(200, 'Up', 'Health')],
    errors: [],
  },
  {
    method: 'GET',
    path: '/readyz',
    operationId: 'getReadiness',
    summary: 'Ready when the store and the key provider answer',
    tag: 'operations',
    security: 'none',
    api: true,
    answers: [json(200, 'Ready', 'Readiness')],
    errors: ['not_ready'],
  },
  {
    method: 'GET',
    path: '/metrics',
    operationId: 'getMetrics',
    summary: 'Prometheus metrics',
    tag: 'operations',
    security: 'none',
    api: false,
    answers: [{ status: 200, description: 'Metrics', contentType: 'text/plain' }],
    errors: [],
  },
  {
    method: 'GET',
    path: '/openapi.json',
    operationId: 'getOpenApiDocument',
    summary: 'This OpenAPI 3.1 document',
    tag: 'operations',
    security: 'none',
    api: true,
    answers: [json(200, 'The document', 'OpenApiDocument')],
    errors: [],
  },

  // Providers
  {
    method: 'GET',
    path: '/v1/providers',
    operationId: 'listProviders',
    summary: 'Enabled providers',
    tag: 'providers',
    security: 'none',
    api: true,
    answers: [json(200, 'Enabled providers', 'ProviderList')],
    errors: [],
  },
  {
    method: 'GET',
    path: '/v1/me/providers',
    operationId: 'listMyProviders',
    summary: 'The enabled providers this session may connect',
    tag: 'providers',
    security: 'session',
    api: true,
    answers: [json(200, 'Providers, whom the session is for, and the app name', 'MyProviders')],
    errors: [],
  },

  // Connect
  {
    method: 'POST',
    path: '/v1/sessions',
    operationId: 'createSession',
    summary: 'Mint a session for one end user',
    tag: 'sessions',
    security: 'service',
    role: 'sessions',
    api: true,
    body: { schema: 'SessionRequest', required: true },
    answers: [{ ...json(201, 'Session created', 'Session'), headers: NO_STORE }],
    errors: ['invalid_return_to', 'provider_not_found'],
  },
  {
    method: 'POST',
    path: '/v1/connect/{provider_id}',
    operationId: 'startConnect',
    summary: "Start a connect flow (linkvault's own pages and SDK popup only)",
    tag: 'connect',
    security: 'session',
    api: true,
    parameters: [pathParam('provider_id', 'The provider to connect.')],
    body: { schema: 'ConnectStartRequest', required: false },
    answers: [
      {
        ...json(
          200,
          "The provider's authorization URL; the flow's binding cookie is set",
          'ConnectStart',
        ),
        headers: NO_STORE,
      },
    ],
    errors: [
      'cross_site_request',
      'provider_not_found',
      'provider_not_allowed',
      'rate_limited',
      'provider_unavailable',
      'provider_misconfigured',
    ],
  },
  {
    method: 'POST',
    path: '/v1/confirmations/{confirmation_id}',
    operationId: 'confirmConnect',
    summary: "Confirm a link held for the session's tenant and user",
    tag: 'connect',
    security: 'service',
    role: 'sessions',
    api: true,
    parameters: [pathParam('confirmation_id', 'The id the callback gave (`status=confirm`).')],
    body: { schema: 'ConfirmationRequest', required: true },
    answers: [{ ...json(200, 'The link, now active', 'Link'), headers: NO_STORE }],
    errors: [
      'confirmation_not_found',
      'confirmation_mismatch',
      'conflict',
      'key_service_unavailable',
      'audit_unavailable',
    ],
  },
  {
    method: 'GET',
    path: '/v1/oauth/callback/{provider_id}',
    operationId: 'completeConnect',
    summary: "The provider's redirect back (browser)",
    tag: 'connect',
    security: 'none',
    api: true,
    parameters: [pathParam('provider_id', 'The provider.')],
    answers: [
      {
        status: 303,
        description: 'To return_to or the hosted result page',
        headers: { Location: 'Where the browser goes next' },
      },
      json(200, 'The outcome, to a client that asks for JSON', 'ConnectResult'),
    ],
    errors: [
      'invalid_state',
      'flow_binding_mismatch',
      'issuer_mismatch',
      'provider_denied',
      'authorization_code_rejected',
      'invalid_token_response',
      'provider_error',
      'provider_unavailable',
      'provider_misconfigured',
      'key_service_unavailable',
      'audit_unavailable',
      'rate_limited',
    ],
  },

  // Links
  {
    method: 'GET',
    path: '/v1/links',
    operationId: 'listLinks',
    summary: 'List links',
    tag: 'links',
    security: 'service',
    role: 'links:read',
    api: true,
    parameters: [
      queryParam('tenant_id', 'Only this tenant.'),
      queryParam('user_id', 'Only this user.'),
      queryParam('provider_id', 'Only this provider.'),
      queryParam('status', 'Only links in this status.', {
        type: 'string',
        enum: ['active', 'needs_reauth', 'revoked'],
      }),
    ],
    answers: [json(200, 'Links', 'LinkList')],
    errors: [],
  },
  {
    method: 'GET',
    path: '/v1/links/{id}',
    operationId: 'getLink',
    summary: 'One link (never tokens)',
    tag: 'links',
    security: 'service',
    role: 'links:read',
    api: true,
    parameters: [LINK_ID],
    answers: [json(200, 'The link', 'Link')],
    errors: ['link_not_found'],
  },
  {
    method: 'GET',
    path: '/v1/me/links',
    operationId: 'listMyLinks',
    summary: "The session user's links",
    tag: 'links',
    security: 'session',
    api: true,
    answers: [json(200, 'Links', 'LinkList')],
    errors: [],
  },
  {
    method: 'POST',
    path: '/v1/links/{id}/token',
    operationId: 'getToken',
    summary: "Release the link's access token (refreshed when due)",
    tag: 'tokens',
    security: 'service',
    role: 'tokens',
    api: true,
    parameters: [LINK_ID],
    body: { schema: 'TokenRequest', required: false },
    answers: [{ ...json(200, 'An access token', 'AccessToken'), headers: NO_STORE }],
    errors: [
      'link_not_found',
      'no_grant',
      'scope_not_granted',
      'reauth_required',
      'refresh_not_possible',
      'link_revoked',
      'conflict',
      'provider_error',
      'invalid_token_response',
      'provider_unavailable',
      'provider_misconfigured',
      'key_service_unavailable',
      'audit_unavailable',
      'sealed_record_invalid',
    ],
  },

  // The proxy (proxy-routes.ts, on node:http before Express: bodies stream both ways)
  ...(['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] as const).map((method): RouteSpec => ({
    method,
    path: '/v1/links/{id}/proxy/{path}',
    operationId: `proxy${method.charAt(0)}${method.slice(1).toLowerCase()}`,
    summary: "Call the provider's API with the link's token, attached by linkvault",
    tag: 'proxy',
    security: 'service',
    role: 'proxy',
    api: true,
    servedBy: 'node-http',
    parameters: [
      LINK_ID,
      {
        name: 'path',
        in: 'path',
        description:
          "The API path under the provider's `api_base_url`, slashes included (`crm/v3/objects/contacts`); the query string is passed on as it is. A grant's proxy rules must allow the method and the normalised path.",
        schema: { type: 'string', minLength: 1 },
        required: true,
      },
    ],
    answers: [
      {
        status: 'default',
        description:
          "The provider's answer as it sent it (any status, any content type; hop-by-hop and cookie headers removed, no redirect followed). Told apart from linkvault's own problem answers by `linkvault-proxy-request-id`.",
        schema: 'ProxiedBody',
        contentType: '*/*',
        headers: {
          'linkvault-proxy-request-id': "linkvault's request id: present on every relayed answer",
          'Cache-Control': '`no-store`',
        },
      },
    ],
    // No grant at all answers proxy_not_allowed too (proxy.ts): the caller learns no more.
    errors: [
      'link_not_found',
      'proxy_not_allowed',
      'proxy_target_refused',
      'proxy_timeout',
      'reauth_required',
      'refresh_not_possible',
      'link_revoked',
      'conflict',
      'provider_error',
      'invalid_token_response',
      'provider_unavailable',
      'provider_misconfigured',
      'key_service_unavailable',
      'audit_unavailable',
      'sealed_record_invalid',
    ],
  })),

  // Revocation
  {
    method: 'DELETE',
    path: '/v1/links/{id}',
    operationId: 'revokeLink',
    summary: 'Revoke a link',
    tag: 'revocation',
    security: 'service',
    role: 'links:revoke',
    api: true,
    parameters: [LINK_ID],
    body: { schema: 'RevokeRequest', required: false },
    answers: [json(200, 'The revocation record', 'RevocationRecord')],
    errors: ['link_not_found', 'conflict', 'audit_unavailable'],
  },
  {
    method: 'GET',
    path: '/v1/links/{id}/revocation',
    operationId: 'getRevocation',
    summary: "A revoked link's revocation record",
    tag: 'revocation',
    security: 'service',
    role: 'links:read',
    api: true,
    parameters: [LINK_ID],
    answers: [json(200, 'The revocation record', 'RevocationRecord')],
    errors: ['link_not_found', 'revocation_not_found'],
  },
  {
    method: 'DELETE',
    path: '/v1/me/links/{id}',
    operationId: 'revokeMyLink',
    summary: "Revoke one of the session user's links",
    tag: 'revocation',
    security: 'session',
    api: true,
    parameters: [LINK_ID],
    body: { schema: 'RevokeRequest', required: false },
    answers: [json(200, 'The revocation record', 'RevocationRecord')],
    errors: ['link_not_found', 'conflict', 'audit_unavailable'],
  },
  {
    method: 'GET',
    path: '/v1/me/links/{id}/revocation',
    operationId: 'getMyRevocation',
    summary: "The revocation record of one of the session user's links",
    tag: 'revocation',
    security: 'session',
    api: true,
    parameters: [LINK_ID],
    answers: [json(200, 'The revocation record', 'RevocationRecord')],
    errors: ['link_not_found', 'revocation_not_found'],
  },
  {
    method: 'POST',
    path: '/v1/revocations',
    operationId: 'startBulkRevocation',
    summary: "Bulk revoke (a user's erasure is tenant_id + user_id)",
    tag: 'revocation',
    security: 'service',
    role: 'admin',
    api: true,
    body: { schema: 'BulkRevocationRequest', required: true },
    answers: [json(202, 'The job started', 'BulkRevocationStarted')],
    errors: ['audit_unavailable'],
  },
  {
    method: 'GET',
    path: '/v1/revocations/{job_id}',
    operationId: 'getBulkRevocation',
    summary: "A bulk revocation's progress",
    tag: 'revocation',
    security: 'service',
    role: 'admin',
    api: true,
    parameters: [pathParam('job_id', 'The job id (`rvj_…`).')],
    answers: [json(200, 'Progress', 'BulkRevocationStatus')],
    errors: ['job_not_found'],
  },

  // Audit
  {
    method: 'GET',
    path: '/v1/audit',
    operationId: 'listAuditEvents',
    summary: 'Retained audit events, filtered, oldest first after the cursor',
    tag: 'audit',
    security: 'service',
    role: 'admin',
    api: true,
    parameters: [
      queryParam('link_id', 'Only events of this link.'),
      queryParam('service_id', 'Only events of this service.'),
      queryParam('tenant_id', 'Only this tenant (required for a tenant-scoped service).'),
      queryParam('type', 'Only this event type (e.g. `token.released`).'),
      queryParam('after', 'The `next` cursor of the previous page.'),
      queryParam('limit', 'Events per page (1-500, default 100).', {
        type: 'string',
        pattern: '^[0-9]{1,3}$',
      }),
    ],
    answers: [json(200, 'A page of events', 'AuditPage')],
    errors: [],
  },
  {
    method: 'GET',
    path: '/v1/me/links/{id}/activity',
    operationId: 'getMyLinkActivity',
    summary: "What was done with one of the session user's links (retained events)",
    tag: 'audit',
    security: 'session',
    api: true,
    parameters: [LINK_ID],
    answers: [json(200, 'Who used the link, for what, how often and when', 'LinkActivity')],
    errors: ['link_not_found'],
  },

  // Grants
  {
    method: 'POST',
    path: '/v1/grants',
    operationId: 'createGrant',
    summary: 'Allow a service to obtain tokens',
    tag: 'grants',
    security: 'service',
    role: 'admin',
    api: true,
    body: { schema: 'GrantRequest', required: true },
    answers: [json(201, 'The grant', 'Grant')],
    errors: ['scope_exceeds_link', 'grant_never_matches', 'audit_unavailable'],
  },
  {
    method: 'GET',
    path: '/v1/grants',
    operationId: 'listGrants',
    summary: 'List grants',
    tag: 'grants',
    security: 'service',
    role: 'admin',
    api: true,
    parameters: [queryParam('service_id', 'Only grants for this service.')],
    answers: [json(200, 'Grants', 'GrantList')],
    errors: [],
  },
  {
    method: 'DELETE',
    path: '/v1/grants/{id}',
    operationId: 'deleteGrant',
    summary: 'Remove a grant',
    tag: 'grants',
    security: 'service',
    role: 'admin',
    api: true,
    parameters: [pathParam('id', 'The grant id.')],
    answers: [{ status: 204, description: 'Removed' }],
    errors: ['grant_not_found', 'audit_unavailable'],
  },

  // Webhook endpoints
  {
    method: 'POST',
    path: '/v1/webhook-endpoints',
    operationId: 'createWebhookEndpoint',
    summary: 'Register a webhook endpoint (its secret is in this answer only)',
    tag: 'webhooks',
    security: 'service',
    role: 'admin',
    api: true,
    body: { schema: 'WebhookEndpointRequest', required: true },
    answers: [json(201, 'The endpoint and its secret', 'CreatedWebhookEndpoint')],
    errors: ['invalid_webhook_url'],
  },
  {
    method: 'GET',
    path: '/v1/webhook-endpoints',
    operationId: 'listWebhookEndpoints',
    summary: 'List webhook endpoints (no secrets)',
    tag: 'webhooks',
    security: 'service',
    role: 'admin',
    api: true,
    answers: [json(200, 'Endpoints', 'WebhookEndpointList')],
    errors: [],
  },
  {
    method: 'DELETE',
    path: '/v1/webhook-endpoints/{id}',
    operationId: 'deleteWebhookEndpoint',
    summary: 'Remove a webhook endpoint',
    tag: 'webhooks',
    security: 'service',
    role: 'admin',
    api: true,
    parameters: [pathParam('id', 'The endpoint id.')],
    answers: [{ status: 204, description: 'Removed' }],
    errors: ['webhook_endpoint_not_found'],
  },
  {
    method: 'GET',
    path: '/v1/webhook-endpoints/{id}/deliveries',
    operationId: 'listWebhookDeliveries',
    summary: "An endpoint's recent deliveries",
    tag: 'webhooks',
    security: 'service',
    role: 'admin',
    api: true,
    parameters: [pathParam('id', 'The endpoint id.')],
    answers: [json(200, 'Deliveries', 'WebhookDeliveryList')],
    errors: ['webhook_endpoint_not_found'],
  },

  // Pages and the connect script (not part of the JSON API)
  ...(
    [
      ['/sdk/connect.js', 'getConnectScript', 'The connect script (latest)'],
      ['/sdk/connect.v1.js', 'getConnectScriptV1', 'The connect script, version 1'],
      ['/connect', 'getConnectPage', 'The hosted connect page'],
      ['/connect/result', 'getConnectResultPage', 'The hosted result page'],
      ['/manage', 'getManagePage', 'The hosted manage page'],
      ['/assets/{name}', 'getAsset', 'A page asset'],
      ['/', 'getLandingPage', 'The landing page (landing-routes.ts)'],
    ] as const
  ).map(([path, operationId, summary]): RouteSpec => ({
    method: 'GET',
    path,
    operationId,
    summary,
    tag: 'pages',
    security: 'none',
    api: false,
    answers: [{ status: 200, description: summary }],
    errors: [],
  })),

  {
    method: 'GET',
    path: '/favicon.ico',
    operationId: 'getFavicon',
    summary: 'No icon here (the pages name /assets/favicon.svg): 204, cached for a day',
    tag: 'pages',
    security: 'none',
    api: false,
    answers: [{ status: 204, description: 'No content' }],
    errors: [],
  },

  // The sandbox provider's pages (LINKVAULT_SANDBOX)
  ...(
    [
      ['GET', '/sandbox/interaction/{uid}', 'getSandboxInteraction'],
      ['POST', '/sandbox/interaction/{uid}/login', 'sandboxLogin'],
      ['POST', '/sandbox/interaction/{uid}/confirm', 'sandboxConfirm'],
      ['POST', '/sandbox/interaction/{uid}/abort', 'sandboxAbort'],
      ['GET', '/sandbox/privacy', 'getSandboxPrivacy'],
      ['GET', '/sandbox/connected-apps', 'getSandboxConnectedApps'],
      // Sandbox CRM's own API: the sandbox's access token (Bearer), not a linkvault credential.
      ['GET', '/sandbox/api/contacts', 'getSandboxContacts'],
    ] as const
  ).map(([method, path, operationId]): RouteSpec => ({
    method,
    path,
    operationId,
    summary: 'Sandbox provider page',
    tag: 'sandbox',
    security: 'none',
    api: false,
    only: 'sandbox',
    answers: [{ status: 200, description: 'A page' }],
    errors: [],
  })),
];

/** Errors every route of a kind can answer with, besides its own (RouteSpec.errors). */
export function routeErrors(route: RouteSpec): ErrorCode[] {
  const codes = new Set<ErrorCode>(['internal_error']);
  // Routes answered before Express (the proxy) pass bodies on unread: Express's body and input
  // checks never see them, and their size limits are the route's own.
  const express = route.servedBy !== 'node-http';
  // Malformed input (json-body.ts, well-formed-input.ts) is refused on every Express route.
  if (express) codes.add('invalid_request');
  if (route.method !== 'GET') {
    codes.add('payload_too_large');
    if (express) codes.add('unsupported_media_type');
  }
  if (route.security === 'service') {
    codes.add('unauthorized');
    if (route.role) codes.add('forbidden');
  }
  if (route.security === 'session') codes.add('session_expired');
  if (route.path.startsWith('/v1/') && route.path !== '/v1/providers')
    codes.add('store_unavailable');
  for (const code of route.errors) codes.add(code);
  return [...codes];
}

/** The Express spelling of a path template: `{id}` → `:id`. */
export function expressPath(template: string): string {
  return template.replace(/\{([A-Za-z_][A-Za-z0-9_]*)\}/g, ':$1');
}

/** The routes served with the given features (mounted on routers, or on node:http: `servedBy`). */
export function mountedRoutes(
  table: readonly RouteSpec[],
  features: { readonly sandbox: boolean },
): RouteSpec[] {
  return table.filter((r) => r.only === undefined || (r.only === 'sandbox' && features.sandbox));
}
